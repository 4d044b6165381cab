"""How sessions get the connector jars and where Spark's scratch goes: a local session reads the
jars where they lie (no per-session copy of the 655 MB AWS SDK bundle, which a killed driver
leaves behind) and keeps its scratch in the state directory; a cluster session, or a JVM started
without the jars, ships them with ``spark.jars``."""

from __future__ import annotations

import os

import pytest

from schemas.config import load_config


@pytest.fixture
def cfg(tmp_path):
    lib = tmp_path / "lib"
    (lib / "spark").mkdir(parents=True)
    for name in ("bundle-2.35.4.jar", "spark-sql-kafka-0-10_2.13-4.2.0.jar"):
        (lib / "spark" / name).write_bytes(b"PK")
    return load_config(environ={}, overrides={"state_dir": str(tmp_path / "state"),
                                              "stack": {"lib_dir": str(lib)}})


@pytest.fixture
def no_jvm(monkeypatch):
    from pyspark import SparkContext

    import adapters.spark

    monkeypatch.setattr(SparkContext, "_gateway", None)
    monkeypatch.setattr(adapters.spark, "_jvm_class_path", lambda: set())


def test_local_session_reads_the_jars_in_place(cfg, no_jvm, tmp_path):
    from adapters.spark import base_conf

    conf = base_conf(cfg, master="local[2]")
    assert "spark.jars" not in conf
    assert conf["spark.driver.extraClassPath"].split(os.pathsep) == [
        str(tmp_path / "lib" / "spark" / "bundle-2.35.4.jar"),
        str(tmp_path / "lib" / "spark" / "spark-sql-kafka-0-10_2.13-4.2.0.jar")]
    assert conf["spark.local.dir"] == str(tmp_path / "state" / "spark-local")
    assert (tmp_path / "state" / "spark-local").is_dir()


def test_cluster_session_ships_the_jars(cfg, no_jvm):
    from adapters.spark import base_conf

    conf = base_conf(cfg, master="spark://127.0.0.1:7077")
    assert "spark.driver.extraClassPath" not in conf and "spark.local.dir" not in conf
    assert conf["spark.jars"].split(",")[0].endswith("bundle-2.35.4.jar")


def test_a_running_jvm_keeps_its_class_path(cfg, no_jvm, monkeypatch):
    from pyspark import SparkContext

    import adapters.spark
    from adapters.spark import base_conf

    # The JVM about to start gets the jars on its class path ...
    started = base_conf(cfg, master="local[2]")["spark.driver.extraClassPath"].split(os.pathsep)
    monkeypatch.setattr(SparkContext, "_gateway", object())
    monkeypatch.setattr(adapters.spark, "_jvm_class_path",
                        lambda: {"/x/spark.jar", *started})
    again = base_conf(cfg, master="local[2]")  # ... a later session in that JVM: nothing to add
    assert "spark.jars" not in again and "spark.driver.extraClassPath" not in again


def test_a_jvm_started_without_the_jars_gets_them_shipped(cfg, no_jvm, monkeypatch):
    from pyspark import SparkContext

    from adapters.spark import base_conf

    monkeypatch.setattr(SparkContext, "_gateway", object())
    conf = base_conf(cfg, master="local[2]")
    assert "spark.driver.extraClassPath" not in conf
    assert len(conf["spark.jars"].split(",")) == 2


def test_no_jars_asked_for(cfg, no_jvm):
    from adapters.spark import base_conf

    conf = base_conf(cfg, with_jars=False, master="local[2]")
    assert "spark.jars" not in conf and "spark.driver.extraClassPath" not in conf


def test_the_test_session_copied_no_jar(spark):
    """The real session of the unit tests: its JVM has the jars on its class path, and its jobs
    ran without a copy of any jar in its scratch."""
    from adapters.spark import _jvm_class_path, connector_jars

    jars = connector_jars(load_config(environ={}))
    assert jars and set(jars) <= _jvm_class_path()
    assert spark.range(10).selectExpr("sum(id)").first()[0] == 45
    local_dirs = spark.sparkContext.getConf().get("spark.local.dir")
    assert local_dirs, "a local session keeps its scratch in the state directory"
    copied = [os.path.join(d, f) for root in local_dirs.split(",")
              for d, _, files in os.walk(root) for f in files if f.endswith(".jar")]
    assert copied == []
