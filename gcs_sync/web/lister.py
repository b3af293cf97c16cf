"""The listing process: forked by the gunicorn master (gunicorn.conf.py, when
FULL_SYNC_PROCESS is on) beside the workers, before them, and stopped with it; also
``python -m gcs_sync.web.lister MASTER_PID`` to run it by hand.

Forked, not started anew: it shares the master's memory of every module imported (a new
interpreter would hold its own 24 MB of them), and the master runs no thread of its own
then, so the fork is safe.

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
import functools
import logging
import os
import signal
import sys
import threading
import time
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
_PR_SET_NAME = 15
PROCESS_NAME = "gcs-sync-lister"  # at most 15 bytes (the kernel's limit)


def set_up_child() -> None:
    """What the listing process does first: its niceness, SIGTERM when the master dies
    (Linux; elsewhere the parent check), and PROCESS_NAME as its name (what ``ps -o comm``,
    ``top`` and ``pgrep`` show; its command line is the master's)."""
    os.nice(NICENESS)
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        prctl(_PR_SET_NAME, PROCESS_NAME.encode())


def _set_parent_death_signal() -> None:
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _prctl() -> Optional[Callable[..., int]]:
    """libc's prctl; None where there is none (not Linux: the loops' looks at their parent
    end them)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m gcs_sync.web.lister MASTER_PID", file=sys.stderr)
        return EXIT_FAILED
    master = int(argv[0])
    stopping = threading.Event()
    loop: Optional[FullListingLoop] = None

    def stop(signum: int, frame: object) -> None:
        stopping.set()
        if loop is not None:
            loop.client.stop()  # a listing under way skips the transfers not begun

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):  # gunicorn's and a terminal's
        signal.signal(signum, stop)
    if os.getppid() != master:
        return EXIT_STOPPED  # the master is gone already (it died while this one started)
    try:
        return_large_blocks_promptly()  # a listing's transients given back (heap.py)
        settings = Settings.from_env(os.environ)
        configure_logging(settings)

        def make_client() -> StorageClient:
            driver = make_driver(settings)
            folder = PackageFolder(settings.local_package_directory)
            passwords = BucketPasswordFile.for_settings(settings, folder, driver.url)
            return new_client(settings, driver, folder, passwords)

        client = make_client()  # here: when a listing is due (it reads a record, nothing more)
    except (ConfigError, StorageError, OSError) as exc:
        logging.basicConfig()
        log.error("the listing process cannot start (%s): the workers make the full listings themselves", exc)
        return EXIT_FAILED
    loop = FullListingLoop(client, full_sync_interval=settings.full_sync_interval,
                           sync_interval=settings.sync_interval, stopping=stopping,
                           parent_alive=lambda: os.getppid() == master,
                           apart=functools.partial(list_in_a_child, make_client=make_client))
    log.info("listing process %d: full listings of %s about every %gs (FULL_SYNC_INTERVAL), for the workers",
             os.getpid(), settings.store_url, settings.full_sync_interval)
    try:
        loop.run()
    except Exception:  # a bug: logged with its traceback; the workers take over the listings
        log.exception("the listing process failed after %d listings: the workers make the full listings "
                      "themselves", loop.listings)
        return EXIT_FAILED
    finally:
        loop.client.stop()
    return EXIT_STOPPED


def list_in_a_child(loop: FullListingLoop, make_client: Callable[[], StorageClient]) -> bool:
    """One listing of ``loop`` in a child process (forked: it has this one's memory), with
    a client of its own (``make_client``: a lock object must not cross a fork), and
    whether it succeeded. A listing at 50,000 files builds some 80 MB of objects for a
    second or two; in a process that goes on, the few kept from among them (a log
    record's, a cache's) keep whole arenas of its heap, and it grew by MBs a listing.
    The child ends with its listing; told to stop, so is it (SIGTERM: the sync skips the
    transfers not begun), and it gets SIGTERM if this process dies. In this process
    instead while it runs a thread besides this one (a fork would copy the locks that
    thread holds)."""
    if threading.active_count() > 1:
        return loop.list_here()
    # What happens in the middle of a listing cannot be told, so as for a worker that dies
    # mid-sync: the next listing goes on from where it stopped (its journal, the lock).
    lister = os.getpid()
    pid = os.fork()
    if not pid:
        code = EXIT_FAILED
        try:
            try:
                _set_parent_death_signal()
                loop.parent_alive = lambda: os.getppid() == lister
                loop.client = make_client()  # (main's SIGTERM handler stops this one)
                code = EXIT_STOPPED if loop.list_here() else EXIT_FAILED
            except BaseException:  # anything at all: logged, and this process ends here
                log.exception("a full listing of the listing process failed")
            finally:
                logging.shutdown()  # its lines written out: no exit handler runs after os._exit
        finally:
            os._exit(code)
    told = killed = None
    while True:
        ended, status = os.waitpid(pid, os.WNOHANG)
        if ended:
            return os.waitstatus_to_exitcode(status) == EXIT_STOPPED
        if told is None and (loop.stopping.is_set() or not loop.parent_alive()):
            told = time.monotonic()
            _signal(pid, signal.SIGTERM)
        elif told is not None and killed is None and time.monotonic() - told > STOP_SECONDS:
            killed = True
            _signal(pid, signal.SIGKILL)
        time.sleep(_WAIT_POLL_SECONDS)


STOP_SECONDS = 30  # a listing told to stop may finish its transfers in flight this long
_WAIT_POLL_SECONDS = 0.05


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # ended meanwhile: the next wait says how


# The signals gunicorn's master handles (its Arbiter.SIGNALS, and SIGCHLD): the child
# inherits those handlers, which would act as a master; ``main`` sets its own for three.
_MASTER_SIGNALS = ("SIGHUP", "SIGQUIT", "SIGINT", "SIGTERM", "SIGTTIN", "SIGTTOU", "SIGUSR1", "SIGUSR2", "SIGWINCH",
                   "SIGCHLD")


def fork(master: int) -> "ForkedLister":
    """Fork the listing process from the master (``master``, this process, with no thread
    of its own running). The child closes every file the master has open but its standard
    streams (its listening sockets, its pipe, its log files: as a new process started with
    ``Popen`` had none of them), runs ``main`` and exits with its code, never returning
    into the master's code. Raises OSError if the fork fails, RuntimeError if this process
    runs a thread besides this one (a fork would copy the locks that thread holds)."""
    if threading.active_count() > 1:
        raise RuntimeError(f"the master runs {threading.active_count() - 1} threads of its own: "
                           f"{', '.join(t.name for t in threading.enumerate() if t is not threading.current_thread())}")
    pid = os.fork()
    if pid:
        return ForkedLister(pid)
    code = EXIT_FAILED
    try:
        try:
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))
            for name in _MASTER_SIGNALS:
                signal.signal(getattr(signal, name), signal.SIG_DFL)
            set_up_child()
            code = main([str(master)])
        except SystemExit as exc:  # (main returns its code; anything it calls might exit)
            code = exc.code if isinstance(exc.code, int) else EXIT_FAILED
        except BaseException:  # anything at all: logged, and this process still ends here
            log.exception("the listing process failed: the workers make the full listings themselves")
        finally:
            logging.shutdown()  # its lines written out: no exit handler runs after os._exit
    finally:
        os._exit(code)  # never into the master's stack, nor its exit handlers


class ForkedLister:
    """The master's handle of the forked listing process (what it asked of ``Popen``)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        """Its exit code once it has ended (0 if the master's reaping took it first), else None."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by gunicorn's own waitpid(-1)
                self.returncode = 0
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def terminate(self) -> None:
        self._send(signal.SIGTERM)

    def kill(self) -> None:
        self._send(signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        """Its exit code; TimeoutError if it runs on for ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the listing process {self.pid} still runs after {timeout:g}s")
            time.sleep(0.05)
        assert self.returncode is not None
        return self.returncode

    def _send(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass  # ended meanwhile


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
