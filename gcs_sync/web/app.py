"""Assemble the stock pypiserver app with the bucket sync around it."""

from __future__ import annotations

import json
import logging
import threading
from typing import Optional

import pypiserver
from pypiserver.backend import BackendProxy
from pypiserver.bottle_wrapper import Bottle, request, response

from gcs_sync.auth.htpasswd import HtpasswdChecker
from gcs_sync.auth.password_file import BucketPasswordFile
from gcs_sync.auth.startup import Started, check_startup
from gcs_sync.config import Settings
from gcs_sync.drivers import FileStoreDriver, make_driver
from gcs_sync.errors import StorageUnavailable
from gcs_sync.sync.client import StorageClient
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.heap import return_large_blocks_promptly
from gcs_sync.sync.cache import FileCache
from gcs_sync.sync.readiness import ReadinessStatus, is_ready, readiness_answer
from gcs_sync.web.backend import SyncedFolderBackend
from gcs_sync.web.body_guard import RequestBodyGuard
from gcs_sync.web.forwarded import TrustedForwardedHeaders
from gcs_sync.web.guards import (
    XMLRPC_ENDPOINT,
    XMLRPC_MAX_BODY,
    XmlRpcGuard,
    refuse_control_characters,
    refuse_unusable_host,
)
from gcs_sync.web.index import PackageIndex
from gcs_sync.web.package_files import PackageFilesPlugin, check_package_files
from gcs_sync.web.plugin import BucketSyncPlugin
from gcs_sync.web.request_log import RequestLog
from gcs_sync.web.simple_api import SimpleApiPlugin

log = logging.getLogger("gcs_sync.app")  # the name operators' log queries know

# JSON: "starting" (503) until the first sync has listed the bucket; then "ok", or
# "degraded" with the reason while the bucket cannot be reached (reads go on locally).
READINESS_ENDPOINT = "/ready"
# App Engine's warmup request (app.yaml: inbound_services: warmup) waits for the first
# sync, so the instance gets traffic only once it serves the whole index. At most this
# long: well inside gunicorn's 30 s worker timeout; a longer cold start answers 503 and
# App Engine sends traffic anyway (requests then serve what is already in place).
WARMUP_ENDPOINT = "/_ah/warmup"
WARMUP_WAIT_SECONDS = 20.0


def build_app(settings: Settings, driver: Optional[FileStoreDriver] = None, started: Optional[Started] = None) -> Bottle:
    """The app for ``settings``. Raises StorageError if the bucket cannot be used (see
    ``check_bucket``), ConfigError or StorageError if PASSWORD_FILE names a bucket object
    that is missing, unusable or unreadable (see ``BucketPasswordFile.load``), and
    ConfigError from the start-up check unless the caller ran it (``started``): the caller
    stops the start."""
    return_large_blocks_promptly()  # before the cold start's large transients (heap.py)
    driver = driver or make_driver(settings)
    check_bucket(driver)
    started = started or check_startup(settings)  # unless the caller ran it: ConfigError
    # Redirect mode stops here (ConfigError) if no URL can be signed; cache mode warns.
    can_sign = check_package_files(settings, driver)
    folder = PackageFolder(settings.local_package_directory)
    # PASSWORD_FILE in the bucket: pypiserver reads a local copy that follows the object.
    passwords = BucketPasswordFile.for_settings(settings, folder, driver.url)
    client = new_client(settings, driver, folder, passwords)
    # pypiserver spells "no authentication at all" as both settings being ".".
    password_file = "." if not settings.authenticate else settings.password_file
    if passwords is not None:
        password_file = str(passwords.load())
    if password_file is None:
        log.warning("PASSWORD_FILE is not set: the index is read-only (uploads and removals get 401/403)")
    app = pypiserver.app(
        roots=[folder.path],
        password_file=password_file,
        authenticate=list(settings.authenticate),
        overwrite=settings.overwrite,
        disable_fallback=settings.disable_fallback,
        fallback_url=settings.fallback_url,
        hash_algo=settings.hash_algo,
        health_endpoint=settings.health_endpoint,
        cache_control=settings.cache_control,
        welcome_msg=started.welcome_msg,
        backend_arg="simple-dir",
    )
    config = app._pypiserver_config
    if password_file not in (None, "."):
        # Our own check of the same file: accepted schemes only, no timing oracle, a short
        # cache of good logins, a bound on failed ones (auth/htpasswd.py).
        config.auther = HtpasswdChecker(password_file)
    # pypiserver 2.4 has no backend entry point; replacing the proxied backend is the
    # supported seam (its own tests do the same).
    # The index reads the client's copy of the state: each entry is held once per worker.
    # Every mode lists catalogued files: a mirror that starts from a catalog snapshot holds
    # some only in the bucket until its fill brings them.
    index = PackageIndex(folder, client.tracked_state, settings.hash_algo)
    # Files (cache mode; a mirror's not yet here) and core metadata files fetched from the bucket.
    cache = FileCache(folder.control / "cache", settings.cache_max_bytes)
    config.backend = BackendProxy(SyncedFolderBackend(config, folder, index, client.refresh_now))
    # For gunicorn hooks and tools that run inside the worker (warm-up, benchmarks).
    app.config["gcs_sync.client"] = client
    app.config["gcs_sync.index"] = index
    app.config["gcs_sync.passwords"] = passwords
    app.add_hook("before_request", refuse_control_characters)
    app.add_hook("before_request", refuse_unusable_host)
    # Installed first, so it wraps the others: the body is checked before anything else.
    app.install(RequestBodyGuard(
        settings.max_upload_size, {XMLRPC_ENDPOINT: (XMLRPC_MAX_BODY, "the XML-RPC limit")},
    ))
    app.install(XmlRpcGuard())
    app.install(
        BucketSyncPlugin(
            client,
            overwrite=settings.overwrite,
            # Readiness and warmup run their own checks; health and the favicon none.
            unsynced_routes=(settings.health_endpoint, "/favicon.ico", READINESS_ENDPOINT, WARMUP_ENDPOINT),
            read_only_posts=(XMLRPC_ENDPOINT,),
        )
    )
    # Installed last, so it is the innermost: it runs after the freshness check, around
    # pypiserver's own /simple/ routes (auth included), and renders their pages from the
    # index (PEP 691 JSON, PEP 658/700/714 fields, PEP 592 yanks).
    app.install(SimpleApiPlugin(config))
    # Also inside the freshness check: the download route answers from the index that
    # check keeps current, with a redirect or the cache unless PACKAGE_FILES=mirror.
    app.install(PackageFilesPlugin(config, settings, index, driver, cache, can_sign=can_sign))

    def may_see_details() -> bool:
        if settings.ready_details == "public":
            return True
        credentials = request.auth  # (user, password) from a Basic header, else None
        if credentials is None or password_file in (None, "."):
            return False  # without a password file nobody is "authenticated"
        return bool(config.auther(*credentials))

    def readiness_report(warmup: bool = False) -> str:
        # The status first: a sync that ends in between is then counted (its files are
        # recorded before it marks the view checked), never "ok" with the files not yet read.
        status = client.status()
        index.refresh()
        report = readiness_answer(status, len(index), with_details=may_see_details())
        report["package_files"] = settings.package_files
        if settings.package_files == "mirror":
            # Files a cold start's fill has not brought yet (served through the cache
            # meanwhile, so not during a bucket outage): 0 once the folder is complete.
            report["files_not_here_yet"] = index.not_held()
        else:
            report["cache"] = cache.usage()
        response.content_type = "application/json"
        response.status = 200 if is_ready(report, warmup=warmup) else 503
        return json.dumps(report)

    @app.route(READINESS_ENDPOINT)
    def readiness() -> str:
        # Never blocks on a cold start: until the first sync it starts one in the background
        # (if the gunicorn hook has not) and answers 503 at once. After that it runs the
        # usual freshness check, so a probe also keeps an idle instance current and notices
        # an outage ("degraded").
        if client.status()["status"] == ReadinessStatus.STARTING:
            start_warm_up(app)
        else:
            client.ensure_fresh()
        return readiness_report()

    # Anyone may call the warmup route: one caller per worker waits, the others get the
    # current state at once (503 while starting), so callers cannot hold every thread.
    warmup_waiter = threading.Lock()

    @app.route(WARMUP_ENDPOINT)
    def warmup() -> str:
        start_warm_up(app)
        if warmup_waiter.acquire(blocking=False):
            try:
                client.wait_until_started(WARMUP_WAIT_SECONDS)
            finally:
                warmup_waiter.release()
        return readiness_report(warmup=True)

    # Bottle's __call__ hands each request to app.wsgi: wrapped there, every request is
    # logged with its final answer, and the app stays the Bottle (its config, for hooks).
    # Inside the log, the app sees no forwarded header the peer may not set, so
    # pypiserver's redirects stay on the index's own host (forwarded.py).
    app.wsgi = RequestLog(TrustedForwardedHeaders(app.wsgi, settings.forwarded_allow_ips))
    log.info(
        "serving %s from %s (backend %s, sync every %gs, package files: %s)",
        settings.store_url, folder.path, settings.storage_backend, settings.sync_interval, settings.package_files,
    )
    return app


def new_client(settings: Settings, driver: FileStoreDriver, folder: PackageFolder,
               passwords: Optional[BucketPasswordFile]) -> StorageClient:
    """The instance's sync client for ``settings``: a worker's, or the listing process's."""
    return StorageClient(
        driver,
        folder,
        sync_interval=settings.sync_interval,
        full_sync_interval=settings.full_sync_interval,
        feed_clock_skew=settings.feed_clock_skew,
        feed_retention=settings.feed_retention,
        # cache and redirect: the sync catalogues the bucket's files and fetches none.
        catalog=settings.package_files != "mirror",
        # mirror: ready from a catalog snapshot; the files follow in the background.
        fill_in_background=settings.package_files == "mirror",
        concurrency=settings.sync_concurrency,
        # A request waiting for a sibling's sync must still finish well within
        # gunicorn's 30 s worker timeout, after a bucket operation of its own.
        lock_timeout=settings.storage_timeout,
        storage_timeout=settings.storage_timeout,
        pending_expiry=settings.pending_upload_expiry,
        push_local_changes=settings.push_local_changes,
        after_check=None if passwords is None else passwords.after_check,
    )


def check_bucket(driver: FileStoreDriver) -> None:
    """Stop the start if the bucket is missing or these credentials may not list it:
    that is a configuration to fix, and no request could succeed. An outage
    (StorageUnavailable, after STORAGE_TIMEOUT of retries) is not: the instance starts,
    serves its local copy and syncs once the bucket answers."""
    try:
        driver.check_bucket()
    except StorageUnavailable as exc:
        log.error("the bucket did not answer at start-up; starting anyway, serving the local copy, "
                  "and syncing once it answers: %s", exc)


def start_warm_up(app: Bottle) -> None:
    """In a new worker: sync, then build the worker's index (a full read of the state, a
    second or two at 100,000 files), in the background rather than in a first request."""
    index: PackageIndex = app.config["gcs_sync.index"]
    app.config["gcs_sync.client"].start_warm_up(then=index.refresh)
