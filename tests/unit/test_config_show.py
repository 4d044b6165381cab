"""`tally config show`: the settings in effect — defaults, the TOML file, TALLY_* variables over
it — as TOML that the config loader reads back, every secret that is set redacted."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

FILE_SECRET = "file-secret-0123456789"
API_KEY = "env-api-key-abcdefghijklmnop"


def test_config_show_prints_the_effective_settings_with_secrets_redacted(tmp_path):
    config = tmp_path / "tally.toml"
    config.write_text('[kafka]\ntopic = "from.file"\npartitions = 3\n'
                      f'[lake]\ns3_access_key = "AKIAFILE"\ns3_secret_key = "{FILE_SECRET}"\n'
                      '[spark]\ndriver_memory = "1g"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update(TALLY_STATE_DIR=str(tmp_path / "state"), TALLY_SPARK__DRIVER_MEMORY="3g",
               TALLY_SERVE__API_KEYS=API_KEY)
    res = subprocess.run([sys.executable, "-m", "tally.cli", "config", "show", "--config",
                          str(config)], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert FILE_SECRET not in res.stdout and API_KEY not in res.stdout and "AKIAFILE" not in res.stdout
    shown = tomllib.loads(res.stdout)
    assert shown["state_dir"] == str(tmp_path / "state")
    assert (shown["kafka"]["topic"], shown["kafka"]["partitions"]) == ("from.file", 3)  # the file
    assert shown["spark"]["driver_memory"] == "3g"  # the variable over the file
    assert shown["kafka"]["bootstrap_servers"] == "127.0.0.1:9092"  # a default
    assert shown["lake"]["s3_secret_key"] == shown["lake"]["s3_access_key"] == "<redacted>"
    assert shown["serve"]["api_keys"] == ["<redacted>"]

    # Read back, it is the same configuration except for the secrets.
    from schemas.config import load_config, to_dict

    again = tmp_path / "shown.toml"
    again.write_text(res.stdout.replace('["<redacted>"]', "[]").replace('"<redacted>"', '""'))
    want = load_config(str(config), environ=env)
    got = load_config(str(again), environ={})
    assert to_dict(got.replace(lake={"s3_access_key": "AKIAFILE", "s3_secret_key": FILE_SECRET},
                               serve={"api_keys": (API_KEY,)})) == to_dict(want)
