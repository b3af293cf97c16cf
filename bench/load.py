"""HTTP clients: one new connection per request (pip against gunicorn's sync workers,
which close every connection), and every answer must be a 200 or the run stops.

- ``latencies``: one client, sequential, for ``seconds`` (at least 20, at most 2000 requests).
- ``throughput``: ``clients`` threads as fast as they can for ``seconds``; requests/s.
- ``paced``: one client at a fixed rate over a mix of paths (steady-state bucket calls).
- ``upload``: one ``file_upload`` POST (multipart, no credentials), timed; must answer 200.

``headers`` (e.g. ``Accept: application/vnd.pypi.simple.v1+json``) go with every request of
a ``latencies`` run, which also says which Content-Type the server answered with.
"""

from __future__ import annotations

import dataclasses
import http.client
import itertools
import threading
import time
from typing import Mapping, Optional, Sequence

from testkit.servers import page_text

from .servers import Server

TIMEOUT = 60.0  # above gunicorn's 30 s worker timeout
MIN_REQUESTS = 20
MAX_REQUESTS = 2000


def fetch(server: Server, path: str, timeout: float = TIMEOUT,
          headers: Optional[Mapping[str, str]] = None) -> tuple[int, bytes]:
    """GET on a fresh connection; (status, body). Connection errors propagate (OSError).
    Counted in ``server.requests``, whatever the outcome."""
    status, body, _ = _request(server, "GET", path, timeout=timeout, headers=headers)
    return status, body


def _request(server: Server, method: str, path: str, *, timeout: float = TIMEOUT, body: Optional[bytes] = None,
             headers: Optional[Mapping[str, str]] = None) -> tuple[int, bytes, str]:
    """(status, body, Content-Type) on a fresh connection."""
    server.count(1)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        reply = conn.getresponse()
        return reply.status, reply.read(), reply.getheader("Content-Type", "")
    finally:
        conn.close()


def get_ok(server: Server, path: str, headers: Optional[Mapping[str, str]] = None) -> bytes:
    """The body of a 200; anything else is a BenchError naming the server and path."""
    return _get_ok(server, path, headers)[0]


def _get_ok(server: Server, path: str, headers: Optional[Mapping[str, str]] = None) -> tuple[bytes, str]:
    try:
        status, body, content_type = _request(server, "GET", path, headers=headers)
    except (OSError, http.client.HTTPException) as exc:
        raise server.failure(f"GET {path} failed: {type(exc).__name__}: {exc}") from exc
    if status != 200:
        raise server.failure(f"GET {path} answered {status}, not 200: {page_text(body)!r}")
    return body, content_type


def upload(server: Server, filename: str, data: bytes) -> float:
    """Seconds of one ``file_upload`` POST of ``data`` as ``filename`` (multipart/form-data, as
    twine sends it, without credentials); anything but a 200 is a BenchError."""
    boundary = "gcssyncbenchboundary"
    body = b"".join([
        f'--{boundary}\r\nContent-Disposition: form-data; name=":action"\r\n\r\nfile_upload\r\n'.encode(),
        (f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{filename}"\r\n'
         "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ])
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "User-Agent": "gcs-sync-bench"}
    started = time.perf_counter()
    try:
        status, answer, _ = _request(server, "POST", "/", body=body, headers=headers)
    except (OSError, http.client.HTTPException) as exc:
        raise server.failure(f"upload of {filename} failed: {type(exc).__name__}: {exc}") from exc
    elapsed = time.perf_counter() - started
    if status != 200:
        raise server.failure(f"upload of {filename} answered {status}, not 200: {page_text(answer)!r}")
    return elapsed


def link_count(body: bytes) -> int:
    return body.count(b"<a href=")


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclasses.dataclass(frozen=True)
class Latency:
    p50: float  # seconds
    p99: float
    requests: int
    content_type: str = ""  # of the last answer


def latencies(server: Server, path: str, seconds: float,
              min_requests: int = MIN_REQUESTS, max_requests: int = MAX_REQUESTS,
              headers: Optional[Mapping[str, str]] = None) -> Latency:
    samples: list[float] = []
    content_type = ""
    deadline = time.perf_counter() + seconds
    while len(samples) < max_requests and (len(samples) < min_requests or time.perf_counter() < deadline):
        started = time.perf_counter()
        _, content_type = _get_ok(server, path, headers)
        samples.append(time.perf_counter() - started)
    return Latency(percentile(samples, 50), percentile(samples, 99), len(samples), content_type)


def throughput(server: Server, path: str, clients: int, seconds: float) -> float:
    """Requests/s of ``clients`` concurrent clients over ``seconds``."""
    counts = [0] * clients
    errors: list[BaseException] = []
    stop = threading.Event()
    deadline = time.perf_counter() + seconds

    def client(index: int) -> None:
        try:
            while not stop.is_set() and time.perf_counter() < deadline:
                get_ok(server, path)
                counts[index] += 1
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join(timeout=seconds + TIMEOUT + 5)
    finally:
        stop.set()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    if any(thread.is_alive() for thread in threads):
        raise server.failure(f"a client of GET {path} did not finish within {seconds + TIMEOUT:.0f}s")
    return sum(counts) / elapsed


@dataclasses.dataclass(frozen=True)
class Paced:
    requests: int
    seconds: float
    late: int  # requests that started more than one interval behind schedule

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def paced(server: Server, paths: Sequence[str], rate: float, seconds: float) -> Paced:
    """Requests at ``rate`` per second over ``paths`` in turn, for ``seconds``."""
    interval = 1.0 / rate
    total = int(rate * seconds)
    late = 0
    sent = 0
    started = time.perf_counter()
    for index, path in zip(range(total), itertools.cycle(paths)):
        due = started + index * interval
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        elif -wait > interval:
            late += 1
        get_ok(server, path)
        sent += 1
    return Paced(sent, time.perf_counter() - started, late)


def poll(server: Server, path: str, done, deadline: float, interval: float = 0.02) -> Optional[float]:
    """GET ``path`` every ``interval`` until ``done(status, body)``; the time.monotonic()
    of that answer, or None at the deadline. Refused connections (still booting) and
    non-200 answers are retried."""
    while time.monotonic() < deadline:
        try:
            status, body = fetch(server, path, timeout=max(1.0, deadline - time.monotonic()))
            if done(status, body):
                return time.monotonic()
        except (OSError, http.client.HTTPException):
            pass
        if server.process.poll() is not None:
            raise server.failure(f"gunicorn exited with status {server.process.returncode}")
        time.sleep(interval)
    return None
