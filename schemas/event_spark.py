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
    FIELDS, MIN_TS_MS, RFC3339, RULE_JSON, RULE_OBJECT, RULE_REQUIRED, RULE_TS_BEFORE,
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


# Stands after the record in the wrapped text; see _json_columns.
_SENTINEL = "tally-end"


def _json_columns(raw: Column) -> list[dict[str, Column]]:
    """Two stages of columns: ``_json`` (the text), ``_ok_utf8`` and ``_w`` (the wrapped parse),
    then ``_v`` (the VARIANT, NULL unless the whole text is one JSON value).

    ``try_parse_json`` ignores whatever follows the first complete value ('{"a":1} x'), which
    Python's json rejects. Parsing ``[<text>,"<sentinel>"]`` instead and requiring exactly two
    elements with the sentinel second accepts exactly the texts that are one JSON value. The
    parse is its own column so that it runs once per record."""
    text = raw.cast("string")
    w = F.col("_w")
    whole = (w.isNotNull()
             & F.variant_get(w, "$[2]", "variant").isNull()
             & (F.try_variant_get(w, "$[1]", "string") == _SENTINEL))
    return [
        {"_json": text, "_ok_utf8": F.is_valid_utf8(text),
         "_w": F.try_parse_json(F.concat(F.lit("["), text, F.lit(f',"{_SENTINEL}"]')))},
        {"_v": F.when(whole, F.variant_get(w, "$[0]", "variant"))},
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
        (~F.col("_json").rlike("^[ \\t\\r\\n]*[{]"), reason("event", RULE_OBJECT)),
    ]
    values: dict[str, Column] = {}
    for f in FIELDS:
        field_rules, value = _rules(f, clock_ms, types, max_future_ms)
        rules.extend(field_rules)
        values[f.name] = value
    error = F.coalesce(*[F.when(cond, F.lit(msg)) for cond, msg in rules])
    return staged.select(*keep, error.alias("error"), F.col("_json").alias("json"),
                         *[c.alias(name) for name, c in values.items()])
