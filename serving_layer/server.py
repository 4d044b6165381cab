"""``tally serve``: the app under gunicorn with ``serve.workers`` sync workers.

The app is NOT preloaded: each worker builds it (``create_app``) after the fork, so the happybase
pool, the Kafka producer and the batch-view cache are per worker and never shared across a fork.
Prometheus multiprocess files go to ``<state dir>/run/metrics-<port>/`` (emptied at start; a dead
worker's files are marked with ``mark_process_dead``). The rate limit's buckets are in
``<state dir>/run/ratelimit.sqlite``, shared by every worker and instance of the state dir.

**Binding** (:func:`check_bind`, also used by `tally front up`). A sync worker is held by one
slow client for as long as it sends, so plain `tally serve` listens on loopback only; clients
from elsewhere go through the front door, whose nginx reads whole requests (with header and
body deadlines) in its event loop before an instance sees a byte (docs/security.md, "Slow
clients"). ``serve.behind_proxy = true`` lets it bind another address when another proxy that
does the same (an ALB) is the only way in. Any non-loopback listener (the instances', or the
front door's) also needs ``serve.api_keys``, or ``serve.open_writes = true`` when writes may be
open.

For another WSGI server: ``gunicorn 'serving_layer.server:app_from_env()'`` builds the app from
the environment and ``--config``-less defaults (``TALLY_*``, ``TALLY_LOG_FORMAT`` included: the
workers' log lines and the access log are in that format; gunicorn's own lines are its own); run
it behind a proxy that reads whole requests before passing them on (nginx, an ALB), as the front
door does.
"""

from __future__ import annotations

import ipaddress
import os
import shutil

from adapters import log
from schemas.config import TallyConfig, load_config
from schemas.errors import ConfigError

LOG = log.get("serve")

def app_from_env():
    from serving_layer.app import create_app

    cfg = load_config()
    log.setup("WARNING", fmt=cfg.log_format)
    return create_app(cfg)


def gunicorn_logger(fmt: str):
    """gunicorn's logger class with its error log (stderr) in the log format ``fmt``."""
    from gunicorn.glogging import Logger

    class TallyGunicornLogger(Logger):
        def setup(self, cfg) -> None:
            super().setup(cfg)
            for handler in self.error_log.handlers:
                handler.setFormatter(log.formatter(fmt))

    return TallyGunicornLogger


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(cfg: TallyConfig, host: str, what: str, proxied: bool = False) -> None:
    """ConfigError for a non-loopback ``host`` that slow clients could hold (a `tally serve`
    not ``proxied`` and without ``serve.behind_proxy``), or where anyone reaching it could
    write events (no ``serve.api_keys`` and no ``serve.open_writes``)."""
    if is_loopback(host):
        return
    if not (proxied or cfg.serve.behind_proxy):
        raise ConfigError(
            f"{what}: refusing to listen on {host} (not loopback): its sync workers can be held "
            f"by slow clients; bind 127.0.0.1 and let `tally front up` face clients, or set "
            f"serve.behind_proxy = true when a proxy that reads whole requests is the only way in")
    if cfg.serve.api_keys or cfg.serve.open_writes:
        return
    raise ConfigError(
        f"{what}: refusing to listen on {host} (not loopback) without serve.api_keys: anyone who "
        f"can reach it could write events; set serve.api_keys, or serve.open_writes = true if "
        f"writes may be open")


def _metrics_dir(cfg: TallyConfig, port: int) -> str:
    path = cfg.state_path / "run" / f"metrics-{port}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def gunicorn_settings(cfg: TallyConfig, host: str, port: int) -> dict:
    def child_exit(_server, worker) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": cfg.serve.workers,
        "worker_class": "sync",
        "timeout": cfg.serve.request_timeout_s,
        "graceful_timeout": 10,
        "preload_app": False,
        "child_exit": child_exit,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "logger_class": gunicorn_logger(cfg.log_format),
        "proc_name": f"tally-serve:{port}",
    }


def run(cfg: TallyConfig, host: str | None = None, port: int | None = None) -> int:
    from gunicorn.app.base import BaseApplication

    host = host or cfg.serve.host
    port = port or cfg.serve.port
    check_bind(cfg, host, "tally serve")
    # The app knows the address it is bound to (a name its Host header may give).
    cfg = cfg.replace(serve={"host": host, "port": port})
    # Before any prometheus metric exists in this process or its workers.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir(cfg, port)
    settings = gunicorn_settings(cfg, host, port)

    class TallyServer(BaseApplication):
        def load_config(self) -> None:
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self):
            from serving_layer.app import create_app

            return create_app(cfg)

    log.progress(f"tally serve: http://{host}:{port} ({cfg.serve.workers} workers)")
    TallyServer().run()
    return 0
