"""Forwarded headers count only from trusted proxies, and X-Forwarded-Host never.

pypiserver's redirects (``/simple`` to ``/simple/``, ``/simple/Foo/`` to ``/simple/foo/``,
``/packages`` to ``/packages/``) are absolute URLs that bottle builds from
``X-Forwarded-Proto`` and ``X-Forwarded-Host`` when a request has them, whoever sent
them. Here, before the app sees a request:

- ``X-Forwarded-*`` headers are removed unless the peer (REMOTE_ADDR) is one of
  FORWARDED_ALLOW_IPS, gunicorn's own setting, which gunicorn applies to the scheme
  (``wsgi.url_scheme``) with the same list: a trusted proxy's ``X-Forwarded-Proto: https``
  keeps redirects on https. As in gunicorn, a peer with no IP address (a UNIX socket) is
  trusted.
- ``X-Forwarded-Host`` and ``Forwarded`` (which may carry ``host=``) are removed from
  every peer: the host of a redirect is the request's ``Host``. The front ends of App
  Engine and Cloud Run pass a client's ``X-Forwarded-Host`` on unchanged (it is not among
  the headers they document as removed), so no list of proxies could make it safe there;
  and every recipe in the README forwards the client's Host. werkzeug's ProxyFix makes the
  same choice by default (``x_host=0``).
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Union

_Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
_NEVER = ("HTTP_X_FORWARDED_HOST", "HTTP_FORWARDED")
_FROM_TRUSTED = "HTTP_X_FORWARDED_"


class TrustedForwardedHeaders:
    """WSGI middleware: see the module's docstring."""

    def __init__(self, app, allow_ips: Iterable[str]) -> None:
        self.app = app
        ips = tuple(allow_ips)
        self._everyone = "*" in ips
        self._trusted = frozenset(_address(ip) for ip in ips if ip != "*")

    def __call__(self, environ: dict, start_response):
        for key in _NEVER:
            environ.pop(key, None)
        if not self._trusts(environ.get("REMOTE_ADDR", "")):
            for key in [key for key in environ if key.startswith(_FROM_TRUSTED)]:
                del environ[key]
        return self.app(environ, start_response)

    def _trusts(self, peer: str) -> bool:
        if self._everyone:
            return True
        try:
            return _address(peer) in self._trusted
        except ValueError:
            return True  # no IP address: a UNIX socket, which gunicorn also trusts


def _address(value: str) -> _Address:
    """An IP address; an IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) as its IPv4 one."""
    address = ipaddress.ip_address(value.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
