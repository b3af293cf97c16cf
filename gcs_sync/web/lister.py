"""The listing process: ``python -m gcs_sync.web.lister MASTER_PID``, started by the gunicorn
master (gunicorn.conf.py, when FULL_SYNC_PROCESS is on) beside the workers, stopped with it.

It makes the instance's periodic full listings (gcs_sync/sync/lister.py says why) with the
same settings, folder, lock and state as the workers, and the catalog snapshots and feed
expiry that follow them. It serves nothing and builds no index.

It ends with its master: told to stop (SIGTERM from ``on_exit``), by the kernel when the
master dies (Linux's parent-death signal, set as it starts), or at its next look (every
0.2 s) if its parent is no longer MASTER_PID. It never exits with gunicorn's worker codes
3 or 4 (the master would take either for a worker that cannot boot and stop the server):
0 when stopped, 1 after an error, which it logs. Either way the workers then list
themselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
from typing import Callable, Optional, Sequence

from gcs_sync.auth.password_file import BucketPasswordFile
from gcs_sync.config import Settings
from gcs_sync.drivers import make_driver
from gcs_sync.errors import ConfigError, StorageError
from gcs_sync.logs import configure_logging
from gcs_sync.sync.client import StorageClient
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.heap import return_large_blocks_promptly
from gcs_sync.sync.lister import FullListingLoop
from gcs_sync.web.app import new_client

log = logging.getLogger("gcs_sync.client")  # the name operators' log queries know

EXIT_STOPPED = 0
EXIT_FAILED = 1
# Below the workers, from its first import on: on a machine with few cores its start and
# its listings would take CPU from them otherwise (the scale benchmark's 2 cores: two
# workers, the client, and this). Not far below: it holds the folder lock while it lists,
# and the workers wait for that lock.
NICENESS = 5
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def child_setup() -> Callable[[], None]:
    """What the master runs in the child between fork and exec (``Popen``'s preexec_fn):
    the niceness, and SIGTERM when the master dies (Linux; elsewhere the parent check)."""
    prctl = None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        pass  # not Linux: the loop's look at its parent ends it

    def setup() -> None:
        os.nice(NICENESS)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return setup


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m gcs_sync.web.lister MASTER_PID", file=sys.stderr)
        return EXIT_FAILED
    master = int(argv[0])
    stopping = threading.Event()
    client: Optional[StorageClient] = None

    def stop(signum: int, frame: object) -> None:
        stopping.set()
        if client is not None:
            client.stop()  # a listing under way skips the transfers not begun

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):  # gunicorn's and a terminal's
        signal.signal(signum, stop)
    if os.getppid() != master:
        return EXIT_STOPPED  # the master is gone already (it died while this one started)
    try:
        return_large_blocks_promptly()  # a listing's transients given back (heap.py)
        settings = Settings.from_env(os.environ)
        configure_logging(settings)
        driver = make_driver(settings)
        folder = PackageFolder(settings.local_package_directory)
        passwords = BucketPasswordFile.for_settings(settings, folder, driver.url)
        client = new_client(settings, driver, folder, passwords)
    except (ConfigError, StorageError, OSError) as exc:
        logging.basicConfig()
        log.error("the listing process cannot start (%s): the workers make the full listings themselves", exc)
        return EXIT_FAILED
    loop = FullListingLoop(client, full_sync_interval=settings.full_sync_interval,
                           sync_interval=settings.sync_interval, stopping=stopping,
                           parent_alive=lambda: os.getppid() == master)
    log.info("listing process %d: full listings of %s about every %gs (FULL_SYNC_INTERVAL), for the workers",
             os.getpid(), settings.store_url, settings.full_sync_interval)
    try:
        loop.run()
    except Exception:  # a bug: logged with its traceback; the workers take over the listings
        log.exception("the listing process failed after %d listings: the workers make the full listings "
                      "themselves", loop.listings)
        return EXIT_FAILED
    finally:
        client.stop()
    return EXIT_STOPPED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
