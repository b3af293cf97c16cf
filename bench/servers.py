"""Both servers under gunicorn, bound to 127.0.0.1 on a free port, with the same settings
(bench/gunicorn_hooks.py: the repo's gunicorn.conf.py plus hooks; ``-w`` and ``-b`` given
on the command line). Every start is a context manager that stops the server on the way
out, whatever happened.

Peak RSS per worker is VmHWM from /proc/<pid>/status of each gunicorn worker (the master's
children, from /proc/<master>/task/<master>/children): Linux only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator, Optional

from testkit.servers import free_port
from testkit.wait import eventually

from .cgroup import MemoryCgroup
from .errors import BenchError
from .progress import say

REPO = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().with_name("gunicorn_hooks.py")
READY_LINE = "bench: worker {pid} ready"
SOURCE_LINE = re.compile(r"bench: worker \d+ gcs_sync from (\S+)")
STOP_SECONDS = 45  # gunicorn's graceful timeout is 30 s


@dataclasses.dataclass
class Server:
    name: str
    host: str
    port: int
    workers: int
    process: subprocess.Popen
    log_path: Path
    # Every request the benchmark sent, readiness probes included (the denominator of
    # bucket calls per request). Updated under the lock by the load clients.
    requests: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def count(self, requests: int) -> None:
        with self.lock:
            self.requests += requests

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def failure(self, what: str) -> BenchError:
        return BenchError(f"{self.name} server (gunicorn pid {self.process.pid}, port {self.port}): {what}\n"
                          f"--- last lines of {self.log_path} ---\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        pid = self.process.pid
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def peak_rss_mb(self) -> Optional[float]:
        """The largest VmHWM among the workers, in MB (None where /proc is not available)."""
        peaks = []
        for pid in self.worker_pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
            except OSError:
                continue
        return max(peaks) if peaks else None

    def ready_workers(self) -> int:
        log = self.log()
        return sum(READY_LINE.format(pid=pid) in log for pid in self.worker_pids())

    def gcs_sync_sources(self) -> set[str]:
        """The ``gcs_sync/__init__.py`` each worker imported, as its post_worker_init logged it."""
        return set(SOURCE_LINE.findall(self.log()))

    def check_source(self, tree: Path) -> str:
        """That every worker imported ``gcs_sync`` from ``tree`` (a BenchError otherwise); the file."""
        sources = self.gcs_sync_sources()
        expected = str(tree.resolve() / "gcs_sync" / "__init__.py")
        if sources != {expected}:
            raise self.failure(f"its workers imported gcs_sync from {sorted(sources)}, not {expected}")
        return expected

    def stop(self) -> None:
        """SIGTERM (graceful: workers finish their request and run worker_exit), then wait;
        SIGKILL to the whole process group only if that does not end it in time."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_SECONDS)
            return
        except subprocess.TimeoutExpired:
            say(f"{self.name} server did not stop within {STOP_SECONDS}s of SIGTERM; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: only its workers
        self.process.wait(timeout=10)


def gunicorn_command(app: str, port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", str(HOOKS), "-w", str(workers),
            "-b", f"127.0.0.1:{port}", app]


def stock_app(root: Path) -> str:
    return (f"pypiserver:app(roots=[{str(root)!r}], backend_arg=\"simple-dir\", "
            "disable_fallback=True, password_file=\".\", authenticate=[])")


WRAPPER_APP = "main:get_app()"


@contextlib.contextmanager
def launched(name: str, app: str, *, workers: int, env: dict[str, str], cwd: Path,
             log_path: Path, cgroup: Optional[MemoryCgroup] = None) -> Iterator[Server]:
    """Start gunicorn (not waiting for anything), in ``cgroup`` if given; stop it on the
    way out."""
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = gunicorn_command(app, port, workers)
    with open(log_path, "wb") as log_file:
        # A session of its own: Ctrl-C reaches only the benchmark, which then stops it
        # gracefully in the finally below (so worker_exit still runs).
        process = subprocess.Popen(command if cgroup is None else cgroup.wrapped(command), cwd=cwd, env=env,
                                   stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, "127.0.0.1", port, workers, process, log_path)
    try:
        yield server
    finally:
        server.stop()


def wait_until_ready(server: Server, ready: Callable[[Server], bool], seconds: float) -> None:
    """Until every worker has loaded its app and ``ready(server)`` is true."""
    last_error: Optional[BaseException] = None

    def up() -> bool:
        nonlocal last_error
        if server.process.poll() is not None:
            raise server.failure(f"gunicorn exited with status {server.process.returncode} while starting")
        if server.ready_workers() < server.workers:
            return False
        try:
            answered = ready(server)
        except (OSError, BenchError) as exc:
            last_error = exc
            return False
        last_error = None
        return answered

    if eventually(up, seconds):
        return
    detail = f" (last probe: {last_error})" if last_error else ""
    raise server.failure(f"not ready within {seconds:.0f}s: {server.ready_workers()} of {server.workers} "
                         f"workers booted{detail}")


def environment(extra: dict[str, str], drop: tuple[str, ...] = ()) -> dict[str, str]:
    """The benchmark's environment without ``drop`` (the product's own variables), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env
