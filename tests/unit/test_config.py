"""The typed config: defaults, TOML, TALLY_* overrides, and rejection of bad keys and values."""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import config
from schemas.config import load_config
from schemas.errors import ConfigError


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records)


@pytest.fixture
def config_warnings(monkeypatch):
    """The warnings of the ``tally.config`` logger, with the once-per-process memory of warned
    variables emptied (a handler of its own: ``log.setup`` stops ``tally.*`` propagating)."""
    monkeypatch.setattr(config, "_WARNED", set())
    handler = Records()
    logger = logging.getLogger("tally.config")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def write(tmp_path, text: str) -> str:
    p = tmp_path / "tally.toml"
    p.write_text(text)
    return str(p)


def test_defaults_match_the_contract():
    cfg = load_config(environ={})
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert cfg.kafka.topic == "tally.events" and cfg.kafka.dlq_topic == "tally.events.dlq"
    assert cfg.hbase.port == 9090
    assert cfg.lake.s3_endpoint == "http://127.0.0.1:5000"
    assert cfg.events.types == ("view", "like", "dislike", "share", "comment")
    assert cfg.state_dir == ".tally"
    assert cfg.lake_uri.startswith("file://") and cfg.lake_uri.endswith("/.tally/lake")


def test_toml_then_environment(tmp_path):
    path = write(tmp_path, 'state_dir = "/tmp/x"\n[kafka]\ntopic = "t1"\npartitions = 3\n'
                           '[events]\ntypes = ["play", "stop"]\n')
    cfg = load_config(path, environ={"TALLY_KAFKA__TOPIC": "t2", "TALLY_HBASE__SALT_BUCKETS": "8"})
    assert cfg.kafka.topic == "t2"  # the environment overrides the file
    assert cfg.kafka.partitions == 3
    assert cfg.hbase.salt_buckets == 8
    assert cfg.events.types == ("play", "stop")
    assert cfg.state_dir == "/tmp/x"
    env = load_config(path, environ={"TALLY_STATE_DIR": "/tmp/y", "TALLY_EVENTS__TYPES": "a,b"})
    assert env.state_dir == "/tmp/y" and env.events.types == ("a", "b")


def test_flag_overrides_win(tmp_path):
    cfg = load_config(environ={"TALLY_STATE_DIR": "/tmp/env"}, overrides={"state_dir": "/tmp/flag"})
    assert cfg.state_dir == "/tmp/flag"


@pytest.mark.parametrize("text,message", [
    ("nonsense = 1\n", "nonsense: unknown config key"),
    ("[kafka]\ntopik = 'x'\n", "kafka.topik: unknown config key"),
    ("[kafka]\npartitions = 'six'\n", "kafka.partitions: must be an integer"),
    ("[kafka]\npartitions = 0\n", "kafka.partitions: must be > 0"),
    ("[kafka]\nbootstrap_servers = 'nohost'\n", "kafka.bootstrap_servers: must be host:port"),
    ("[hbase]\nsalt_buckets = 300\n", "hbase.salt_buckets: must be between 1 and 256"),
    ("[hbase]\nspeed_ttl_days = 2\n[batch]\nmax_lag_days = 3\n", "hbase.speed_ttl_days: must be longer"),
    ("[events]\ntypes = ['ok', 'not ok']\n", "events.types: 'not ok' must be"),
    ("[lake]\nuri = 'hdfs://x'\n", "lake.uri: must start with"),
    ("kafka = 3\n", "kafka: must be a table of keys"),
    ("[kafka\n", "is not valid TOML"),
])
def test_bad_files_are_rejected_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("'", "'")):
        load_config(write(tmp_path, text), environ={})


def test_bad_environment_is_rejected(config_warnings):
    # A variable that names no setting (no section, no key) is not an error any more: it is
    # reported by name (test_unknown_environment_variables_are_warned_about_by_name).
    assert load_config(environ={"TALLY_NOPE__X": "1"}) == load_config(environ={})
    assert "TALLY_NOPE__X: names no setting" in config_warnings.text
    with pytest.raises(ConfigError, match="hbase.port: must be an integer"):
        load_config(environ={"TALLY_HBASE__PORT": "ninety"})
    assert load_config(environ={"TALLY_BOGUS": "1"}) == load_config(environ={})
    assert "TALLY_BOGUS: names no setting" in config_warnings.text


def test_missing_file_is_a_clear_error():
    with pytest.raises(ConfigError, match="no such file"):
        load_config("/nonexistent/tally.toml", environ={})


def test_replace_revalidates():
    cfg = load_config(environ={})
    assert cfg.replace(kafka={"topic": "x"}).kafka.topic == "x"
    with pytest.raises(ConfigError):
        cfg.replace(kafka={"partitions": -1})


# Unknown keys, unknown variables, limits on the fields ------------------------------------------

@pytest.mark.parametrize("text,message", [
    ("[kafka]\ntopicc = 'x'\n", "kafka.topicc: unknown config key (did you mean topic?)"),
    ("[serve]\nzzz = 1\n", "serve.zzz: unknown config key (known: access_log, allowed_hosts,"),
    ("[Kafka]\ntopic = 'x'\n", "Kafka: unknown config key (did you mean kafka?)"),
    ("colour = 'red'\n", "colour: unknown config key"),
])
def test_an_unknown_key_in_a_file_is_an_error_naming_it(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text), environ={})
    assert str(e.value).startswith(message), str(e.value)


def test_unknown_environment_variables_are_warned_about_by_name(config_warnings):
    cfg = load_config(environ={"TALLY_FOO": "1", "TALLY_KAFKA__TOPICC": "typo"})
    assert cfg == load_config(environ={})  # neither is a setting: the defaults stand
    assert cfg.kafka.topic == "tally.events"
    messages = [r.getMessage() for r in config_warnings.records]
    assert all(r.levelno == logging.WARNING for r in config_warnings.records)
    assert any(m.startswith("TALLY_FOO: names no setting") for m in messages), messages
    assert "TALLY_KAFKA__TOPICC: names no setting, ignored; did you mean TALLY_KAFKA__TOPIC?" \
        in messages
    assert not any("did you mean" in m for m in messages if m.startswith("TALLY_FOO"))
    # Reported once: the next load says nothing more about them.
    load_config(environ={"TALLY_FOO": "1", "TALLY_KAFKA__TOPICC": "typo"})
    assert len(config_warnings.records) == len(messages) == 2


def test_tallys_own_variables_that_carry_no_setting_are_not_warned_about(config_warnings,
                                                                          tmp_path):
    env = {"TALLY_HOME": str(tmp_path), "TALLY_CONFIG": "", "TEST_FAILPOINTS": "batch.write=kill",
           "TALLY_STATE_DIR": str(tmp_path / "state")}
    cfg = load_config(environ=env)
    assert cfg.state_dir == str(tmp_path / "state")
    assert config_warnings.records == []


def test_tally_home_does_not_break_a_command(tmp_path):
    # infra/schedule/tally-batch.cron sets TALLY_HOME (tests/unit/test_schedule.py runs it).
    path = write(tmp_path, "[kafka]\ntopic = 'from-file'\n")
    cfg = load_config(environ={"TALLY_HOME": str(tmp_path), "TALLY_CONFIG": path})
    assert cfg.kafka.topic == "from-file"


@pytest.mark.parametrize("env,message", [
    ({"TALLY_KAFKA__PARTITIONS": "0"},
     "kafka.partitions: must be > 0 (from TALLY_KAFKA__PARTITIONS)"),
    ({"TALLY_HBASE__SALT_BUCKETS": "257"}, "hbase.salt_buckets: must be between 1 and 256"),
    ({"TALLY_SERVE__PORT": "65536"}, "serve.port: must be below 65536"),
    ({"TALLY_KAFKA__COMPRESSION": "lzo"}, "kafka.compression: must be one of none, gzip, lz4"),
    ({"TALLY_KAFKA__PARTITIONS": "true"}, "kafka.partitions: must be an integer, got 'true'"),
    ({"TALLY_SERVE__RATE_LIMIT_PER_S": "0.0001"}, "serve.rate_limit_per_s: must be 0 (off) or"),
    ({"TALLY_STREAM__WATERMARK": "0s"}, "stream.watermark: must be > 0"),
    ({"TALLY_STREAM__WATERMARK": "soon"}, "stream.watermark: cannot read 'soon' as a duration"),
    ({"TALLY_BATCH__HORIZON_START": "2025-02-30"},
     "batch.horizon_start: must be a day as YYYY-MM-DD"),
    ({"TALLY_EVENTS__TYPES": ""}, "events.types: must name at least one event type"),
    ({"TALLY_EVENTS__TYPES": "a,a"}, "events.types: must not repeat a type"),
    ({"TALLY_KAFKA__DLQ_TOPIC": "tally.events"}, "kafka.dlq_topic: must differ from kafka.topic"),
    ({"TALLY_HBASE__TABLE_PREFIX": "a-b"}, "hbase.table_prefix: must be letters, digits and '_'"),
    ({"TALLY_FRONT__FIRST_INSTANCE_PORT": "65535"}, "front.first_instance_port: the instances'"),
])
def test_limits_are_errors_naming_the_key(env, message):
    with pytest.raises(ConfigError) as e:
        load_config(environ=env)
    assert str(e.value).startswith(message), str(e.value)


def test_a_bound_declared_on_a_field_in_a_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "[kafka]\npartitions = 0\n"), environ={})
    assert str(e.value) == "kafka.partitions: must be > 0"
    gt = [m.gt for m in config.KafkaConfig.model_fields["partitions"].metadata if hasattr(m, "gt")]
    assert gt == [0]  # the limit lives on the field, not in a list of names elsewhere


def _outside(bound: str, limit, annotation) -> object:
    """A value just outside a declared bound."""
    step = 1 if annotation is int else 0.5
    return {"gt": limit, "ge": limit - step, "lt": limit, "le": limit + step}[bound]


DECLARED_BOUNDS = [
    (section, key, bound, getattr(m, bound), f.annotation)
    for section, cls in config.sections().items()
    for key, f in cls.model_fields.items()
    for m in f.metadata for bound in ("gt", "ge", "lt", "le")
    if getattr(m, bound, None) is not None]


@pytest.mark.parametrize("section,key,bound,limit,annotation", DECLARED_BOUNDS,
                         ids=[f"{s}.{k}-{b}" for s, k, b, _, _ in DECLARED_BOUNDS])
def test_every_declared_bound_is_enforced_naming_the_key(section, key, bound, limit, annotation):
    value = _outside(bound, limit, annotation)
    with pytest.raises(ConfigError) as e:
        load_config(environ={}, overrides={section: {key: value}})
    assert str(e.value).startswith(f"{section}.{key}: must "), str(e.value)


def test_a_file_is_typed_strictly(tmp_path):
    for text, message in [
            ("[kafka]\npartitions = '6'\n", "kafka.partitions: must be an integer"),
            ("[serve]\nread_requires_key = 1\n", "serve.read_requires_key: must be a boolean"),
            ("[events]\ntypes = 'a,b'\n", "events.types: must be a list of strings"),
            ("[events]\ntypes = ['a', 3]\n", "events.types: each item must be a string")]:
        with pytest.raises(ConfigError, match=message):
            load_config(write(tmp_path, text), environ={})
    cfg = load_config(write(tmp_path, "[batch]\nclose_timeout_s = 60\n"), environ={})
    assert cfg.batch.close_timeout_s == 60.0 and isinstance(cfg.batch.close_timeout_s, float)


def test_environment_values_are_read_as_their_types():
    cfg = load_config(environ={"TALLY_SERVE__OPEN_WRITES": "yes", "TALLY_SERVE__API_KEYS": "",
                               "TALLY_SERVE__ALLOWED_HOSTS": " a.example , b.example ",
                               "TALLY_BATCH__CLOSE_TIMEOUT_S": "1.5", "TALLY_LAKE__URI": ""})
    assert cfg.serve.open_writes is True and cfg.serve.api_keys == ()
    assert cfg.serve.allowed_hosts == ("a.example", "b.example")
    assert cfg.batch.close_timeout_s == 1.5 and cfg.lake.uri == ""


def test_several_errors_are_reported_together(tmp_path):
    path = write(tmp_path, "[kafka]\npartitions = 0\ntopik = 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, environ={"TALLY_HBASE__PORT": "x"})
    text = str(e.value)
    assert "kafka.partitions: must be > 0" in text and "kafka.topik: unknown config key" in text
    assert "hbase.port: must be an integer, got 'x' (from TALLY_HBASE__PORT)" in text


def test_secrets_stay_out_of_errors_and_reprs():
    with pytest.raises(ConfigError) as e:
        load_config(environ={"TALLY_SERVE__API_KEYS": "hunter2-short"})
    assert "hunter2" not in str(e.value)
    assert str(e.value).startswith("serve.api_keys: each key must be at least 16")
    cfg = load_config(environ={"TALLY_LAKE__S3_SECRET_KEY": "s3cr3t-value",
                               "TALLY_SERVE__API_KEYS": "k" * 20})
    assert cfg.lake.s3_secret_key == "s3cr3t-value" and cfg.serve.api_keys == ("k" * 20,)
    assert "s3cr3t" not in repr(cfg) and "k" * 20 not in repr(cfg)


def test_configs_are_immutable_values():
    cfg = load_config(environ={})
    with pytest.raises(ValidationError):
        cfg.kafka.topic = "x"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        cfg.state_dir = "x"  # type: ignore[misc]
    assert cfg == load_config(environ={}) and hash(cfg) == hash(load_config(environ={}))
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # what Spark ships to its executors


def test_replace_reads_neither_file_nor_environment(monkeypatch, tmp_path):
    cfg = load_config(environ={})
    monkeypatch.setenv("TALLY_KAFKA__TOPIC", "from-the-environment")
    monkeypatch.setenv("TALLY_CONFIG", write(tmp_path, "[kafka]\npartitions = 1\n"))
    changed = cfg.replace(state_dir="/tmp/z", serve={"port": 9000})
    assert (changed.kafka.topic, changed.kafka.partitions) == ("tally.events", 6)
    assert changed.state_dir == "/tmp/z" and changed.serve.port == 9000
    assert changed.serve.workers == cfg.serve.workers and cfg.serve.port == 8000
    assert math.isclose(changed.front.read_timeout_s, 30.0)


def test_the_defaults_are_valid_and_documented():
    cfg = load_config(environ={})
    assert config.to_toml(cfg).startswith('state_dir = ".tally"\n')
    assert load_config(environ={}, overrides=config.to_dict(cfg)) == cfg
    for section, cls in config.sections().items():
        assert cls.__doc__, section
        assert cls.section == section


def test_docs_configuration_md_is_generated_from_the_model():
    from tally.devstack import configdoc

    page = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert page.read_text() == configdoc.render(), (
        "docs/configuration.md is out of date: regenerate it with "
        "`python -m tally.devstack.configdoc > docs/configuration.md`")
    text = configdoc.render()
    for section, cls in config.sections().items():
        assert f"## [{section}]" in text
        for key in cls.model_fields:
            assert f"| `{key}` |" in text
    assert "| `partitions` | integer | `6` | > 0 |" in text
    assert "| `salt_buckets` | integer | `16` | >= 1 and <= 256 |" in text
    assert "one of none, gzip, lz4, zstd, snappy" in text
