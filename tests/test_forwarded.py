"""Redirects stay on the index's own host (gcs_sync/web/forwarded.py), under real gunicorn:
pypiserver builds absolute redirect URLs from X-Forwarded-Proto and X-Forwarded-Host,
which stock bottle takes from any client. Here the scheme follows only a trusted proxy
(FORWARDED_ALLOW_IPS, gunicorn's setting), and the host only the request's Host."""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Iterator

import pytest

from testkit.buckets import BucketProbe
from testkit.servers import Instance, start_instance

LOCAL = pytest.mark.parametrize("bucket", ["local"], indirect=True)  # redirects never depend on the store

# pypiserver's three redirects, and where each goes (a path on the same host).
REDIRECTS = {"/simple": "/simple/", "/simple/Demo_Pkg/": "/simple/demo-pkg/", "/packages": "/packages/"}
SPOOFED = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https", "Forwarded": "host=evil.example"}


def location(instance: Instance, path: str, headers: dict[str, str]) -> str:
    """The Location of the answer to GET ``path``, not followed."""
    host, port = instance.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", path, headers=headers)
        reply = connection.getresponse()
        reply.read()
        assert 300 <= reply.status < 400, (path, reply.status)
        return reply.getheader("Location", "")
    finally:
        connection.close()


@pytest.fixture
def serve(bucket: BucketProbe, tmp_path: Path) -> Iterator:
    started: list[Instance] = []

    def start(**env: str) -> Instance:
        instance = start_instance({**bucket.env(), **env}, tmp_path / f"served{len(started)}", tmp_path, workers=1)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


@LOCAL
def test_a_client_cannot_steer_a_redirect_with_forwarded_headers(serve) -> None:
    """The client (127.0.0.1) is not a trusted proxy here: its forwarded headers are dropped."""
    instance = serve(FORWARDED_ALLOW_IPS="192.0.2.1")
    for path, target in REDIRECTS.items():
        assert location(instance, path, SPOOFED) == instance.url + target


@LOCAL
def test_a_trusted_proxy_sets_the_scheme_and_the_host_header_sets_the_host(serve) -> None:
    """gunicorn's default trusts a proxy on the same host (127.0.0.1), like nginx in the
    README's VM recipe: its X-Forwarded-Proto counts, and the Host it forwards. An
    X-Forwarded-Host never does, even from it: App Engine's and Cloud Run's front ends
    pass a client's on."""
    instance = serve()
    proxied = {"Host": "pypi.example.com", "X-Forwarded-Proto": "https"}
    for path, target in REDIRECTS.items():
        assert location(instance, path, proxied) == "https://pypi.example.com" + target
        assert location(instance, path, {**proxied, "X-Forwarded-Host": "evil.example"}) == (
            "https://pypi.example.com" + target)
