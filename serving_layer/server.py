"""``tally serve``: the app under gunicorn with ``serve.workers`` sync workers.

The app is NOT preloaded: each worker builds it (``create_app``) after the fork, so the happybase
pool, the Kafka producer and the batch-view cache are per worker and never shared across a fork.
Prometheus multiprocess files go to ``<state dir>/run/metrics-<port>/`` (emptied at start; a dead
worker's files are marked with ``mark_process_dead``).

For another WSGI server: ``gunicorn 'serving_layer.server:app_from_env()'`` builds the app from
the environment and ``--config``-less defaults (``TALLY_*``).
"""

from __future__ import annotations

import os
import shutil

from schemas.config import TallyConfig, load_config
from tally import log

LOG = log.get("serve")


def app_from_env():
    from serving_layer.app import create_app

    return create_app(load_config())


def _metrics_dir(cfg: TallyConfig, port: int) -> str:
    path = cfg.state_path / "run" / f"metrics-{port}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def run(cfg: TallyConfig, host: str | None = None, port: int | None = None) -> int:
    from gunicorn.app.base import BaseApplication

    host = host or cfg.serve.host
    port = port or cfg.serve.port
    # Before any prometheus metric exists in this process or its workers.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir(cfg, port)

    def child_exit(_server, worker) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

    class TallyServer(BaseApplication):
        def load_config(self) -> None:
            settings = {
                "bind": f"{host}:{port}",
                "workers": cfg.serve.workers,
                "worker_class": "sync",
                "timeout": cfg.serve.request_timeout_s,
                "graceful_timeout": 10,
                "preload_app": False,
                "child_exit": child_exit,
                "accesslog": None,
                "errorlog": "-",
                "loglevel": "warning",
                "proc_name": f"tally-serve:{port}",
            }
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self):
            from serving_layer.app import create_app

            return create_app(cfg)

    log.progress(f"tally serve: http://{host}:{port} ({cfg.serve.workers} workers)")
    TallyServer().run()
    return 0
