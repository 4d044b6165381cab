"""The front door's config and generated nginx.conf (no stack needed; nginx itself checks the
file with `nginx -t`)."""

from __future__ import annotations

import subprocess

import pytest

from schemas.config import load_config, to_toml
from schemas.errors import ConfigError
from tally.devstack.front import NGINX, Front


def test_config_toml_round_trip(tmp_path):
    cfg = load_config(environ={"TALLY_SERVE__API_KEYS": 'a"quoted\\key-123456,second-key-1234567',
                               "TALLY_FRONT__INSTANCES": "3", "TALLY_STATE_DIR": str(tmp_path)})
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path, environ={}) == cfg


@pytest.mark.parametrize("env,message", [
    ({"TALLY_FRONT__PORT": "8002"}, "front.port: 8002 is one of the instances' ports"),
    ({"TALLY_FRONT__INSTANCES": "0"}, "front.instances: must be > 0"),
    ({"TALLY_FRONT__INSTANCES": "17"}, "front.instances: must be at most 16"),
    ({"TALLY_FRONT__READ_TIMEOUT_S": "5"}, "front.read_timeout_s: must be longer than serve.kafka_timeout_s"),
])
def test_bad_front_config_is_rejected_naming_the_key(env, message):
    with pytest.raises(ConfigError, match=message):
        load_config(environ=env)


def test_an_unknown_front_key_is_rejected_in_a_file(tmp_path):
    (tmp_path / "c.toml").write_text("[front]\nretry_post = true\n")
    with pytest.raises(ConfigError, match="front.retry_post: unknown config key"):
        load_config(tmp_path / "c.toml", environ={})
    # A variable that names no setting never breaks a command (tests/unit/test_config.py).
    assert load_config(environ={"TALLY_FRONT__RETRY_POST": "true"}) == load_config(environ={})


def test_nginx_conf(tmp_path):
    cfg = load_config(environ={"TALLY_STATE_DIR": str(tmp_path), "TALLY_FRONT__PORT": "18080",
                               "TALLY_FRONT__FIRST_INSTANCE_PORT": "18001",
                               "TALLY_FRONT__FAIL_TIMEOUT_S": "4"})
    front = Front(cfg)
    assert list(front.parts) == ["serve-1", "serve-2", "nginx"]
    text = front.nginx_conf()
    assert "server 127.0.0.1:18001 max_fails=1 fail_timeout=4s;" in text
    assert "server 127.0.0.1:18002 max_fails=1 fail_timeout=4s;" in text
    assert "listen 127.0.0.1:18080;" in text
    line = next(x.strip() for x in text.splitlines() if x.strip().startswith("proxy_next_upstream "))
    assert line == "proxy_next_upstream error timeout http_502 http_504;"  # no 503, no POST re-send
    assert "proxy_read_timeout 30000ms;" in text and "proxy_connect_timeout 1000ms;" in text
    assert str(tmp_path) in text and "/var/" not in text  # every path under the state dir
    assert front._write_nginx_conf() is True and front._write_nginx_conf() is False
    # The instances run with this very config, and none of the caller's TALLY_* variables.
    env = front.parts["serve-1"].env
    assert env["TALLY_CONFIG"] == str(tmp_path / "front" / "config.toml")
    def cmdline(port: str) -> str:
        return "\x00".join(["python", "-m", "tally.cli", "serve", "--state-dir", str(front.state),
                             "--host", "127.0.0.1", "--port", port, ""])
    assert front._owns_serve(18001, cmdline("18001"))
    assert not front._owns_serve(18001, cmdline("180011"))
    assert not front._owns_serve(18002, cmdline("18001"))
    res = subprocess.run([NGINX, "-t", *front._nginx_cmd()[1:]], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
