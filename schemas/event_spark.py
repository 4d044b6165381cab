"""The event contract as Spark column expressions, derived from :data:`schemas.event.FIELDS`.

No Python UDF: the record is parsed once into a VARIANT (``try_parse_json``), each field's JSON
type is read with ``schema_of_variant``, and every rule of :mod:`schemas.event` is a column
expression with the same reason text, checked in the same order. A parity test proves that this
and :class:`schemas.event.EventValidator` give the same verdict and reason on the same inputs.
"""

from __future__ import annotations

from typing import Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from schemas.event import (
    FIELDS, MAX_DEPTH, MAX_KEY_CHARS, MAX_NUMBER_CHARS, MIN_TS_MS, RFC3339, RULE_JSON, RULE_OBJECT, RULE_REQUIRED, RULE_TS_BEFORE,
    RULE_TS_FORMAT, RULE_UTF8, Field, reason, rule_enum, rule_max_len, rule_pattern, rule_range,
    rule_ts_future, rule_type,
)

PARSED_COLUMNS = tuple(f.name for f in FIELDS)


def _int(c: Column) -> Column:
    return c.try_cast("long")


def days_from_civil(y: Column, m: Column, d: Column) -> Column:
    """The same arithmetic as :func:`schemas.event.days_from_civil`, as a column."""
    y2 = y - F.when(m <= 2, 1).otherwise(0)
    era = F.floor(y2 / 400)
    yoe = y2 - era * 400
    mp = m + F.when(m > 2, -3).otherwise(9)
    doy = F.floor((mp * 153 + 2) / 5) + d - 1
    doe = yoe * 365 + F.floor(yoe / 4) - F.floor(yoe / 100) + doy
    return era * 146097 + doe - 719468


def days_in_month(y: Column, m: Column) -> Column:
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    return (F.when(m == 2, F.when(leap, 29).otherwise(28))
            .when(m.isin(4, 6, 9, 11), 30).otherwise(31))


def rfc3339_ms(s: Column) -> Column:
    """Epoch ms of an RFC 3339 string column, NULL where it is not one (truncated to ms).

    One regex decides the form; it fixes where the date, the time and the zone stand, so the
    parts are read by position (as :func:`schemas.event.parse_rfc3339_ms` does)."""
    matched = s.rlike(f"^{RFC3339}\\z")
    y, mo, d = _int(F.substring(s, 1, 4)), _int(F.substring(s, 6, 2)), _int(F.substring(s, 9, 2))
    hh, mi, ss = _int(F.substring(s, 12, 2)), _int(F.substring(s, 15, 2)), _int(F.substring(s, 18, 2))
    zulu = F.substring(s, -1, 1).isin("Z", "z")
    zone_len = F.when(zulu, 1).otherwise(6)
    frac = F.when(F.substring(s, 20, 1) == ".", s.substr(F.lit(21), F.length(s) - 20 - zone_len))
    frac_ms = _int(F.rpad(F.coalesce(frac, F.lit("")), 3, "0"))
    sign = F.when(F.substring(s, -6, 1) == "-", -1).otherwise(1)
    oh = F.when(zulu, 0).otherwise(_int(F.substring(s, -5, 2)))
    om = F.when(zulu, 0).otherwise(_int(F.substring(s, -2, 2)))
    valid = (matched & mo.between(1, 12) & (d >= 1) & (d <= days_in_month(y, mo)) & (hh <= 23)
             & (mi <= 59) & (ss <= 59) & (oh <= 23) & (om <= 59))
    seconds = days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss
    ms = seconds * 1000 + frac_ms - sign * (oh * 60 + om) * 60000
    return F.when(valid, ms.cast("long"))


# The JSON limits of schemas.event, read from the text with regular expressions. Java's regex
# engine recurses once per iteration of a repeated group (such as (?:[^"\\]|\\.)*) and throws
# StackOverflowError on long inputs, which would fail the task and stop the stream: only
# single-character-class repetitions and top-level alternations are used here.
_OPEN = ("{", "[")
_WS = "[ \\t\\n\\r]"  # JSON's whitespace, the only one either parser accepts
_PAIR = "\\\\u[dD][89abAB][0-9a-fA-F]{2}\\\\u[dD][c-fC-F][0-9a-fA-F]{2}"  # a surrogate pair
# Every escape, read left to right (so that the 'u' after an escaped backslash is no escape).
_ESCAPE = f"{_PAIR}|\\\\u[0-9a-fA-F]{{4}}|\\\\[\\s\\S]"
# The same tokens with a surrogate escape outside a pair in group 1.
_LONE_SURROGATE = f"{_PAIR}|(\\\\u[dD][89a-fA-F][0-9a-fA-F]{{2}})|\\\\[\\s\\S]"
# Once every escape is one character, a string is "[^"]*" and its length is that of the decoded
# string (Java's regex counts code points, as len() does). The skeleton: each string becomes "",
# except a key longer than MAX_KEY_CHARS, which becomes """ (two strings are never adjacent in
# JSON); brackets, numbers and literals are left.
_STRINGS = (f'"[^"]{{0,{MAX_KEY_CHARS}}}"|"[^"]*("{_WS}*:)|"[^"]*"', '""$1')
# The structure: each string one '"', whitespace dropped, every other run of characters that are
# not brackets reduced to its first one.
_STRUCTURE = (f'(")[^"]*"|{_WS}+|([^\\[\\]{{}}" \\t\\n\\r])[^\\[\\]{{}}" \\t\\n\\r]*', "$1$2")
# A container holding no container (in the structure): replacing every one by a character takes
# one level off the whole structure, in one linear pass. A value nested at most _LEAF_PASSES deep
# is then one character, anything after it more characters; deeper, a running depth decides.
# (Not all MAX_DEPTH levels this way: that much generated code in the stage cost every event
# about twice as much, past what the JIT compiles.)
_LEAF = ("\\{[^\\[\\]{}]*\\}|\\[[^\\[\\]{}]*\\]", "x")
_LEAF_PASSES = 4
# A number literal longer than MAX_NUMBER_CHARS (the look-behind keeps the search linear).
_LONG_NUMBER = f"(?<![-+.0-9eE])[-+.0-9eE]{{{MAX_NUMBER_CHARS + 1}}}"
# A digit followed by an 'e' (an exponent, the only way a number this short overflows a double)
# or by MAX_NUMBER_CHARS - 1 more number characters (which any longer number has, '-' or not).
# Finding none rules both out; finding one sends the text to the exact checks. (Half the cost
# of searching for _LONG_NUMBER itself.)
_NUMBERISH = f"[0-9](?:[eE]|[-+.0-9eE]{{{MAX_NUMBER_CHARS - 1}}})"
_EXP_NUMBER = "-?[0-9]+(?:[.][0-9]+)?[eE][-+]?[0-9]+"
_SCALAR = (f'^{_WS}*(?:""|-?(?:0|[1-9][0-9]*)(?:[.][0-9]+)?(?:[eE][-+]?[0-9]+)?'
           f"|true|false|null){_WS}*\\z")
# One container holding no bracket (not even in a string), only whitespace after it.
_FLAT = f"^{_WS}*[{{\\[][^\\[\\]{{}}]*[}}\\]]{_WS}*\\z"


def _first(s: Column) -> Column:
    """The first character of ``s`` that is not JSON whitespace."""
    return F.substring(F.ltrim(s, F.lit(" \t\n\r")), 1, 1)


def _depth_ok(reduced: Column, max_depth: int) -> Column:
    """Whether a reduced structure that opens with a bracket is one value nested at most
    ``max_depth`` deep: a running depth whose maximum is at most ``max_depth``, back at 0
    exactly once, at its last character (anything after is trailing text)."""
    start = F.struct(F.lit(0).alias("d"), F.lit(0).alias("m"), F.lit(0).alias("z"))

    def step(acc: Column, c: Column) -> Column:
        d = acc["d"] + F.when(c.isin("{", "["), 1).when(c.isin("}", "]"), -1).otherwise(0)
        return F.struct(d.alias("d"), F.greatest(acc["m"], d).alias("m"),
                        (acc["z"] + F.when(d == 0, 1).otherwise(0)).alias("z"))

    end = F.aggregate(F.split(reduced, ""), start, step)
    return (end["d"] == 0) & (end["z"] == 1) & (end["m"] <= max_depth)


def _json_columns(raw: Column) -> list[dict[str, Column]]:
    """Stages of columns ending in ``_json`` (the text), ``_ok_utf8`` and ``_v`` (the VARIANT,
    NULL unless the text is one JSON value within the limits of :mod:`schemas.event`).

    ``try_parse_json`` decides the syntax of the first value in the text, but ignores whatever
    follows it ('{"a":1} x'); the rest is read from the text, with cheap conditions first:

    * ``_quick``, the ordinary event: flat (one container holding no bracket and nothing after
      it), too short for a long key (MAX_KEY_CHARS + 2 characters at most) and no number
      character run or exponent (``_n``). Nothing more to check.
    * otherwise ``_e`` (every escape one character, when there is an escape); ``_skel`` where a
      long key, a long or overflowing number or a top-level scalar is possible; ``_r``, the
      structure of a container with levels taken off until one character is left.

    Lone surrogates (``_lone``) are looked for only where a surrogate escape is. Each stage is
    its own projection so that each expensive expression runs once per record."""
    text, v0 = F.col("_json"), F.col("_v0")
    short, n, e, skel, r = (F.col(c) for c in ("_short", "_n", "_e", "_skel", "_r"))
    lone = F.array_join(F.regexp_extract_all(text, F.lit(_LONE_SURROGATE), 1), "") != ""
    container = _first(e).isin(*_OPEN)
    more = F.when((F.length(r) > 1) & F.substring(r, 1, 1).isin(*_OPEN),
                  F.regexp_replace(r, *_LEAF)).otherwise(r)
    exponents = F.regexp_extract_all(skel, F.lit(_EXP_NUMBER), 0).try_cast("array<double>")
    infinite = F.coalesce(F.array_contains(exponents, float("inf"))
                          | F.array_contains(exponents, float("-inf")), F.lit(False))
    numbers_ok = (~n | ~((F.length(skel) > MAX_NUMBER_CHARS) & skel.rlike(_LONG_NUMBER))
                  & ~(skel.rlike("[0-9][eE]") & infinite))
    keys_ok = short | (F.instr(skel, '"""') == 0)
    shape = (F.when(r.isNull(), skel.rlike(_SCALAR))  # a scalar: only whitespace around it
             .when(F.length(r) == 1, True)
             .when(F.substring(r, 1, 1).isin(*_OPEN), _depth_ok(r, MAX_DEPTH - _LEAF_PASSES))
             .otherwise(False))  # text after the value
    return [
        {"_json": raw.cast("string")},
        {"_ok_utf8": F.is_valid_utf8(text), "_v0": F.try_parse_json(text)},
        {"_short": F.length(text) <= MAX_KEY_CHARS + 2,
         "_n": v0.isNotNull() & text.rlike(_NUMBERISH),
         "_lone": (v0.isNotNull() & (F.instr(text, "\\u") > 0)
                   & text.rlike("\\\\u[dD][89a-fA-F]") & lone)},
        {"_quick": v0.isNotNull() & short & ~n & text.rlike(_FLAT)},
        {"_e": F.when(v0.isNull() | F.col("_quick"), None)
                .when(F.instr(text, "\\") > 0, F.regexp_replace(text, _ESCAPE, "_"))
                .otherwise(text)},
        {"_skel": F.when(~short | n | ~container, F.regexp_replace(e, *_STRINGS)),
         "_r": F.when(container, F.regexp_replace(F.regexp_replace(e, *_STRUCTURE), *_LEAF))},
        *[{"_r": more} for _ in range(_LEAF_PASSES - 1)],
        {"_v": F.when(v0.isNotNull() & ~F.col("_lone")
                      & (F.col("_quick") | keys_ok & numbers_ok & shape), v0)},
    ]


def _field_stages() -> list[dict[str, Column]]:
    """Columns per field: its JSON type (``_t_``) and its text (``_s_``).

    The VARIANT gives each field's JSON type: the object is cast once to a struct of small
    variants (one pass over the object, not one lookup per field). The text is read from the same
    small variant as a string — a JSON string's unescaped value, an integer's digits — so the
    record is parsed once (a second ``from_json`` pass cost about a quarter of the validation);
    it is only read where the type says what the text is."""
    struct = "struct<" + ",".join(f"`{f.name}`: variant" for f in FIELDS) + ">"
    first = {"_f": F.try_variant_get(F.col("_v"), "$", struct)}
    second: dict[str, Column] = {}
    for f in FIELDS:
        field = F.col("_f")[f.name]
        second[f"_t_{f.name}"] = F.schema_of_variant(field)
        second[f"_s_{f.name}"] = F.try_variant_get(field, "$", "string")
    return [first, second]


def _integer(f: Field) -> Column:
    """A field's value where its JSON type is a 64-bit integer (its text is then its digits)."""
    return F.when(F.col(f"_t_{f.name}") == "BIGINT", F.col(f"_s_{f.name}").try_cast("long"))


def _rules(f: Field, clock_ms: Column, types: tuple[str, ...],
           max_future_ms: int) -> tuple[list[tuple[Column, str]], Column]:
    """(condition, reason) pairs in the validator's order, and the parsed value column."""
    jtype = F.col(f"_t_{f.name}")
    missing = jtype.isNull() | (jtype == "VOID")
    rules: list[tuple[Column, str]] = []
    if f.required:
        rules.append((missing, reason(f.name, RULE_REQUIRED)))
    present = ~missing
    if f.kind == "string":
        value = F.col(f"_s_{f.name}")
        rules.append((present & (jtype != "STRING"), reason(f.name, rule_type(f))))
        if f.pattern:
            regex = f"^{f.pattern}{{1,{f.max_len}}}\\z"
            rules.append((present & ~value.rlike(regex), reason(f.name, rule_pattern(f))))
        else:
            rules.append((present & (F.char_length(value) > f.max_len),
                          reason(f.name, rule_max_len(f))))
        if f.enum:
            rules.append((present & ~value.isin(*types), reason(f.name, rule_enum(types))))
        return rules, value
    if f.kind == "integer":
        value = _integer(f)
        rules.append((present & (jtype != "BIGINT"), reason(f.name, rule_type(f))))
        rules.append((present & ~value.between(f.minimum, f.maximum), reason(f.name, rule_range(f))))
        if f.default is not None:
            value = F.coalesce(value, F.lit(f.default).cast("long"))
        return rules, value
    # timestamp: its epoch ms were computed into _ms_<name> by the previous stage
    value = F.col(f"_ms_{f.name}")
    rules.append((present & value.isNull(), reason(f.name, RULE_TS_FORMAT)))
    rules.append((present & (value < MIN_TS_MS), reason(f.name, RULE_TS_BEFORE)))
    rules.append((present & (value - clock_ms > max_future_ms),
                  reason(f.name, rule_ts_future(max_future_ms))))
    return rules, value


def validate_events(df: DataFrame, value_col: str = "value", clock_col: str = "timestamp",
                    event_types: Iterable[str] = ("view", "like", "dislike", "share", "comment"),
                    max_future_ms: int = 3_600_000) -> DataFrame:
    """``df`` with ``error`` (the first broken rule, NULL when valid), ``json`` (the record as
    text) and one column per contract field added.

    ``clock_col`` is the receiving clock: the Kafka record's timestamp on the stream (a
    TimestampType), or epoch milliseconds (a LongType). The work is split into projections so
    that each expensive expression (the JSON parse, each field's lookup) is computed once."""
    types = tuple(event_types)
    clock = F.col(clock_col)
    clock_ms = F.unix_millis(clock) if dict(df.dtypes)[clock_col] == "timestamp" else clock
    keep = df.columns
    staged = df
    for stage in _json_columns(F.col(value_col)):
        staged = staged.withColumns(stage)
    for stage in _field_stages():
        staged = staged.withColumns(stage)
    staged = staged.withColumns({
        f"_ms_{f.name}": F.when(F.col(f"_t_{f.name}") == "BIGINT", _integer(f))
                          .when(F.col(f"_t_{f.name}") == "STRING", rfc3339_ms(F.col(f"_s_{f.name}")))
        for f in FIELDS if f.kind == "timestamp"})
    rules: list[tuple[Column, str]] = [
        (~F.col("_ok_utf8"), reason("event", RULE_UTF8)),
        (F.col("_v").isNull(), reason("event", RULE_JSON)),
        # _v is one valid JSON value here, so it is an object exactly when it opens with '{'.
        (_first(F.col("_json")) != "{", reason("event", RULE_OBJECT)),
    ]
    values: dict[str, Column] = {}
    for f in FIELDS:
        field_rules, value = _rules(f, clock_ms, types, max_future_ms)
        rules.extend(field_rules)
        values[f.name] = value
    error = F.coalesce(*[F.when(cond, F.lit(msg)) for cond, msg in rules])
    return staged.select(*keep, error.alias("error"), F.col("_json").alias("json"),
                         *[c.alias(name) for name, c in values.items()])
