"""Parity: the Spark column-expression form of the contract gives the same verdict, the same
reason and the same parsed values as the Python validator, on the same inputs."""

from __future__ import annotations

import datetime as dt
import json
import random

from schemas.event import FIELD_NAMES, EventValidator
from schemas.event_spark import validate_events
from tally.generator import INVALID_KINDS
from tests.unit.bad_events import BAD, CLOCK, GOOD, GOOD_CASES

V = EventValidator()


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


def test_spark_and_python_agree(spark):
    from tally.generator import Traffic, GeneratorOptions

    raws = [raw for _, raw, _ in BAD] + [raw for _, raw, _ in GOOD_CASES] + _fuzz_cases(400)
    base = Traffic(GeneratorOptions(events=50, videos=5, start="2026-11-10", seed=3),
                   ("view", "like", "dislike", "share", "comment"), 600_000)
    raws += [kind[1](base.event(i)) for i, kind in enumerate(INVALID_KINDS)]
    raws += [json.dumps(base.event(i)).encode() for i in range(50)]
    clock = dt.datetime.fromtimestamp(CLOCK / 1000, dt.timezone.utc)
    df = spark.createDataFrame([(i, bytearray(r), clock) for i, r in enumerate(raws)],
                               "i int, value binary, timestamp timestamp")
    rows = validate_events(df).orderBy("i").collect()
    assert len(rows) == len(raws)
    mismatches = []
    for row, raw in zip(rows, raws):
        expected_error = V.check_raw(raw, CLOCK)
        got = (row["error"],)
        want = (expected_error,)
        if expected_error is None:
            event = V.validate_raw(raw, CLOCK)
            got += tuple(row[f] for f in FIELD_NAMES)
            want += tuple(event[f] for f in FIELD_NAMES)
        if got != want:
            mismatches.append((raw[:120], want, got))
    assert not mismatches, f"{len(mismatches)} disagreements, first: {mismatches[:3]}"
    # The run must exercise both verdicts in bulk, or it proves little.
    n_bad = sum(1 for r in rows if r["error"] is not None)
    assert 80 < n_bad < len(rows) - 60
