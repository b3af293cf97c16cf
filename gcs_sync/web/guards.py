"""Requests that stock pypiserver answers with a 500 (and a traceback), refused first.

    refuse_control_characters   a ``before_request`` hook: a path with a control character
                                is a 404 (pypiserver would put it in a redirect's Location)
    refuse_unusable_host        a ``before_request`` hook: a Host that is no host name is a
                                400 (pypiserver builds redirects and links from it)
    XmlRpcGuard                 a plugin on ``POST /RPC2``: a call pypiserver's handler
                                cannot read is a 400 naming what is wrong

The XML-RPC body is also bounded, to ``XMLRPC_MAX_BODY`` (``body_guard.RequestBodyGuard``).
"""

from __future__ import annotations

import typing as t
import unicodedata
import urllib.parse
from xml.dom import Node
from xml.dom.minidom import Document
from xml.parsers.expat import ExpatError

import defusedxml.minidom
from defusedxml.common import DefusedXmlException
from pypiserver.bottle_wrapper import HTTPError, request

XMLRPC_ENDPOINT = "/RPC2"
# pip's search call is about 500 bytes plus the query; 16 KiB leaves room for any query
# while bounding what the DOM parser may build (about 60 bytes of memory per byte of a
# body of many small elements: 1 MB of body is about 60 MB in the worker).
XMLRPC_MAX_BODY = 16 * 1024
# The one method pypiserver implements (pip search).
_SEARCH = "search"


def refuse_control_characters() -> None:
    """404 for a path with a control character (C0, DEL or C1), before routing and auth.

    No project or file name holds one, so nothing is lost; stock pypiserver redirects
    ``/simple/NAME`` to ``/simple/NAME/`` with the character raw in the Location header,
    which gunicorn refuses (a 500), or bottle itself for a NUL (a 500 with a traceback)."""
    if _has_control_character(request.environ.get("PATH_INFO", "")):
        raise HTTPError(404, "Not Found (no project or file name has a control character)\n")


def refuse_unusable_host() -> None:
    """400 for a Host (or X-Forwarded-Host, which bottle prefers) with a control character
    or that no URL can hold (``[::1``): stock pypiserver answers 500 on every route that
    redirects, as for a path with a control character, or from urlparse's ValueError."""
    environ = request.environ
    header = "X-Forwarded-Host" if environ.get("HTTP_X_FORWARDED_HOST") else "Host"
    host = environ.get("HTTP_X_FORWARDED_HOST") or environ.get("HTTP_HOST") or ""
    try:
        usable = not _has_control_character(host) and urllib.parse.urlsplit(f"http://{host}").netloc == host
    except ValueError:
        usable = False
    if not usable:
        raise HTTPError(400, f"Bad Request: the {header} header is not a host name.\n")


def _has_control_character(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


class XmlRpcGuard:
    """Checks ``POST /RPC2`` (pip search) before pypiserver's handler, which answers a
    500 for anything but a well-formed ``search`` with a string (an IndexError or an
    AttributeError), and 200 with an empty body for another method. Installed outside
    ``BucketSyncPlugin``: a refused call costs no sync. It runs before pypiserver's auth
    check (with ``AUTHENTICATE=list``), so a malformed call is a 400 with or without
    credentials; it reveals nothing about the index."""

    name = "gcs_sync_xmlrpc_guard"
    api = 2

    def apply(self, callback: t.Callable[..., t.Any], route: t.Any) -> t.Callable[..., t.Any]:
        if route.rule != XMLRPC_ENDPOINT:
            return callback

        def checked_call(*args: t.Any, **kwargs: t.Any) -> t.Any:
            check_search_call(request.body.read())
            return callback(*args, **kwargs)

        return checked_call


def check_search_call(body: bytes) -> None:
    """Raise a 400 unless ``body`` is an XML-RPC ``search`` call that pypiserver's handler
    reads: its first ``methodName`` and its first ``string`` element each start with text."""
    try:
        document = defusedxml.minidom.parseString(body)
    except (DefusedXmlException, ExpatError, ValueError) as exc:
        raise _malformed(f"the body is not well-formed, safe XML ({type(exc).__name__}: {exc})") from exc
    root = document.documentElement.tagName
    if root != "methodCall":
        raise _malformed(f"the root element is <{root}>, not <methodCall>")
    method = _first_text(document, "methodName")
    if method is None:
        raise _malformed("no <methodName> with the method's name")
    if method != _SEARCH:
        raise _malformed(f"unsupported method {method[:100]!r}: this index serves only {_SEARCH!r}")
    if _first_text(document, "string") is None:
        raise _malformed("a search needs a <string> with the text to look for")


def _first_text(document: Document, tag: str) -> t.Optional[str]:
    # pypiserver reads element.childNodes[0].wholeText of the first such element.
    elements = document.getElementsByTagName(tag)
    if not elements or not elements[0].childNodes:
        return None
    node = elements[0].childNodes[0]
    if node.nodeType not in (Node.TEXT_NODE, Node.CDATA_SECTION_NODE):
        return None
    return node.wholeText.strip()


def _malformed(reason: str) -> HTTPError:
    return HTTPError(400, f"Malformed XML-RPC call: {reason}.\n")
