"""gunicorn settings, read automatically when gunicorn starts in this folder.

Command-line flags override these (App Engine's entrypoint passes ``-b :$PORT``).
"""

import errno
import os
import selectors
import sys
import time
from functools import partial

from gunicorn.glogging import Logger
from gunicorn.http.errors import NoMoreData
from gunicorn.workers.gthread import TConn, ThreadWorker

# Local default matches the README: http://127.0.0.1:8080/. Cloud Run and App Engine set PORT.
bind = f"0.0.0.0:{os.environ['PORT']}" if "PORT" in os.environ else "127.0.0.1:8080"
# Workers share one package folder through a file lock; each holds its own index in
# memory, so more workers cost memory, more threads do not.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threaded workers (BoundedThreadWorker below, gunicorn's gthread): a connection holds a
# thread only while it delivers a request and gets its answer. A sync worker is held by
# any connection until its 30 s timeout: two idle TCP connections, a client trickling its
# headers or a TLS handshake sent to this plain-HTTP port (uv probes https) made every
# other request wait 30 s. Eight threads: a request takes milliseconds of CPU, and up to
# about 20 s of waiting on the bucket for an upload; 2 x 8 = 16 requests at a time per
# instance (app.yaml's max_concurrent_requests, Cloud Run's --concurrency). Threads rather
# than gevent: gevent would need the storage SDKs and the folder lock monkey-patched.
threads = 8
# Seconds a connection may stay idle, before its first request or between requests, before
# it is closed; it holds no thread meanwhile. Also how long a request's head (the request
# line and headers, at most a few KB, one or two packets) may take to arrive once its
# first byte has: a slow or garbage client holds a thread for at most this long.
keepalive = 5
# A request waits on the bucket at most about 2 x STORAGE_TIMEOUT (10 s by default): a
# sibling's sync, then one bucket operation. With threads, gunicorn kills a worker only if
# its main loop (accepting, keep-alive) stops; a request's body may pause at most this
# long between two reads. The cold start runs in a background thread, which this timeout
# does not cover; if the worker dies anyway, the next sync goes on from where the last one
# stopped (its journal).
timeout = 30
# No access log: the app logs one line per request itself (gcs_sync.web.request_log.RequestLog),
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


class BoundedThreadWorker(ThreadWorker):
    """gunicorn's gthread worker, with time bounds for a connection that does not send a
    request (gthread waits for it without end; the sync worker until its timeout):

    - no byte within ``keepalive`` seconds of being accepted: closed (as gthread closes a
      kept-alive connection that stays idle);
    - a request head not complete within ``keepalive`` seconds of its first byte: closed;
    - a TLS handshake as the first bytes: closed at once (this port speaks plain HTTP);
    - a request body that pauses longer than ``timeout``: the read fails.
    """

    def accept(self, server, listener):
        # gthread's accept, with the connection put on the keep-alive clock at once.
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        conn = TConn(self.cfg, sock, client, server)
        self.nr_conns += 1
        conn.set_timeout()
        with self._lock:
            self._keep.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn))

    def on_client_socket_readable(self, conn, client):
        # gthread's, for new connections too (gthread takes only kept-alive ones off the clock).
        with self._lock:
            self.poller.unregister(client)
            try:
                self._keep.remove(conn)
            except ValueError:
                return  # closed by murder_keepalived meanwhile
        self.enqueue_req(conn)

    def handle(self, conn):
        # In a pool thread, from the first byte of a request until its head is parsed.
        reader = conn.parser.unreader.sock
        if not isinstance(reader, _BoundedReads):
            reader = conn.parser.unreader.sock = _BoundedReads(conn.sock, conn.client, self.log)
        reader.start_head(self.cfg.keepalive)
        return super().handle(conn)

    def handle_request(self, req, conn):
        conn.parser.unreader.sock.start_body(self.cfg.timeout)
        return super().handle_request(req, conn)


class _BoundedReads:
    """A connection's socket as gunicorn's request parser reads it (the head, then the
    body), with a deadline for the head and a bound on each pause of the body."""

    def __init__(self, sock, client, log):
        self.sock = sock
        self.client = client
        self.log = log
        self.head_seconds = None
        self.deadline = None  # monotonic time by which the head must be complete
        self.pause = None  # seconds a read of the body may wait
        self.first = True

    def start_head(self, seconds):
        self.head_seconds, self.deadline = seconds, time.monotonic() + seconds

    def start_body(self, pause):
        self.deadline, self.pause = None, pause

    def recv(self, size):
        wait = self.pause if self.deadline is None else self.deadline - time.monotonic()
        if wait is not None and wait <= 0:
            raise self._close(f"no complete request head within {self.head_seconds:g} s")
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(size)
        except TimeoutError:
            if self.deadline is None:
                raise  # a paused body: the app's read fails
            raise self._close(f"no complete request head within {self.head_seconds:g} s") from None
        finally:
            self.sock.settimeout(None)  # blocking, as gthread left it: writes are not bound here
        if self.first and data[:1] == b"\x16":  # a TLS record: a client hello
            raise self._close("a TLS handshake on this plain-HTTP port")
        self.first = False
        return data

    def _close(self, why):
        # gthread closes the connection on NoMoreData, without an answer or a traceback.
        address = self.client[0] if isinstance(self.client, tuple) else self.client
        self.log.info("closed a connection from %s: %s", address, why)
        return NoMoreData(b"")


worker_class = BoundedThreadWorker


def on_starting(server):
    # The settings, and what they name (the start-up check), are checked once, here in the
    # master, before any worker starts: a bad one is one line naming the variable, instead
    # of one per worker and gunicorn's HaltServer traceback. The workers read the same
    # environment (main.get_app).
    if not str(getattr(server.app, "app_uri", "")).startswith("main:"):
        return  # another app under this config (the benchmark's stock pypiserver)
    from gcs_sync.auth.startup import check_startup
    from gcs_sync.config import Settings
    from gcs_sync.errors import ConfigError

    try:
        check_startup(Settings.from_env(os.environ))
    except ConfigError as exc:
        print(f"gcs_sync configuration error: {exc}", file=sys.stderr, flush=True)
        sys.exit(server.APP_LOAD_ERROR)


def when_ready(server):
    # The periodic full listings in a process of their own (gcs_sync/web/lister.py), so
    # that no worker's requests wait for one; FULL_SYNC_PROCESS=false keeps them in the
    # workers. Settings were checked in on_starting. If it exits, the workers list
    # themselves (the listing record they share says when one is due).
    if not str(getattr(server.app, "app_uri", "")).startswith("main:"):
        return
    from gcs_sync.config import Settings
    from gcs_sync.sync.lister import worth_a_process
    from gcs_sync.web.lister import fork  # (the master has imported gcs_sync already)

    settings = Settings.from_env(os.environ)
    if not settings.full_sync_process or not worth_a_process(settings.full_sync_interval, settings.sync_interval):
        return
    try:
        # Forked before the first worker, while the master runs no thread of its own.
        server.gcs_sync_lister = fork(os.getpid())
    except Exception as exc:  # never a reason to stop the server: the workers list then
        server.log.error("could not start the listing process (%s: %s): the workers make the full listings",
                         type(exc).__name__, exc)
        return
    server.log.info("started the listing process (pid %s)", server.gcs_sync_lister.pid)


def on_exit(server):
    lister = getattr(server, "gcs_sync_lister", None)
    if lister is not None and lister.poll() is None:
        lister.terminate()
        try:
            lister.wait(timeout=30)
        except TimeoutError:
            lister.kill()


def post_worker_init(worker):
    # Sync in the background from the moment a worker starts, so a new instance is
    # usually ready before its first request arrives (App Engine scales from zero).
    if "gcs_sync.client" not in worker.wsgi.config:
        return  # another app under this config (the benchmark's stock pypiserver)
    from gcs_sync.web.app import start_warm_up  # here, in the worker: the master stays small

    start_warm_up(worker.wsgi)


def worker_exit(server, worker):
    # A worker told to exit during a long cold start skips the transfers not yet begun,
    # instead of finishing the whole bucket first.
    app = getattr(worker, "wsgi", None)  # None if the app failed to load
    client = app.config.get("gcs_sync.client") if app is not None else None
    if client is not None:
        client.stop()
