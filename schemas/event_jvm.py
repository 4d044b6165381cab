"""The event contract on the JVM: the spec that ``io.tally.udf.EventValidator`` (infra/jvm,
built into infra/lib/udf/tally-udf.jar by ``make jars``) applies, derived from
:data:`schemas.event.FIELDS` and its reason texts, and :func:`validate_events_jvm`, the same
columns as :func:`schemas.event_spark.validate_events` from one UDF call per record.

The Java class holds no rule or text of its own: every limit, pattern and reason comes from
:func:`spec`. The parity tests hold it equal to :class:`schemas.event.EventValidator`.
"""

from __future__ import annotations

import json
from typing import Iterable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from schemas.errors import ConfigError
from schemas.event import (
    FIELDS, MAX_DEPTH, MAX_KEY_CHARS, MAX_NUMBER_CHARS, MIN_TS_MS, RFC3339, RULE_JSON, RULE_OBJECT,
    RULE_REQUIRED, RULE_TS_BEFORE, RULE_TS_FORMAT, RULE_UTF8, Field, reason, rule_enum, rule_max_len,
    rule_pattern, rule_range, rule_ts_future, rule_type,
)

JAVA_CLASS = "io.tally.udf.EventValidator"
UDF_NAME = "tally_validate_event"
_SQL_TYPES = {"string": "string", "integer": "bigint", "timestamp": "bigint"}


def _reasons(f: Field, types: tuple[str, ...], max_future_ms: int) -> dict[str, str]:
    out = {"required": reason(f.name, RULE_REQUIRED), "type": reason(f.name, rule_type(f))}
    if f.kind == "string":
        if f.pattern:
            out["pattern"] = reason(f.name, rule_pattern(f))
        else:
            out["max_len"] = reason(f.name, rule_max_len(f))
        if f.enum:
            out["enum"] = reason(f.name, rule_enum(types))
    elif f.kind == "integer":
        out["range"] = reason(f.name, rule_range(f))
    else:
        out["type"] = reason(f.name, RULE_TS_FORMAT)
        out["ts_before"] = reason(f.name, RULE_TS_BEFORE)
        out["ts_future"] = reason(f.name, rule_ts_future(max_future_ms))
    return out


def spec(event_types: Iterable[str], max_future_ms: int) -> str:
    """The JSON the Java validator is built from."""
    types = tuple(event_types)
    return json.dumps({
        "reason_utf8": reason("event", RULE_UTF8), "reason_json": reason("event", RULE_JSON),
        "reason_object": reason("event", RULE_OBJECT),
        "max_depth": MAX_DEPTH, "max_number_chars": MAX_NUMBER_CHARS,
        "max_key_chars": MAX_KEY_CHARS, "min_ts_ms": MIN_TS_MS, "max_future_ms": max_future_ms,
        "rfc3339": RFC3339, "event_types": list(types),
        "fields": [{"name": f.name, "kind": f.kind, "required": f.required,
                    "pattern": f"{f.pattern}{{1,{f.max_len}}}" if f.pattern else None,
                    "max_len": f.max_len, "minimum": f.minimum, "maximum": f.maximum,
                    "enum": f.enum, "default": f.default,
                    "reasons": _reasons(f, types, max_future_ms)} for f in FIELDS],
    }, sort_keys=True)


def result_type() -> str:
    return ("struct<error:string,json:string," +
            ",".join(f"{f.name}:{_SQL_TYPES[f.kind]}" for f in FIELDS) + ">")


def register(spark, event_types: Iterable[str], max_future_ms: int) -> str:
    """Register the validator for these settings in ``spark``'s session; returns its SQL name."""
    text = spec(event_types, max_future_ms)
    name = f"{UDF_NAME}_{abs(hash(text)) % 10**8}"
    jvm = spark.sparkContext._jvm
    try:
        validator = jvm.io.tally.udf.EventValidator(text)
    except Exception as exc:  # py4j: the class is not on the driver's class path
        if "does not exist in the JVM" in str(exc) or "ClassNotFound" in str(exc) \
                or type(exc).__name__ == "TypeError":
            raise ConfigError(f"{JAVA_CLASS} is not on Spark's class path: `make jars` builds "
                              "infra/lib/udf/tally-udf.jar, which the sessions load") from None
        raise
    data_type = jvm.org.apache.spark.sql.types.DataType.fromDDL(result_type())
    spark._jsparkSession.udf().register(name, validator, data_type)
    return name


def validate_events_jvm(df: DataFrame, value_col: str = "value", clock_col: str = "timestamp",
                        event_types: Iterable[str] = ("view", "like", "dislike", "share", "comment"),
                        max_future_ms: int = 3_600_000) -> DataFrame:
    """``df`` with ``error``, ``json`` and one column per contract field, as
    :func:`schemas.event_spark.validate_events` gives them, from one JVM call per record."""
    name = register(df.sparkSession, event_types, max_future_ms)
    clock = F.col(clock_col)
    clock_ms = F.unix_millis(clock) if dict(df.dtypes)[clock_col] == "timestamp" else clock
    keep = df.columns
    out = df.withColumn("_r", F.call_function(name, F.col(value_col), clock_ms))
    return out.select(*keep, *[F.col("_r")[c].alias(c) for c in
                               ("error", "json", *(f.name for f in FIELDS))])
