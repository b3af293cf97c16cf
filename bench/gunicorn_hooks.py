"""gunicorn config for both benchmarked servers: ``gunicorn -c bench/gunicorn_hooks.py``.

``-c`` replaces the repo's ``gunicorn.conf.py``, so this file runs it first (same timeout,
logging, ...) and then adds two hooks; ``-b`` and ``-w`` on the command line still win.

- ``post_worker_init`` logs ``bench: worker PID ready`` once a worker has loaded its app, and
  ``bench: worker PID gcs_sync from FILE`` (the ``gcs_sync`` package it imported: the
  baseline's worktree or this repository; ``-`` for stock pypiserver).
- ``worker_exit`` (run in the worker as it exits) writes the wrapper's bucket API calls,
  ``dict(app.config["gcs_sync.client"].driver.calls)``, as JSON to
  ``$BENCH_CALLS_DIR/<pid>.json``. Stock pypiserver has no client and writes nothing.

A hook the repo's config already defines is called before ours. Its ``when_ready`` (the
listing process) only for a design that has one (``gcs_sync.web.lister``): an older
design's workers list the bucket themselves, as that design did.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

_REPO_CONFIG = Path(__file__).resolve().parents[1] / "gunicorn.conf.py"
exec(compile(_REPO_CONFIG.read_text(encoding="utf-8"), str(_REPO_CONFIG), "exec"))

_repo_when_ready = globals().get("when_ready")
_repo_post_worker_init = globals().get("post_worker_init")
_repo_worker_exit = globals().get("worker_exit")


def when_ready(server):
    if _repo_when_ready is not None and _has_lister():
        _repo_when_ready(server)


def _has_lister():
    try:
        return importlib.util.find_spec("gcs_sync.web.lister") is not None
    except ModuleNotFoundError:  # no gcs_sync at all: stock pypiserver
        return False


def post_worker_init(worker):
    if _repo_post_worker_init is not None:
        _repo_post_worker_init(worker)
    package = sys.modules.get("gcs_sync")
    worker.log.info("bench: worker %s gcs_sync from %s", os.getpid(), getattr(package, "__file__", None) or "-")
    worker.log.info("bench: worker %s ready", os.getpid())


def worker_exit(server, worker):
    if _repo_worker_exit is not None:
        _repo_worker_exit(server, worker)
    folder = os.environ.get("BENCH_CALLS_DIR")
    app = getattr(worker, "wsgi", None)  # gunicorn also calls this in the master for a lost worker
    config = getattr(app, "config", None)
    client = config.get("gcs_sync.client") if config is not None else None
    if not folder or client is None:
        return
    target = Path(folder) / f"{os.getpid()}.json"
    temp = target.with_suffix(".tmp")
    temp.write_text(json.dumps(dict(client.driver.calls)), encoding="utf-8")
    os.replace(temp, target)
