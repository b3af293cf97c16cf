"""gunicorn settings, read automatically when gunicorn starts in this folder.

Command-line flags override these (App Engine's entrypoint passes ``-b :$PORT``).
"""

import os

from gunicorn.glogging import Logger

# Local default matches the README: http://127.0.0.1:8080/. Cloud Run and App Engine set PORT.
bind = f"0.0.0.0:{os.environ['PORT']}" if "PORT" in os.environ else "127.0.0.1:8080"
# Sync workers share one package folder through a file lock; two keep one free while the
# other waits on the bucket.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# One thread per worker (gunicorn's sync worker): a request takes milliseconds, and each
# worker holds its own index in memory, so concurrency comes from workers (README:
# "Deploying"). Slow clients are buffered by the platform's front end or by nginx.
threads = 1
# A request waits on the bucket at most about 2 x STORAGE_TIMEOUT (10 s by default): a
# sibling's sync, then one bucket operation. The cold start runs in a background thread,
# which this timeout does not cover; if the worker dies anyway, the next sync goes on from
# where the last one stopped (its journal).
timeout = 30
# No access log: the app logs one line per request itself (gcs_sync.logs.RequestLog),
# with the user's name and never the credentials (gunicorn's "%(r)s" is the raw request
# line, which may hold a URL's user:password).
accesslog = None


class TierLogger(Logger):
    """gunicorn's own lines (booting, worker exits, timeouts) in the format of the app's:
    Cloud Logging JSON when TIER is prod. TIER is read leniently here, in the master,
    before the app validates it: anything but prod keeps gunicorn's text."""

    def setup(self, cfg):
        super().setup(cfg)
        if os.environ.get("TIER", "").strip().lower() == "prod":
            from gcs_sync.logs import CloudLoggingFormatter

            for handler in self.error_log.handlers:
                handler.setFormatter(CloudLoggingFormatter())


logger_class = TierLogger


def post_worker_init(worker):
    # Sync in the background from the moment a worker starts, so a new instance is
    # usually ready before its first request arrives (App Engine scales from zero).
    if "gcs_sync.client" not in worker.wsgi.config:
        return  # another app under this config (the benchmark's stock pypiserver)
    from gcs_sync.app import start_warm_up  # here, in the worker: the master stays small

    start_warm_up(worker.wsgi)


def worker_exit(server, worker):
    # A worker told to exit during a long cold start skips the transfers not yet begun,
    # instead of finishing the whole bucket first.
    app = getattr(worker, "wsgi", None)  # None if the app failed to load
    client = app.config.get("gcs_sync.client") if app is not None else None
    if client is not None:
        client.stop()
