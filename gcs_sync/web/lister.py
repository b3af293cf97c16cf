"""The listing process: ``python -m gcs_sync.web.lister``, started by the gunicorn master
(gunicorn.conf.py, when FULL_SYNC_PROCESS is on) beside the workers, stopped with it.

It makes the instance's periodic full listings (gcs_sync/sync/lister.py says why) with the
same settings, folder, lock and state as the workers, and the catalog snapshots and feed
expiry that follow them. It serves nothing and builds no index.

It never exits with gunicorn's worker codes 3 or 4 (the master would take either for a
worker that cannot boot and stop the server): 0 when told to stop or when its parent is
gone, 1 after an error, which it logs. Either way the workers then list themselves.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from gcs_sync.auth.password_file import BucketPasswordFile
from gcs_sync.config import Settings
from gcs_sync.drivers import make_driver
from gcs_sync.errors import ConfigError, StorageError
from gcs_sync.logs import configure_logging
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.lister import FullListingLoop
from gcs_sync.web.app import new_client

log = logging.getLogger("gcs_sync.client")  # the name operators' log queries know

EXIT_STOPPED = 0
EXIT_FAILED = 1


# Below the workers, from its first import on (the master starts it so): on a machine with
# few cores its start and its listings would take CPU from them otherwise (the scale
# benchmark's 2 cores: two workers starting or serving, the client, and this).
NICENESS = 10


def main() -> int:
    parent = os.getppid()
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):  # gunicorn's and a terminal's
        signal.signal(signum, lambda *_: stopping.set())
    try:
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
                           parent_alive=lambda: os.getppid() == parent)
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
        client.wait_for_maintenance(30.0)
    return EXIT_STOPPED


if __name__ == "__main__":
    sys.exit(main())
