"""The peers of the scale figures: devpi-server and simple-repository-server, each in a venv
of its own (never the project's), pinned here and recorded in the output.

The venvs live in ``$XDG_CACHE_HOME/gcs-sync-bench/venvs/NAME-VERSION`` (default
``~/.cache``), made with ``python -m venv`` and ``pip install NAME==VERSION`` on first use
and reused after. If one cannot be made (no network, a failed build), ``peer_python`` says
why and the benchmark's rows for that peer say SKIPPED with the reason.

- devpi-server: ``devpi-init --no-root-pypi`` in a server folder, ``devpi-server
  --offline-mode`` on it, an index ``root/dev`` (volatile, no bases) made and filled through
  devpi's HTTP API (login, PUT of the index, ``file_upload`` POSTs from a few threads: the
  way its client uploads). Cold start: the server restarted on its existing folder until
  ``/root/dev/+simple/proj-000/`` lists all its files and ``/root/dev/+simple/`` every
  project.
- simple-repository-server: ``simple-repository-server DIR`` serves a folder with one
  sub-folder per (normalized) project; made of hard links to the generated files. Cold
  start: until ``/simple/proj-000/`` lists all its files and ``/simple/`` every project.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, Optional

from testkit.servers import free_port

from .errors import BenchError
from .progress import say

DEVPI = {"devpi-server": "6.20.3"}
SRS = {"simple-repository-server": "0.10.0"}
DEVPI_PASSWORD = "bench"
DEVPI_INDEX = "root/dev"
INSTALL_SECONDS = 600
STOP_SECONDS = 30


def venv_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gcs-sync-bench" / "venvs"


def peer_python(packages: dict[str, str]) -> tuple[Optional[Path], str]:
    """(the venv's python, "name==version ...") or (None, why not)."""
    pins = " ".join(f"{name}=={version}" for name, version in packages.items())
    first, version = next(iter(packages.items()))
    folder = venv_root() / f"{first}-{version}"
    python = folder / "bin" / "python"
    marker = folder / ".bench-installed"
    if marker.is_file() and python.exists():
        return python, pins
    say(f"peers: installing {pins} into {folder}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        base = getattr(sys, "_base_executable", sys.executable)
        made = subprocess.run([base, "-m", "venv", "--clear", str(folder)], capture_output=True, text=True,
                              timeout=INSTALL_SECONDS)
        if made.returncode != 0:
            return None, f"SKIPPED: python -m venv failed: {made.stderr.strip()[-300:]}"
        installed = subprocess.run([str(python), "-m", "pip", "install", "-q", *pins.split()], capture_output=True,
                                   text=True, timeout=INSTALL_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"SKIPPED: installing {pins} failed: {type(exc).__name__}: {exc}"
    if installed.returncode != 0:
        return None, f"SKIPPED: pip install {pins} failed: {installed.stderr.strip()[-300:]}"
    marker.write_text(pins, encoding="utf-8")
    return python, pins


@dataclasses.dataclass
class PeerServer:
    name: str
    port: int
    process: subprocess.Popen
    log_path: Path
    simple_prefix: str  # "/simple" or "/root/dev/+simple"
    started: float  # time.monotonic() of the launch
    requests: int = 0  # what the load clients count (bench.load's Server protocol)

    host = "127.0.0.1"

    def count(self, requests: int) -> None:
        self.requests += requests

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def failure(self, what: str) -> BenchError:
        return BenchError(f"{self.name} (pid {self.process.pid}, port {self.port}): {what}\n"
                          f"--- last lines of {self.log_path} ---\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: only its processes
            self.process.wait(timeout=10)


@contextlib.contextmanager
def _launched(name: str, command: list[str], log_path: Path, prefix: str, port: int) -> Iterator[PeerServer]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    server = PeerServer(name, port, process, log_path, prefix, started)
    try:
        yield server
    finally:
        server.stop()


# -- simple-repository-server ------------------------------------------------------------


def srs_folder(files: Path, names: tuple[str, ...], target: Path) -> Path:
    """``target/<project>/<file>``: hard links to the generated files, as the server wants them."""
    for name in names:
        project = name.split("-")[0].replace("_", "-").lower()
        folder = target / project
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / name
        if not link.exists():
            os.link(files / name, link)
    return target


def srs_server(python: Path, folder: Path, log_path: Path) -> contextlib.AbstractContextManager[PeerServer]:
    port = free_port()
    command = [str(python.parent / "simple-repository-server"), "--host", "127.0.0.1", "--port", str(port),
               str(folder)]
    return _launched("simple-repository-server", command, log_path, "/simple", port)


# -- devpi-server ------------------------------------------------------------------------


def devpi_server(python: Path, serverdir: Path, log_path: Path) -> contextlib.AbstractContextManager[PeerServer]:
    """devpi-server on ``serverdir`` (made with devpi-init if it is not there yet)."""
    if not (serverdir / ".serverversion").exists():
        made = subprocess.run([str(python.parent / "devpi-init"), "--serverdir", str(serverdir), "--no-root-pypi",
                               "--root-passwd", DEVPI_PASSWORD], capture_output=True, text=True, timeout=120)
        if made.returncode != 0:
            raise BenchError(f"devpi-init --serverdir {serverdir} failed: {made.stdout[-1000:]}{made.stderr[-1000:]}")
    port = free_port()
    command = [str(python.parent / "devpi-server"), "--serverdir", str(serverdir), "--host", "127.0.0.1",
               "--port", str(port), "--offline-mode"]
    return _launched("devpi-server", command, log_path, f"/{DEVPI_INDEX}/+simple", port)


def _http(server: PeerServer, method: str, path: str, data: Optional[bytes] = None,
          headers: Optional[dict[str, str]] = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=data, method=method,
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def devpi_cache(python: Path, folder: Path, names: tuple[str, ...]) -> tuple[Path, Path]:
    """(server folder, list of the files loaded into it) kept beside the venvs, keyed by the
    files' names and sizes (the generator is deterministic: the same sizes, the same bytes)."""
    key = hashlib.sha256("".join(f"{n}:{(folder / n).stat().st_size}\n" for n in names).encode()).hexdigest()[:16]
    base = venv_root().parent / f"devpi-{DEVPI['devpi-server']}-{len(names)}-{key}"
    base.mkdir(parents=True, exist_ok=True)
    return base / "serverdir", base / "loaded.txt"


def devpi_fill(server: PeerServer, folder: Path, names: tuple[str, ...], deadline: float,
               threads: int = 4, done: Callable[[str], object] = lambda name: None) -> list[str]:
    """Log in as root, make ``root/dev`` and upload ``names`` (in order) until done or the
    deadline (time.monotonic()); the names uploaded. Every answer must be a 200."""
    status, body = _http(server, "POST", "/+login", json.dumps({"user": "root", "password": DEVPI_PASSWORD}).encode(),
                         {"Content-Type": "application/json", "Accept": "application/json"})
    if status != 200:
        raise server.failure(f"login answered {status}: {body[:300]!r}")
    token = json.loads(body)["result"]["password"]
    auth = {"X-Devpi-Auth": base64.b64encode(f"root:{token}".encode()).decode(), "Accept": "application/json"}
    status, body = _http(server, "GET", f"/{DEVPI_INDEX}", headers={"Accept": "application/json"})
    if status != 200:  # a server folder loaded by an earlier run has it
        status, body = _http(server, "PUT", f"/{DEVPI_INDEX}", json.dumps({"type": "stage", "bases": [],
                                                                           "volatile": True}).encode(),
                             {**auth, "Content-Type": "application/json"})
    if status != 200:
        raise server.failure(f"creating {DEVPI_INDEX} answered {status}: {body[:300]!r}")

    lock = threading.Lock()

    def upload(name: str) -> bool:
        if time.monotonic() > deadline:
            return False
        project, version = name.split("-")[0].replace("_", "-"), name.split("-")[1]
        boundary = "gcssyncbench"
        fields = ((":action", "file_upload"), ("name", project), ("version", version))
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in fields]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{name}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + (folder / name).read_bytes() + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        status, body = _http(server, "POST", f"/{DEVPI_INDEX}/", b"".join(parts),
                             {**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"})
        if status != 200:
            raise server.failure(f"upload of {name} answered {status}: {body[:300]!r}")
        with lock:
            done(name)
        return True

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return [name for name, done in zip(names, pool.map(upload, names)) if done]
