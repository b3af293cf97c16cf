"""The fault proxy itself: plain forwarding against a local echo server, then each action
as google-cloud-storage (against gcp-storage-emulator) and boto3 (against moto) see it."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import urlsplit

import pytest

from testkit.fault_proxy import (Delay, FaultProxy, OneWritePerSecond, Reset, ResetAfterForward, Respond, Truncate,
                                 written_object)
from testkit.wait import eventually

pytestmark = pytest.mark.slow  # the SDKs under injected faults: retries and timeouts take seconds

MEDIA = r"/download/storage/v1/b/[^/]+/o/obj\?"  # media downloads of the object "obj"


def _upstream(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


# --- forwarding, against an upstream that echoes what it received ---------------------------


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = json.dumps({"method": self.command, "path": self.path, "headers": dict(self.headers.items()),
                            "body": body.decode()}).encode()
        self.send_response(201)
        self.send_header("X-Echo", "yes")
        self.send_header("Content-Length", "1234" if self.command == "HEAD" else str(len(reply)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply)

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[str, int]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[:2]
    server.shutdown()
    server.server_close()


@pytest.fixture
def echo_proxy(echo: tuple[str, int]) -> Iterator[FaultProxy]:
    with FaultProxy(*echo) as proxy:
        yield proxy


def _call(proxy: FaultProxy, method: str, path: str, body: object = None, headers: dict | None = None,
          chunked: bool = False) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        reply = conn.getresponse()
        return reply, reply.read()
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_forwards_method_path_headers_and_body(echo_proxy: FaultProxy, method: str) -> None:
    reply, data = _call(echo_proxy, method, "/a/b%2Fc?x=1&y=two", body=b"payload", headers={
        "X-Custom": "kept", "Connection": "keep-alive, X-Hop", "X-Hop": "dropped", "Keep-Alive": "timeout=5"})
    seen = json.loads(data)
    assert (reply.status, reply.getheader("X-Echo"), reply.getheader("Connection")) == (201, "yes", "close")
    assert (seen["method"], seen["path"], seen["body"]) == (method, "/a/b%2Fc?x=1&y=two", "payload")
    assert seen["headers"]["Host"] == f"127.0.0.1:{echo_proxy.port}"  # the client's, so upstream links lead back
    assert seen["headers"]["X-Custom"] == "kept"
    assert not {"X-Hop", "Keep-Alive", "Connection"} & set(seen["headers"])
    assert echo_proxy.requests == [(method, "/a/b%2Fc?x=1&y=two")]


def test_chunked_request_body_is_resent_with_content_length(echo_proxy: FaultProxy) -> None:
    reply, data = _call(echo_proxy, "PUT", "/up", body=iter([b"abc", b"", b"defgh"]), chunked=True)
    seen = json.loads(data)
    assert seen["body"] == "abcdefgh"
    assert seen["headers"]["Content-Length"] == "8" and "Transfer-Encoding" not in seen["headers"]


def test_head_keeps_the_declared_length(echo_proxy: FaultProxy) -> None:
    reply, data = _call(echo_proxy, "HEAD", "/thing")
    assert (reply.status, reply.getheader("Content-Length"), data) == (201, "1234", b"")


def test_first_matching_rule_applies_for_its_times(echo_proxy: FaultProxy) -> None:
    twice = echo_proxy.add_rule("get", r"^/flaky", Respond(503, b"busy", {"Retry-After": "1"}), times=2)
    teapot = echo_proxy.add_rule(None, r"flaky|other", Respond(418))
    statuses = [_call(echo_proxy, "GET", "/flaky")[0].status for _ in range(3)]
    assert statuses == [503, 503, 418]
    reply, body = _call(echo_proxy, "POST", "/flaky")
    assert reply.status == 418
    assert (twice.hits, teapot.hits) == (2, 2)
    echo_proxy.clear_rules()
    assert _call(echo_proxy, "GET", "/flaky")[0].status == 201
    assert len(echo_proxy.requests) == 5


def test_respond_sends_body_and_headers(echo_proxy: FaultProxy) -> None:
    echo_proxy.add_rule(None, "", Respond(429, b"slow down", {"Retry-After": "3"}))
    reply, body = _call(echo_proxy, "GET", "/x")
    assert (reply.status, reply.getheader("Retry-After"), body) == (429, "3", b"slow down")


def test_a_delayed_request_does_not_block_others_and_stop_is_prompt(echo: tuple[str, int]) -> None:
    proxy = FaultProxy(*echo).start()
    proxy.add_rule(None, "^/slow", Delay(30))
    outcome: list[object] = []

    def slow() -> None:
        try:
            outcome.append(_call(proxy, "GET", "/slow")[0].status)
        except (OSError, http.client.HTTPException) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=slow, daemon=True)
    thread.start()
    eventually(lambda: ("GET", "/slow") in proxy.requests, 5)  # the slow one is held
    started = time.monotonic()
    assert _call(proxy, "GET", "/fast")[0].status == 201
    assert time.monotonic() - started < 1
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 1
    thread.join(timeout=5)
    assert outcome and isinstance(outcome[0], Exception)  # the delayed request was dropped, not answered


MULTIPART = (b'--==b==\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n{"name": "p/.gcs_sync/marker"}\r\n'
             b"--==b==\r\ncontent-type: application/octet-stream\r\n\r\n{\"name\": \"not this\"}\r\n--==b==--")


@pytest.mark.parametrize("method, path, content_type, body, name", [
    ("POST", "/upload/storage/v1/b/B/o?uploadType=media&name=p%2Fa.whl", "", b"x", "p/a.whl"),
    ("POST", "/upload/storage/v1/b/B/o?uploadType=multipart", 'multipart/related; boundary="==b=="', MULTIPART,
     "p/.gcs_sync/marker"),
    ("POST", "/upload/storage/v1/b/B/o?uploadType=resumable", "application/json", b'{"name": "p/big.whl"}',
     "p/big.whl"),
    ("PUT", "/upload/storage/v1/b/B/o?uploadType=resumable&upload_id=9", "application/octet-stream", b"x", None),
    ("GET", "/storage/v1/b/B/o?name=p%2Fa.whl", "", b"", None),
    ("POST", "/upload/storage/v1/b/B/o?uploadType=multipart", "multipart/related", MULTIPART, None),  # no boundary
    ("POST", "/x", "application/json", b"not json", None),
])
def test_written_object_names_what_gcs_writes(method: str, path: str, content_type: str, body: bytes,
                                              name: str | None) -> None:
    assert written_object(method, path, content_type, body) == name


def test_one_write_per_second_answers_429_to_a_second_write_of_a_name(echo_proxy: FaultProxy) -> None:
    limit = OneWritePerSecond(window=0.5)
    echo_proxy.add_rule(None, "", limit)
    first = "/upload/storage/v1/b/B/o?uploadType=media&name=a"
    statuses = [_call(echo_proxy, "POST", first, b"1")[0].status,
                _call(echo_proxy, "POST", "/upload/storage/v1/b/B/o?uploadType=media&name=b", b"1")[0].status,
                _call(echo_proxy, "GET", "/storage/v1/b/B/o/a")[0].status]
    reply, body = _call(echo_proxy, "POST", first, b"2")
    assert statuses == [201, 201, 201]  # other names and reads pass
    assert reply.status == 429 and json.loads(body)["error"]["errors"][0]["reason"] == "rateLimitExceeded"
    assert eventually(lambda: _call(echo_proxy, "POST", first, b"3")[0].status == 201, 3)  # after the window
    assert limit.throttled.count("a") >= 1 and limit.accepted == ["a", "b", "a"]
    assert sum(1 for method, _ in echo_proxy.requests if method == "POST") == len(limit.accepted) + len(limit.throttled)


# --- google-cloud-storage against gcp-storage-emulator --------------------------------------


@pytest.fixture
def gcs_proxy(gcs_emulator: str) -> Iterator[FaultProxy]:
    with FaultProxy(*_upstream(gcs_emulator)) as proxy:
        yield proxy


@pytest.fixture
def gcs_bucket(gcs_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch):
    """A fresh bucket, whose client talks to the emulator through the proxy."""
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_proxy.url)  # read when the client is built
    return storage.Client(project="x").create_bucket(f"fp-{uuid.uuid4().hex[:12]}")


DATA = bytes(range(256)) * 800  # 200 KiB, several socket reads


def _media_gets(proxy: FaultProxy) -> int:
    return sum(1 for method, path in proxy.requests if method == "GET" and re.search(MEDIA, path))


def test_gcs_upload_and_download_through_the_proxy(gcs_bucket, gcs_proxy: FaultProxy) -> None:
    gcs_bucket.blob("obj").upload_from_string(DATA)
    assert gcs_bucket.blob("obj").download_as_bytes() == DATA
    blob = gcs_bucket.get_blob("obj")
    assert blob.media_link.startswith(gcs_proxy.url)  # built from the forwarded Host header
    assert blob.download_as_bytes() == DATA
    methods = [method for method, _ in gcs_proxy.requests]
    assert methods.count("POST") >= 2 and _media_gets(gcs_proxy) == 2


def test_gcs_retries_a_single_503(gcs_bucket, gcs_proxy: FaultProxy) -> None:
    gcs_bucket.blob("obj").upload_from_string(DATA)
    rule = gcs_proxy.add_rule("GET", MEDIA, Respond(503), times=1)
    assert gcs_bucket.blob("obj").download_as_bytes() == DATA  # the default retry
    assert rule.hits == 1 and _media_gets(gcs_proxy) == 2


def test_gcs_gives_up_on_503_within_its_retry_deadline(gcs_bucket, gcs_proxy: FaultProxy) -> None:
    from google.api_core.exceptions import RetryError, ServiceUnavailable
    from google.cloud.storage.retry import DEFAULT_RETRY

    gcs_bucket.blob("obj").upload_from_string(DATA)
    rule = gcs_proxy.add_rule("GET", MEDIA, Respond(503))
    started = time.monotonic()
    with pytest.raises((RetryError, ServiceUnavailable)):
        gcs_bucket.blob("obj").download_as_bytes(retry=DEFAULT_RETRY.with_timeout(2), timeout=1)
    assert time.monotonic() - started < 5
    assert rule.hits >= 2


def test_gcs_truncated_download(gcs_bucket, gcs_proxy: FaultProxy) -> None:
    import requests

    gcs_bucket.blob("obj").upload_from_string(DATA)
    gcs_proxy.add_rule("GET", MEDIA, Truncate(100_000))
    # The short body against the declared Content-Length fails in urllib3, before any checksum.
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        gcs_bucket.blob("obj").download_as_bytes(retry=None)
    # Once only: the default retry resumes (with a Range request) and the result is whole.
    gcs_proxy.clear_rules()
    rule = gcs_proxy.add_rule("GET", MEDIA, Truncate(100_000), times=1)
    assert gcs_bucket.blob("obj").download_as_bytes() == DATA
    assert rule.hits == 1


def test_gcs_delay_past_the_client_timeout(gcs_bucket, gcs_proxy: FaultProxy) -> None:
    import requests

    gcs_bucket.blob("obj").upload_from_string(DATA)
    gcs_proxy.add_rule("GET", MEDIA, Delay(3))
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        gcs_bucket.blob("obj").download_as_bytes(retry=None, timeout=0.5)
    assert time.monotonic() - started < 2


def test_gcs_reset(gcs_bucket, gcs_proxy: FaultProxy) -> None:
    import requests

    gcs_bucket.blob("obj").upload_from_string(DATA)
    gcs_proxy.add_rule("GET", MEDIA, Reset())
    with pytest.raises(requests.exceptions.ConnectionError, match="reset"):
        gcs_bucket.blob("obj").download_as_bytes(retry=None)
    gcs_proxy.clear_rules()
    rule = gcs_proxy.add_rule("GET", MEDIA, Reset(), times=1)
    assert gcs_bucket.blob("obj").download_as_bytes() == DATA  # a reset is retried by default
    assert rule.hits == 1


def test_gcs_lost_reply_to_an_upload(gcs_bucket, gcs_proxy: FaultProxy) -> None:
    import requests

    rule = gcs_proxy.add_rule("POST", r"/upload/storage/v1/b/[^/]+/o\?", ResetAfterForward(), times=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        gcs_bucket.blob("obj").upload_from_string(b"landed", retry=None)
    assert rule.hits == 1
    assert gcs_bucket.blob("obj").download_as_bytes() == b"landed"  # the write happened all the same


# --- boto3 against moto -----------------------------------------------------------------------


@pytest.fixture
def s3(s3_server: str) -> Iterator[tuple[object, str, FaultProxy]]:
    import boto3
    from botocore.config import Config

    with FaultProxy(*_upstream(s3_server)) as proxy:
        # total_max_attempts counts the first try; retries={"max_attempts": 1} would still retry once.
        client = boto3.client("s3", endpoint_url=proxy.url, region_name="us-east-1", aws_access_key_id="x",
                              aws_secret_access_key="x", config=Config(
                                  retries={"total_max_attempts": 1, "mode": "standard"},
                                  connect_timeout=2, read_timeout=2))
        name = f"fp-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=name)
        yield client, name, proxy


def test_s3_roundtrip_through_the_proxy(s3) -> None:
    client, bucket, proxy = s3
    client.put_object(Bucket=bucket, Key="k", Body=DATA)  # sent with Expect: 100-continue
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == DATA
    assert client.head_object(Bucket=bucket, Key="k")["ContentLength"] == len(DATA)
    client.delete_object(Bucket=bucket, Key="k")
    assert [m for m, _ in proxy.requests] == ["PUT", "PUT", "GET", "HEAD", "DELETE"]


def test_s3_respond_500_is_a_client_error(s3) -> None:
    from botocore.exceptions import ClientError

    client, bucket, proxy = s3
    rule = proxy.add_rule("GET", f"^/{bucket}/k$", Respond(500))
    with pytest.raises(ClientError) as caught:
        client.get_object(Bucket=bucket, Key="k")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert rule.hits == 1


def test_s3_reset_is_a_connection_error_and_nothing_lands(s3) -> None:
    from botocore.exceptions import ConnectionClosedError

    client, bucket, proxy = s3
    rule = proxy.add_rule("PUT", f"^/{bucket}/k$", Reset())
    with pytest.raises(ConnectionClosedError):
        client.put_object(Bucket=bucket, Key="k", Body=b"never")
    proxy.clear_rules()
    assert rule.hits == 1
    assert client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_s3_latency_is_added_to_each_request(s3) -> None:
    client, bucket, proxy = s3
    proxy.latency = 0.3
    started = time.monotonic()
    client.head_bucket(Bucket=bucket)
    client.head_bucket(Bucket=bucket)
    assert time.monotonic() - started >= 0.6


def test_gcs_second_write_of_one_object_within_a_second_is_rate_limited(gcs_bucket, gcs_proxy: FaultProxy) -> None:
    from google.api_core.exceptions import TooManyRequests

    limit = OneWritePerSecond()
    gcs_proxy.add_rule(None, "", limit)
    gcs_bucket.blob("marker").upload_from_string(b"1")  # multipart upload: the name is in the body
    gcs_bucket.blob("other").upload_from_string(b"1")
    with pytest.raises(TooManyRequests):
        gcs_bucket.blob("marker").upload_from_string(b"2", retry=None)
    assert gcs_bucket.blob("marker").download_as_bytes() == b"1"  # the refused write never landed
    assert limit.accepted == ["marker", "other"] and limit.throttled == ["marker"]
