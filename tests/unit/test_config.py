"""The typed config: defaults, TOML, TALLY_* overrides, and rejection of bad keys and values."""

from __future__ import annotations

import pytest

from schemas.config import load_config
from schemas.errors import ConfigError


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


def test_bad_environment_is_rejected():
    with pytest.raises(ConfigError, match="TALLY_NOPE__X: unknown config section"):
        load_config(environ={"TALLY_NOPE__X": "1"})
    with pytest.raises(ConfigError, match="hbase.port: must be an integer"):
        load_config(environ={"TALLY_HBASE__PORT": "ninety"})
    with pytest.raises(ConfigError, match="bogus: unknown config key"):
        load_config(environ={"TALLY_BOGUS": "1"})


def test_missing_file_is_a_clear_error():
    with pytest.raises(ConfigError, match="no such file"):
        load_config("/nonexistent/tally.toml", environ={})


def test_replace_revalidates():
    cfg = load_config(environ={})
    assert cfg.replace(kafka={"topic": "x"}).kafka.topic == "x"
    with pytest.raises(ConfigError):
        cfg.replace(kafka={"partitions": -1})
