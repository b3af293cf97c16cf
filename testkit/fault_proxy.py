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

The proxy keeps the client's Host header rather than naming the upstream: the GCS emulator
builds resumable-upload URLs and each object's mediaLink from it, so they lead back through
the proxy (mediaLink is stored when the object is written: objects written straight to the
emulator are downloaded around the proxy once listed or fetched with get_blob). boto3's
SigV4 signature covers Host too.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Mapping, Optional, Union

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


Action = Union[Respond, Delay, Reset, ResetAfterForward, Truncate]


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
