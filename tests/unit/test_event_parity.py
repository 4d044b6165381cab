"""Parity: the Spark column-expression form of the contract gives the same verdict, the same
reason and the same parsed values as the Python validator, on the same inputs; and HTTP ingest
gives the same verdict per event, and sends only what the stream then accepts as it was
validated (acknowledged means counted).

The JSON limits (schemas.event: MAX_NUMBER_CHARS, MAX_KEY_CHARS, MAX_DEPTH, no lone surrogate,
no duplicate key, nothing after the value) are probed at every limit and one either side, in a
required, an optional and an extra field, with fixed cases and with hypothesis."""

from __future__ import annotations

import datetime as dt
import json
import random
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.event import (FIELD_NAMES, MAX_BODY_DEPTH, MAX_DEPTH, MAX_KEY_CHARS,
                           MAX_NUMBER_CHARS, EventValidator, loads_batch)
from schemas.event_jvm import validate_events_jvm
from schemas.event_spark import validate_events
from tally.devstack.generator import INVALID_KINDS
from tests.unit.bad_events import BAD, CLOCK, GOOD, GOOD_CASES

V = EventValidator()
NOT_JSON = "event: not valid JSON"


def _fuzz_cases(n: int, seed: int = 11) -> list[bytes]:
    """Random single-field mutations of a good event: types, lengths, dates, edge integers."""
    rng = random.Random(seed)
    values = [None, True, False, 0, -1, 1, 2**31, 2**63 - 1, -(2**63), 2**64, 1.0, 0.5, "", "x",
              "a" * 64, "a" * 65, "é", "2026-11-17T10:15:00Z", "2000-01-01T00:00:00.000+00:00",
              "2026-13-01T00:00:00Z", "2025-02-29T00:00:00Z", "2028-02-29T23:59:59.999-23:59",
              "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", [], {}, CLOCK, CLOCK + 3_600_000,
              CLOCK + 3_600_001, 946_684_800_000, 946_684_799_999, "view", "like", "LIKE",
              "a:b.c-d_e", "a/b", " view", "share\n"]
    out = []
    for _ in range(n):
        e = dict(GOOD)
        for _ in range(rng.randint(1, 2)):
            field = rng.choice(FIELD_NAMES + ("extra",))
            if rng.random() < 0.15:
                e.pop(field, None)
            else:
                e[field] = rng.choice(values)
        out.append(json.dumps(e, ensure_ascii=rng.random() < 0.5).encode("utf-8"))
    return out


# The three ways of answering ----------------------------------------------------------------

def spark_verdicts(spark, raws: list[bytes]) -> list[tuple]:
    """(reason, contract fields) per record, all records in one DataFrame, from both Spark forms
    of the contract — the column expressions and the JVM validator (schemas.event_jvm) — which
    must agree on every record (and on the text they give the archive, for the valid ones)."""
    clock = dt.datetime.fromtimestamp(CLOCK / 1000, dt.timezone.utc)
    df = spark.createDataFrame([(i, bytearray(r), clock) for i, r in enumerate(raws)],
                               "i int, value binary, timestamp timestamp")
    out = []
    for validate in (validate_events, validate_events_jvm):
        rows = validate(df).orderBy("i").collect()
        assert len(rows) == len(raws)
        out.append([(r["error"], tuple(r[f] for f in FIELD_NAMES) if r["error"] is None else None,
                     r["json"] if r["error"] is None else None) for r in rows])
    expressions, jvm = out
    differ = [(raw[:150], e, j) for raw, e, j in zip(raws, expressions, jvm) if e != j]
    assert not differ, f"{len(differ)} records where the JVM validator differs, first: {differ[:3]}"
    return [v[:2] for v in expressions]


def python_verdict(raw: bytes) -> tuple:
    error = V.check_raw(raw, CLOCK)
    if error is not None:
        return error, None
    event = V.validate_raw(raw, CLOCK)
    return None, tuple(event[f] for f in FIELD_NAMES)


class FakeProducer:
    def __init__(self):
        self.sent: list[tuple[bytes, bytes]] = []

    def send_raw(self, value, key):
        self.sent.append((key, value))

    def flush(self, timeout_s=None):
        return len(self.sent)


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    """The Flask app with a fake producer, its clock at CLOCK."""
    from schemas.config import load_config
    from serving_layer import ingest
    from serving_layer.app import create_app

    cfg = load_config(environ={}, overrides={"state_dir": str(tmp_path_factory.mktemp("ingest"))})
    app = create_app(cfg)
    res = app.extensions["tally"]["resources"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ingest, "time", types.SimpleNamespace(time=lambda: CLOCK / 1000))
        yield app.test_client(), res


def http_verdict(http, raw: bytes) -> tuple[str | None, bytes | None]:
    """The ingest's verdict on ``raw`` as a one-event body (an array is sent inside another, so
    that it is one event), and what it sent for it."""
    client, res = http
    try:
        if loads_batch(raw.decode("utf-8")).array:
            raw = b"[" + raw + b"]"
    except ValueError:  # not UTF-8 or not JSON: sent as it is, refused for the body
        pass
    res._producer = producer = FakeProducer()
    r = client.post("/v1/events", data=raw, content_type="application/json")
    body = r.get_json()
    if r.status_code == 202:
        assert body["accepted"] == 1 and body["rejected"] == [] and len(producer.sent) == 1
        return None, producer.sent[0][1]
    assert r.status_code == 400, (r.status_code, body)
    assert producer.sent == []
    if "rejected" in body:
        assert [x["index"] for x in body["rejected"]] == [0]
        return body["rejected"][0]["error"], None
    assert body["error"].startswith(("body: not valid JSON", "body: not valid UTF-8")), body
    return body["error"].replace("body:", "event:").split(" (")[0], None


def assert_parity(spark, http, raws: list[bytes]) -> list[tuple]:
    """Spark == Python == HTTP on every raw, and every event HTTP sent is valid on the stream
    with the values Python validated. Returns the Python verdicts."""
    pys = [python_verdict(r) for r in raws]
    https = [http_verdict(http, r) for r in raws]
    sent = [s for _, s in https if s is not None]
    sparks = spark_verdicts(spark, raws + sent)
    mismatches = []
    for raw, py, sp, (h, _) in zip(raws, pys, sparks, https):
        if not (py == sp and py[0] == h):
            mismatches.append((raw[:150], len(raw), "python", py, "spark", sp, "http", h))
    assert not mismatches, f"{len(mismatches)} disagreements, first: {mismatches[:3]}"
    accepted = [py for py, (h, s) in zip(pys, https) if s is not None]
    for py, raw, read_back in zip(accepted, sent, sparks[len(raws):]):
        assert read_back == py, ("acknowledged but not counted as validated", raw[:150])
    return pys


# Building event texts ------------------------------------------------------------------------

BASE = [("event_id", '"e-1"'), ("video_id", '"vid-1"'), ("event_type", '"view"'),
        ("ts", '"2026-11-17T10:15:00.123Z"'), ("watch_ms", "1500"), ("user_id", '"u1"')]


def event(*changes: tuple[str, str | None], key_text: str | None = None, tail: str = "") -> bytes:
    """The text of a good event with fields set to raw JSON text (None drops one; a new name is
    an extra field), one more member with the raw key ``key_text``, and ``tail`` after it."""
    pairs = dict(BASE)
    for name, value in changes:
        if value is None:
            pairs.pop(name, None)
        else:
            pairs[name] = value
    members = [f'"{k}":{v}' for k, v in pairs.items()]
    if key_text is not None:
        members.append(f"{key_text}:1")
    return ("{" + ",".join(members) + "}" + tail).encode("utf-8")


def placed(value: str) -> list[bytes]:
    """``value`` (raw JSON text) in a required, an optional and an extra field, nested in an
    extra field, and as the whole record."""
    return [event(("event_id", value)), event(("ts", value)), event(("user_id", value)),
            event(("watch_ms", value)), event(("x", value)),
            event(("x", '{"a":[0,' + value + "]}")), value.encode("utf-8")]


def keyed(key_text: str) -> list[bytes]:
    """A raw key at the top of the event, nested in an extra field, and in an array."""
    return [event(key_text=key_text), event(("x", "{" + key_text + ':"v"}')),
            event(("x", "[{" + key_text + ":null}]"))]


def nested(depth: int, inner: str = "1", kind: str = "mixed") -> str:
    """A value nested ``depth`` deep (objects and arrays alternating, or one kind only)."""
    out = inner
    for i in range(depth):
        if kind == "array" or (kind == "mixed" and i % 2):
            out = "[" + out + "]"
        else:
            out = '{"k":' + out + "}"
    return out


def number(chars: int, kind: str = "int") -> str:
    """A JSON number literal of exactly ``chars`` characters."""
    if kind == "int":
        return "1" + "2" * (chars - 1)
    if kind == "neg":
        return "-" + "9" * (chars - 1)
    if kind == "frac":
        return "0." + "5" * (chars - 2)
    return "1." + "0" * (chars - 6) + "e+10"  # kind == "exp"


# Fixed cases: every reproduced disagreement and every limit -1/0/+1 ---------------------------

def limit_cases() -> list[bytes]:
    cases: list[bytes] = []
    # Numbers: 99/100/101 characters; integers of 1,001-4,301 digits (Python's int-string limit
    # is 4,300); numbers beyond a double.
    for n in (MAX_NUMBER_CHARS - 1, MAX_NUMBER_CHARS, MAX_NUMBER_CHARS + 1):
        for kind in ("int", "neg", "frac", "exp"):
            cases += placed(number(n, kind))
    for digits in (1001, 4300, 4301, 5000):
        cases += [event(("watch_ms", "7" * digits)), event(("x", "7" * digits)),
                  event(("x", "-" + "7" * digits))]
    for literal in ("1e400", "-1e400", "1e-400", "-1e-400", "-0", "0.0e0", "1E+2", "1e2",
                    "-0.0", "1.0", "1" * 39, "1" * 40, "9223372036854775808", "4.9e-324",
                    "1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308",
                    "1e99999999999999999999", "1e-99999999999", "1e" + "0" * 97 + "1", "01",
                    "1.", ".5", "+1", "1e", "0x10", "NaN", "Infinity", "-Infinity"):
        cases += placed(literal)
    # Keys: 255/256/257 decoded characters, plain, with escapes, astral characters and
    # surrogate-pair escapes; keys of 50,000+ characters (Jackson's own limit).
    units = ["k", "\\n", "\\u00e9", "é", "\U0001F600", "\\ud83d\\ude00", "\\\\", '\\"', "\\/"]
    for n in (MAX_KEY_CHARS - 1, MAX_KEY_CHARS, MAX_KEY_CHARS + 1):
        for unit in units:
            cases += keyed('"' + unit * n + '"')
        cases += keyed('"' + "".join(units[i % len(units)] for i in range(n)) + '"')
        cases.append(event(("x", '"' + "s" * n + '"')))  # a long string value is fine
        cases.append(event(("x", '["' + "s" * n + '" : 1]')))  # not a key: not JSON either
    for n in (50_000, 50_001, 60_000):
        cases += keyed('"' + "k" * n + '"')
    cases += [event(key_text='""'), event(key_text='"event\\u005fid"'),  # duplicate, escaped
              event(key_text='"user_id"'), event(("x", '{"a":1,"\\u0061":2}')),
              event(("x", '{"\\ud83d\\ude00":1,"\U0001F600":2}')),
              event(key_text='"a" '), event(key_text='"' + "k" * 300 + '" \t\n')]
    # Depth: 63/64/65 (a top-level object is depth 1), and 930-1000 around Python's recursion
    # limit and Jackson's 1,000.
    for d in (MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1):
        for kind in ("mixed", "array", "object"):
            cases.append(event(("x", nested(d - 1, kind=kind))))  # the event itself is depth 1
            cases.append(nested(d, kind=kind).encode())
        cases.append(event(("user_id", nested(d - 1))))
        cases.append(event(("event_id", nested(d - 1))))
        cases.append(("[" * d + "]" * d).encode())
        cases.append(event(("x", "[" * (d - 1) + "]" * (d - 1))))
        cases.append(event(("x", nested(d - 1, '"\\ud83d\\ude00 {[\\"["'))))  # brackets in strings
    for d in (499, 500, 501, 930, 931, 998, 999, 1000, 1001, 5000):
        cases += [event(("x", nested(d))), event(("x", "[" * d + "]" * d)),
                  ("[" * d + "]" * d).encode()]
    # Surrogates: lone high/low, reversed, paired, escaped backslash before "u", a high escape
    # followed by a non-low one.
    for s in ("\\ud800", "\\udfff", "\\uDBFF", "\\udc00\\ud800", "\\ud83d\\ude00",
              "\\uD83D\\uDE00", "\\ud83d\\uDE00", "a\\ud800b", "\\ud800\\u0041", "\\ud800\\\\",
              "\\\\ud800", "\\\\\\ud800", "\\ud800\\ud800\\udc00", "\\ud83d\\ude00\\udc00",
              "\\u0000", "\\/", "\U0001F600", "\ufffe\uffff"):
        cases += placed('"' + s + '"')
        cases += keyed('"' + s + '"')
    # Trailing text after the value, and the old wrapper attack: a record that closes the
    # [<text>,"tally-end"] wrapping itself.
    good = event()
    for tail in (" x", "x", " {}", "{}", "[]", ",1", "]", "}", '"', ' "a"', "\x00", "//", "/* */",
                 ' ,"tally-end"]', ',"tally-end"]', ',"tally-end"] x', "  \t\r\n", "\x0b", "\x0c",
                 "\u00a0", "\ufeff", "1", "null"):
        cases.append(good + tail.encode())
    body = good[:-1].decode()
    for tail in (',"tally-end"]', ',"tally-end"] ', ',"tally-end"]x', ',"tally-end"],"tally-end"]'):
        cases.append((body + "}" + tail).encode())
        cases.append((body + ',"x":{}}' + tail).encode())
    cases += [b'"x" "y"', b"1 2", b"[1] [2]", b"true false", b"nul", b"[]", b"{}", b"[[]]",
              b'"' + b"s" * 300 + b'" :', b" 42 ", b"-", b"\xef\xbb\xbf" + good]
    # Other syntax corners: control characters, whitespace JSON does not have, BOM, escapes.
    for value in ('"a\x01b"', '"a\x1fb"', '"a\x7fb"', '"a\tb"', '"a\nb"', '"\\x"', '"\\U00e9"',
                  '"\\u00G9"', "'a'", "tru", "True", "[1,]", '{"a":1,}', "[1 2]", '{"a" 1}'):
        cases += placed(value)
    for ws in ("\x0b", "\x0c", "\u00a0", "\u2028"):
        cases.append(("{" + ws + event()[1:].decode()).encode())
    # What the stream's quick path for ordinary events (flat, short, no exponent, no long run of
    # number characters) must send on to the exact checks rather than decide: number characters
    # in strings, an 'e' after a digit, whitespace around the value.
    for n in (98, 99, 100, 101, 150):
        cases += [event(("x", '"' + "7" * n + '"')), event(("x", '"-' + "7" * n + 'e"')),
                  event(("x", '"1e' + "5" * n + '"')), event(("user_id", '"' + "1" * n + '"'))]
    cases += [event(("x", '"1e5"')), event(("x", "1e5")), event(("x", "1e309")),
              event(("x", "-1E+309")), event(("x", '"x"'), ("y", "12E3")), b" \n" + event(),
              event() + b"\n", event(("x", "[]")), event(("x", "{}")), event(("x", '"{"')),
              b"[" + event() + b"]", event(("x", "9" * 99 + "e0"))]
    # Strings and escapes of a megabyte: no StackOverflowError in the regular expressions.
    mb = 1_000_000  # within serve.max_body_bytes (1 MiB), so that HTTP reads them too
    for s in ("\\\\" * (mb // 2), '\\"' * (mb // 2), "\\u0041" * (mb // 6),
              "\\ud83d\\ude00" * (mb // 12), "a\\nb" * (mb // 4), "a" * mb):
        cases.append(event(("x", '"' + s + '"')))
    cases.append(event(("x", "[" + ",".join(["[{}]"] * (mb // 5)) + "]")))
    return cases


def test_spark_and_python_agree(spark, http):
    from tally.devstack.generator import Traffic, GeneratorOptions

    raws = [raw for _, raw, _ in BAD] + [raw for _, raw, _ in GOOD_CASES] + _fuzz_cases(400)
    base = Traffic(GeneratorOptions(events=50, videos=5, start="2026-11-10", seed=3),
                   ("view", "like", "dislike", "share", "comment"), 600_000)
    raws += [kind[1](base.event(i)) for i, kind in enumerate(INVALID_KINDS)]
    raws += [json.dumps(base.event(i)).encode() for i in range(50)]
    verdicts = assert_parity(spark, http, raws)
    # The run must exercise both verdicts in bulk, or it proves little.
    n_bad = sum(1 for error, _ in verdicts if error is not None)
    assert 80 < n_bad < len(raws) - 60


def test_json_limits_agree(spark, http):
    raws = limit_cases()
    verdicts = assert_parity(spark, http, raws)
    errors = [e for e, _ in verdicts]
    # Both verdicts in bulk, and the limits rejected for what they are.
    assert 300 < errors.count(NOT_JSON) < len(raws) - 150
    assert errors.count(None) > 60


def test_reproduced_disagreements_are_rejected(spark, http):
    """The cases that used to be answered 202 over HTTP and dead-lettered (or counted) by the
    stream, or decided differently by the two parsers."""
    good = event()
    attack = good[:-1] + b'},"tally-end"] and then anything'
    raws = [event(("watch_ms", "7" * 1001)), event(("x", "7" * 4300)), event(("x", "7" * 4301)),
            event(key_text='"' + "k" * 50_001 + '"'), event(("user_id", '"\\ud800"')),
            event(("x", '"\\ud800"')), attack, good[:-1] + b'},"tally-end"]',
            event(("x", nested(931))), event(("x", nested(998))), event(("x", nested(65)))]
    sparks = spark_verdicts(spark, raws)
    for raw, sp in zip(raws, sparks):
        assert python_verdict(raw) == (NOT_JSON, None) == sp, raw[:80]
        assert http_verdict(http, raw) == (NOT_JSON, None), raw[:80]
    assert spark_verdicts(spark, [good])[0][0] is None


# Property-based: random texts at every limit -1/0/+1 -------------------------------------------

_UNIT = st.sampled_from(["k", "Z", "0", " ", "\\n", "\\t", "\\u00e9", "\\u0041", "é", "€",
                         "\U0001F600", "\\ud83d\\ude00", "\\uDBFF\\uDFFF", "\\\\", '\\"', "\\/",
                         "{", "]", ":", ","])
_SURROGATE = st.sampled_from(["\\ud800", "\\udc00", "\\uDFFF", "\\udc00\\ud800",
                              "\\ud800\\u0041", "\\\\ud800", "\\ud83d\\ude00"])


def _string(n: int, surrogates: bool = False) -> st.SearchStrategy[str]:
    """A JSON string (its text) of exactly ``n`` decoded characters when no surrogate escape
    is mixed in: a few units drawn, repeated to the length (so that an example stays small)."""
    unit = st.one_of(_UNIT, _SURROGATE) if surrogates else _UNIT
    cycle = st.lists(unit, min_size=1, max_size=4)
    return cycle.map(lambda u: '"' + "".join(u[i % len(u)] for i in range(n)) + '"')


@st.composite
def _number(draw) -> str:
    """A number literal of MAX_NUMBER_CHARS -1/0/+1 characters, or a short one near the ends
    of a double."""
    if draw(st.booleans()):
        mantissa = draw(st.sampled_from(["1.7976931348623157", "1.7976931348623158",
                                         "1.797693134862315807937", "1.7976931348623159", "4.9",
                                         "2.4703282292062327", "9.9", "1"]))
        exp = draw(st.sampled_from(["e308", "e-324", "E+308", "e309", "e-325", "e400", "e0"]))
        return draw(st.sampled_from(["", "-"])) + mantissa + exp
    n = draw(st.sampled_from([MAX_NUMBER_CHARS - 1, MAX_NUMBER_CHARS, MAX_NUMBER_CHARS + 1]))
    sign = draw(st.sampled_from(["", "-"]))
    exp = draw(st.sampled_from(["", "e5", "E-7", "e+300", "e-300", "e400", "e00012"]))
    frac = draw(st.booleans())
    left = n - len(sign) - len(exp)
    if frac and left >= 3:
        k = draw(st.integers(1, left - 2))
        body = draw(st.sampled_from(["0", "3"])) + "7" * (k - 1) + "." + "1" * (left - k - 1)
    else:
        body = "1" + "0" * (left - 1)
    return sign + body + exp


def _value(draw) -> str:
    """One raw JSON value (possibly breaking a limit), of one of the limit classes."""
    kind = draw(st.sampled_from(["number", "key", "depth", "surrogate", "string"]))
    if kind == "number":
        return draw(_number())
    if kind == "key":
        n = draw(st.sampled_from([MAX_KEY_CHARS - 1, MAX_KEY_CHARS, MAX_KEY_CHARS + 1]))
        return "{" + draw(_string(n)) + draw(st.sampled_from([":", " :", ":\n "])) + "0}"
    if kind == "depth":
        d = draw(st.sampled_from([MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1,
                                  draw(st.integers(925, 1005))]))
        return nested(d, draw(_string(3)), draw(st.sampled_from(["mixed", "array", "object"])))
    if kind == "surrogate":
        return draw(_string(draw(st.integers(1, 6)), surrogates=True))
    return draw(_string(draw(st.integers(0, 70))))


@st.composite
def _record(draw) -> bytes:
    value = _value(draw)
    where = draw(st.sampled_from(["event_id", "ts", "user_id", "watch_ms", "x", "nested", "key",
                                  "whole"]))
    if where == "whole":
        raw = value.encode()
    elif where == "nested":
        raw = event(("x", "[" + value + "]"))
    elif where == "key":  # the value as the text of a key, when it is a string
        raw = event(key_text=value) if value.startswith('"') else event(("x", value))
    else:
        # Depth counts from the event: one level less where the value is a field.
        raw = event((where, value))
    tail = draw(st.sampled_from(["", "", "", " ", "\n", " x", '},"tally-end"]',
                                 ',"tally-end"] x', "{}", "]", "1"]))
    return raw + tail.encode()


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow,
                                 HealthCheck.function_scoped_fixture])
@given(st.lists(_record(), min_size=150, max_size=150))
def test_json_limits_agree_property(spark, http, raws):
    assert_parity(spark, http, raws)


def test_body_bound_is_the_http_limit(http):
    """A body nested up to MAX_BODY_DEPTH is read and judged per event; deeper is a 400."""
    client, res = http
    res._producer = FakeProducer()
    ok = event().decode()
    body = "[" + ok + "," + nested(MAX_BODY_DEPTH - 1) + "]"
    r = client.post("/v1/events", data=body, content_type="application/json")
    assert r.status_code == 202 and r.json["rejected"] == [{"index": 1, "error": NOT_JSON}]
    body = "[" + ok + "," + nested(MAX_BODY_DEPTH) + "]"
    r = client.post("/v1/events", data=body, content_type="application/json")
    assert r.status_code == 400 and r.json["error"].startswith("body: not valid JSON")
