"""Run in a subprocess by bench/scale.py, with a design's own code: ``python bench/scale_probe.py
TREE COMMAND [ARGS]`` (TREE: this checkout or the baseline's worktree, put first on sys.path).
The product's settings come from the environment, as the server reads them. Prints one JSON
line on stdout.

- ``presync``: an instance fills its local folder (and, as the design does, writes what a
  running instance leaves in the bucket: records, and the catalog snapshot its background
  maintenance writes after a full sync, waited for); its seconds and bucket calls.
- ``elsewhere FOLDER...``: an instance current on the bucket (pre-synced, timed), then for
  each FOLDER (one new wheel in each) another writer adds it through the product's own
  write path (``python -m gcs_sync push FOLDER``, the command line, in a subprocess), and
  the instance makes ONE check (``client.refresh_now()``): its seconds, CPU seconds and
  bucket calls by operation; then ``/simple/<project>/`` of the instance's app (in
  process, served from the view just refreshed) must list the new file.
"""

import collections
import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

TREE = Path(sys.argv[1]).resolve()
sys.path[0] = str(TREE)  # not bench/: the design's own gcs_sync, nothing of the benchmark's

from gcs_sync import Settings, build_app  # noqa: E402

logging.getLogger("gcs_sync").setLevel(logging.ERROR)  # start-up warnings are for operators


def _client():
    app = build_app(Settings.from_env(os.environ))
    return app, app.config["gcs_sync.client"]


def _get(app, path):
    """(status line, body) of a GET served by the WSGI app in this process."""
    from wsgiref.util import setup_testing_defaults

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.input": io.BytesIO(b"")}
    setup_testing_defaults(environ)
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"] = status

    body = b"".join(app(environ, start_response))
    return answer["status"], body


def _after_sync(client):
    """Wait for what a design does in the background after a full sync (catalog snapshot,
    feed expiry), so the bucket is as a running instance leaves it and nothing of it runs
    during a timed check. Today's design has no such step."""
    wait = getattr(client, "wait_for_maintenance", None)
    if wait is not None and not wait(1800):
        raise SystemExit("the maintenance after the pre-sync did not finish within 1800 s")


def presync():
    _, client = _client()
    started = time.perf_counter()
    client.sync()
    seconds = time.perf_counter() - started
    _after_sync(client)
    client.stop()
    return {"seconds": seconds, "maintenance_seconds": time.perf_counter() - started - seconds,
            "calls": dict(client.driver.calls)}


def elsewhere(folders):
    app, client = _client()
    started = time.perf_counter()
    client.sync()
    presync_seconds = time.perf_counter() - started
    _after_sync(client)
    sync_interval = float(os.environ.get("SYNC_INTERVAL") or 5)
    rounds = []
    for folder in map(Path, folders):
        wheel = next(folder.glob("*.whl"))
        project = wheel.name.split("-")[0].replace("_", "-")
        checked = time.monotonic()
        pushed = subprocess.run([sys.executable, "-m", "gcs_sync", "push", "--no-progress", str(folder)],
                                cwd=TREE, env={**os.environ, "PYTHONPATH": str(TREE)}, capture_output=True,
                                text=True, timeout=1800)
        if pushed.returncode != 0:
            raise SystemExit(f"push of {wheel.name} failed (exit {pushed.returncode}):\n"
                             f"{pushed.stdout[-2000:]}\n{pushed.stderr[-2000:]}")
        # refresh_now skips the check while the view is younger than SYNC_INTERVAL
        time.sleep(max(0.0, checked + sync_interval + 0.1 - time.monotonic()))
        before = collections.Counter(client.driver.calls)
        started, cpu = time.perf_counter(), time.process_time()
        client.refresh_now()
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        calls = collections.Counter(client.driver.calls)
        calls.subtract(before)
        status, body = _get(app, f"/simple/{project}/")
        rounds.append({"file": wheel.name, "seconds": seconds, "cpu_seconds": cpu_seconds,
                       "calls": {k: v for k, v in calls.items() if v}, "listed": wheel.name.encode() in body,
                       "status": status})
    client.stop()
    return {"presync_seconds": presync_seconds, "rounds": rounds}


if __name__ == "__main__":
    import gcs_sync

    command = sys.argv[2]
    result = presync() if command == "presync" else elsewhere(sys.argv[3:])
    result["source"] = gcs_sync.__file__
    sys.stdout.write(json.dumps(result) + "\n")
