"""A loopback HTTP proxy that injects faults and latency between a storage SDK and its emulator.

Point google-cloud-storage at it (``STORAGE_EMULATOR_HOST=proxy.url``) or boto3
(``endpoint_url=proxy.url``) and give it the emulator's host and port as upstream. Each
request is forwarded unchanged unless a rule matches it; ``proxy.latency`` adds a fixed
delay to every request, to stand in for the round trip to a real cloud bucket.

Rules (``proxy.add_rule(method, path_regex, action, times)``; the first match applies):

- ``Respond(status, body, headers)``: the server answers an error (503, 429 with
  Retry-After, 500) and the request never reaches the store.
- ``Delay(seconds)``: a slow network or server; forwarded after the wait, so a client
  with a shorter timeout gives up while the store may still apply the request.
- ``Reset()``: the connection dies before the request arrives (client sees a TCP reset).
- ``ResetAfterForward()``: the request lands but the reply is lost on the way back.
- ``Truncate(after_bytes)``: the reply breaks off mid-body (the declared Content-Length
  is kept, so the client can tell).
- ``OneWritePerSecond(window)``: GCS's limit of about one write per second to one object
  name. A write (POST/PUT/PATCH) naming an object that was accepted less than ``window``
  seconds ago is answered 429 with GCS's JSON error (``rateLimitExceeded``) and never
  reaches the store; other requests, and writes whose name cannot be told, are forwarded.
  GCS is modelled (S3 answers 503 SlowDown instead and applies no such per-object limit).
  The object name is read where google-cloud-storage puts it: the ``name`` query parameter
  (media uploads), the JSON metadata of a resumable upload's start, or the JSON part of a
  ``multipart/related`` upload; a resumable upload's data PUTs (``upload_id``) are not
  writes of a name on their own (the start was counted). ``accepted`` and ``throttled``
  list the names, in order.

The proxy keeps the client's Host header rather than naming the upstream: the GCS emulator
builds resumable-upload URLs and each object's mediaLink from it, so they lead back through
the proxy (mediaLink is stored when the object is written: objects written straight to the
emulator are downloaded around the proxy once listed or fetched with get_blob). boto3's
SigV4 signature covers Host too.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Mapping, Optional, Union
from urllib.parse import parse_qs, urlsplit

SOCKET_TIMEOUT = 10.0  # every socket, toward the client and the upstream, so nothing waits forever
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
              "te", "trailer", "transfer-encoding", "upgrade", "expect", "content-length"}


@dataclass(frozen=True)
class Respond:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Delay:
    seconds: float


@dataclass(frozen=True)
class Reset:
    pass


@dataclass(frozen=True)
class ResetAfterForward:
    pass


@dataclass(frozen=True)
class Truncate:
    after_bytes: int


WRITE_METHODS = ("POST", "PUT", "PATCH")
# The body GCS's JSON API answers when one object is written too often.
GCS_RATE_LIMITED = json.dumps({"error": {"code": 429, "message": "The object exceeded the rate limit for object "
                                         "mutation operations (create, update, and delete).",
                                         "errors": [{"message": "rate limit", "domain": "usageLimits",
                                                     "reason": "rateLimitExceeded"}]}}).encode()


@dataclass(eq=False)
class OneWritePerSecond:
    """GCS's one-write-per-second-per-object limit (see the module docstring)."""

    window: float = 1.0
    accepted: list[str] = field(default_factory=list)  # names of writes let through, in order
    throttled: list[str] = field(default_factory=list)  # names of writes answered 429
    _last: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, name: str) -> bool:
        """Whether a write of ``name`` now is within the limit (then it counts as accepted)."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(name)
            if last is not None and now - last < self.window:
                self.throttled.append(name)
                return False
            self._last[name] = now
            self.accepted.append(name)
            return True


def written_object(method: str, path: str, content_type: str, body: bytes) -> Optional[str]:
    """The object name a GCS JSON-API write names, or None (not a write, or not told)."""
    if method not in WRITE_METHODS:
        return None
    query = parse_qs(urlsplit(path).query)
    if "upload_id" in query:
        return None  # the data of a resumable upload: its start named the object
    if query.get("name"):
        return query["name"][0]
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json":
        return _json_name(body)
    if kind == "multipart/related":
        boundary = re.search(r'boundary="?([^";]+)"?', content_type)
        if boundary is None:
            return None
        for part in body.split(b"--" + boundary.group(1).encode()):
            head, _, payload = part.partition(b"\r\n\r\n")
            if b"application/json" in head.lower():
                return _json_name(payload.strip())
    return None


def _json_name(data: bytes) -> Optional[str]:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    name = value.get("name") if isinstance(value, dict) else None
    return name if isinstance(name, str) else None


Action = Union[Respond, Delay, Reset, ResetAfterForward, Truncate, OneWritePerSecond]


@dataclass(eq=False)
class Rule:
    method: Optional[str]
    pattern: re.Pattern
    action: Action
    times: Optional[int] = None  # None: until cleared
    hits: int = 0


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1", port: int = 0):
        self.upstream = (upstream_host, upstream_port)
        self.latency = 0.0
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._requests: list[tuple[str, str]] = []
        self._in_flight = 0
        self._stopping = threading.Event()
        self._server = _Server((host, port), _Handler)
        self._server.block_on_close = False  # stop() must not wait for in-flight requests
        self._server.proxy = self  # type: ignore[attr-defined]
        address = self._server.server_address
        self.host, self.port = str(address[0]), int(address[1])
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes every Delay and latency wait
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_rule(self, method: Optional[str], path_regex: str, action: Action, times: Optional[int] = None) -> Rule:
        rule = Rule(method.upper() if method else None, re.compile(path_regex), action, times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request seen, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def in_flight(self) -> int:
        """Requests taken and not yet answered (a Delay holds its request here until forwarded)."""
        with self._lock:
            return self._in_flight

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _take(self, method: str, path: str) -> Optional[Action]:
        """Record the request (in flight until ``_done``); the action of the first live rule
        matching it, counted as a hit."""
        with self._lock:
            self._requests.append((method, path))
            self._in_flight += 1
            for rule in self._rules:
                live = rule.times is None or rule.hits < rule.times
                if live and rule.method in (None, method) and rule.pattern.search(path):
                    rule.hits += 1
                    return rule.action
        return None

    def _sleep(self, seconds: float) -> bool:
        """Wait, cut short by stop(); True if the proxy is stopping."""
        return self._stopping.wait(seconds) if seconds > 0 else self._stopping.is_set()


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # not socketserver's 5: parallel clients must not be dropped


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # SDKs speak 1.1; every reply carries Content-Length and Connection: close
    timeout = SOCKET_TIMEOUT

    def do_GET(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        self.close_connection = True
        try:
            body = self._read_body()
        except OSError:  # the client went away or timed out: nothing left to tell it
            return
        action = proxy._take(self.command, self.path)
        try:
            self._act(proxy, action, body)
        except OSError:  # as above
            pass
        finally:
            proxy._done()

    def _act(self, proxy: FaultProxy, action: Optional[Action], body: bytes) -> None:
        if proxy._sleep(proxy.latency):
            return  # stopping: drop the request
        if isinstance(action, OneWritePerSecond):
            name = written_object(self.command, self.path, self.headers.get("Content-Type", ""), body)
            if name is not None and not action.admit(name):
                self._reply(429, [("Content-Type", "application/json; charset=UTF-8")], GCS_RATE_LIMITED)
                return
        if isinstance(action, Respond):
            self._reply(action.status, list(action.headers.items()), action.body)
        elif isinstance(action, Reset):
            self._reset()
        elif not (isinstance(action, Delay) and proxy._sleep(action.seconds)):
            status, headers, data = self._forward(proxy.upstream, body)
            if isinstance(action, ResetAfterForward):
                self._reset()
            else:
                keep = action.after_bytes if isinstance(action, Truncate) else None
                self._reply(status, headers, data, keep)

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
            while self.rfile.readline().strip():  # trailers, up to the blank line
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, upstream: tuple[str, int], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send the request upstream on a fresh connection; the full reply, or a 502."""
        dropped = HOP_BY_HOP | {h.strip().lower() for h in self.headers.get("Connection", "").split(",")}
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in dropped]
        if body or "Content-Length" in self.headers or "Transfer-Encoding" in self.headers:
            headers.append(("Content-Length", str(len(body))))
        conn = http.client.HTTPConnection(*upstream, timeout=SOCKET_TIMEOUT)
        try:
            conn.putrequest(self.command, self.path, skip_host="Host" in self.headers, skip_accept_encoding=True)
            for key, value in headers:
                conn.putheader(key, value)
            conn.endheaders(body)
            reply = conn.getresponse()
            data = reply.read()
            out = [(k, v) for k, v in reply.getheaders() if k.lower() not in HOP_BY_HOP]
            # A HEAD reply declares the length of a body it does not send: keep it.
            length = reply.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
            return reply.status, out + [("Content-Length", length)], data
        except (OSError, http.client.HTTPException) as exc:
            message = f"fault proxy: upstream failed: {exc!r}".encode()
            return 502, [("Content-Length", str(len(message)))], message
        finally:
            conn.close()

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes, keep: Optional[int] = None) -> None:
        """Send a reply; with ``keep``, only that many body bytes, as if the line broke."""
        self.send_response_only(status)
        if not any(k.lower() == "content-length" for k, _ in headers):
            headers = headers + [("Content-Length", str(len(body)))]
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body if keep is None else body[:keep])

    def _reset(self) -> None:
        # Linger 0 makes close() send RST rather than FIN; close rfile too, or its reference
        # keeps the socket open and socketserver's shutdown(SHUT_WR) sends a clean FIN first.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.connection.close()

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: tests count requests through proxy.requests
