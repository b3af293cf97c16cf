"""The modern simple API on pypiserver's ``/simple/`` and ``/simple/<project>/``.

    request ─▶ auth("list") ─▶ a page? ─yes─▶ negotiate(Accept, ?format=) ─▶ render
               (pypiserver's      │                   │                    (HTML or JSON,
                401/403)          no                  └─▶ 406               from the index)
                                  ▼
                    the stock callback's answer: 301 to the normalized
                    name, fallback redirect or 404

What is served, from the in-memory index alone (``index.py``: no hashing, no unzipping):

- HTML (PEP 503) with, per link, ``data-requires-python``, ``data-yanked`` (PEP 592) and
  ``data-dist-info-metadata``/``data-core-metadata`` (PEP 658/714), and the
  ``pypi:repository-version`` meta tag;
- JSON (PEP 691 version 1, with PEP 700's ``versions``, ``size`` and ``upload-time``, and
  PEP 714's ``core-metadata``), as ``application/vnd.pypi.simple.v1+json``.

Pages are rendered once, here (``SimpleApiPlugin``), and a project page is served again
as rendered while the project's files are the same (``page_cache.py``); what is not a
page (a redirect to the normalized name, an unknown project) stays the stock callback's
answer.

Negotiation and rendering are pure functions; ``SimpleApiPlugin`` is the Bottle glue.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import typing as t
from urllib.parse import urljoin, urlparse

from pypiserver.bottle_wrapper import HTTPError, HTTPResponse, request, response
from pypiserver.core import PkgFile
from pypiserver.pkg_helpers import normalize_pkgname_for_url

from gcs_sync.web.backend import SyncedFolderBackend
from gcs_sync.web.index import IndexedFile
from gcs_sync.web.page_cache import PageCache

if t.TYPE_CHECKING:
    from pypiserver.config import RunConfig

API_VERSION = "1.1"  # PEP 700
JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
# What is served, in the order ties go to: HTML first (what every client understands).
SERVED = (TEXT_HTML, HTML_V1, JSON_V1)
# PEP 691's "latest" aliases are answered with the version they stand for.
_ALIASES = {
    "application/vnd.pypi.simple.latest+json": JSON_V1,
    "application/vnd.pypi.simple.latest+html": HTML_V1,
}
CONTENT_TYPES = {TEXT_HTML: "text/html; charset=utf-8", HTML_V1: HTML_V1, JSON_V1: JSON_V1}


# -- negotiation ----------------------------------------------------------------------


def parse_accept(value: str) -> list[tuple[str, float]]:
    """The media ranges of an Accept header (or of a ``format`` value), in the client's
    order, with their q-values; ranges that cannot be read are left out."""
    ranges = []
    for part in value.split(","):
        media, *params = (field.strip() for field in part.split(";"))
        media = media.lower()
        if media.count("/") != 1 or "" in media.split("/"):
            continue
        q: t.Optional[float] = 1.0
        for param in params:
            key, _, raw = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(raw.strip())
                except ValueError:
                    q = None
                if q is not None and not 0.0 <= q <= 1.0:
                    q = None
        if q is not None:
            ranges.append((_ALIASES.get(media, media), q))
    return ranges


def _specificity(served: str, media_range: str) -> int:
    """How closely ``media_range`` names ``served``: 3 exactly, 2 as ``type/*``, 1 as
    ``*/*``, 0 not at all."""
    if media_range == served:
        return 3
    kind, subtype = media_range.split("/")
    if subtype == "*" and served.startswith(kind + "/"):
        return 2
    return 1 if kind == "*" and subtype == "*" else 0


def negotiate(accept: t.Optional[str], format: t.Optional[str] = None) -> t.Optional[str]:
    """The media type to answer with (one of ``SERVED``), or None: nothing acceptable (406).

    ``format`` (PEP 691's URL parameter, a media type or a list like Accept) overrides
    ``accept``; neither given (or empty) means HTML. Each served type gets the q-value of
    the most specific range that names it (RFC 9110 12.5.1; q=0: not acceptable); the
    highest wins, ties go to the range the client listed first, then to HTML."""
    value = format if format else accept
    if value is None or not value.strip():
        return TEXT_HTML
    ranges = parse_accept(value)
    best: t.Optional[tuple[tuple[float, int, int], str]] = None
    for preference, served in enumerate(SERVED):
        matched: t.Optional[tuple[int, int, float]] = None  # specificity, position, q
        for position, (media_range, q) in enumerate(ranges):
            specificity = _specificity(served, media_range)
            if specificity and (matched is None or specificity > matched[0]):
                matched = (specificity, position, q)
        if matched is None or matched[2] <= 0:
            continue
        key = (-matched[2], matched[1], preference)
        if best is None or key < best[0]:
            best = (key, served)
    return None if best is None else best[1]


def not_acceptable_body() -> str:
    return "Not Acceptable. Served here: " + ", ".join(
        [*SERVED, *_ALIASES]) + " (in Accept, or as ?format=).\n"


# -- what a page shows of a file --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProjectFile:
    """One file of a project page, as both renderings show it."""

    filename: str
    href: str  # pypiserver's link, with its #<algo>=<digest> fragment if any
    hashes: dict[str, str]
    requires_python: t.Optional[str] = None
    core_metadata_sha256: t.Optional[str] = None
    yanked: t.Union[bool, str] = False  # PEP 592: True, or the reason
    size: t.Optional[int] = None
    upload_time: t.Optional[str] = None  # yyyy-mm-ddThh:mm:ss.ffffffZ

    @property
    def url(self) -> str:
        return self.href.split("#", 1)[0]


def project_file(pkg: PkgFile, href: str) -> ProjectFile:
    """What the index knows of ``pkg`` (its record, if any); ``href`` as pypiserver links it
    (``pkg.digest`` is set once the href was made from ``fname_and_hash``)."""
    hashes: dict[str, str] = {}
    if pkg.digest:
        algorithm, _, digest = pkg.digest.partition("=")
        if algorithm in hashlib.algorithms_guaranteed and digest:
            hashes[algorithm] = digest
    if not isinstance(pkg, IndexedFile):
        return ProjectFile(str(pkg.relfn), href, hashes)
    if pkg.sha256:
        hashes["sha256"] = pkg.sha256
    record = pkg.record
    if record is None:
        return ProjectFile(str(pkg.relfn), href, hashes, size=pkg.size)
    return ProjectFile(
        filename=str(pkg.relfn), href=href, hashes=hashes,
        requires_python=record.requires_python or None,
        core_metadata_sha256=record.metadata_sha256 or None,
        yanked=(record.yank_reason or True) if record.yanked else False,
        size=record.size,
        upload_time=upload_time(record.upload_time),
    )


@functools.lru_cache(maxsize=65536)
def upload_time(value: str) -> t.Optional[str]:
    """A record's RFC 3339 time as PEP 700 writes it (UTC, microseconds, ``Z``); None if
    it cannot be read."""
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- rendering ----------------------------------------------------------------------------


def escape(text: str) -> str:
    """HTML-escaped as pypiserver's templates (Bottle's ``html_escape``) do it."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#039;"))


_HEAD = """<!DOCTYPE html>
<html lang="en">
    <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <meta name="pypi:repository-version" content="{version}">
        <title>{title}</title>
    </head>
    <body>
        <h1>{title}</h1>
"""
_TAIL = """    </body>
</html>
"""


def render_index_html(projects: t.Iterable[str]) -> str:
    links = "".join(f'                <a href="{escape(p)}/">{escape(p)}</a><br>\n' for p in projects)
    return _HEAD.format(version=API_VERSION, title="Simple Index") + links + _TAIL


def render_index_json(projects: t.Iterable[str]) -> str:
    return json.dumps({"meta": {"api-version": API_VERSION}, "projects": [{"name": p} for p in projects]})


def _link(file: ProjectFile) -> str:
    attributes = f'href="{escape(file.href)}"'
    if file.requires_python:
        attributes += f' data-requires-python="{escape(file.requires_python)}"'
    if file.yanked is not False:
        reason = file.yanked if isinstance(file.yanked, str) else ""
        attributes += f' data-yanked="{escape(reason)}"'
    if file.core_metadata_sha256:
        value = f"sha256={escape(file.core_metadata_sha256)}"
        attributes += f' data-dist-info-metadata="{value}" data-core-metadata="{value}"'
    return f"            <a {attributes}>{escape(file.filename)}</a><br>\n"


def render_project_html(project: str, files: t.Iterable[ProjectFile]) -> str:
    title = escape(f"Links for {project}")
    return _HEAD.format(version=API_VERSION, title=title) + "".join(map(_link, files)) + _TAIL


def _file_json(file: ProjectFile) -> dict[str, t.Any]:
    metadata: t.Union[bool, dict[str, str]] = (
        {"sha256": file.core_metadata_sha256} if file.core_metadata_sha256 else False)
    raw: dict[str, t.Any] = {"filename": file.filename, "url": file.url, "hashes": file.hashes}
    if file.requires_python:
        raw["requires-python"] = file.requires_python
    raw["core-metadata"] = metadata
    raw["dist-info-metadata"] = metadata  # PEP 714: the old name, for older clients
    raw["yanked"] = file.yanked
    if file.size is not None:
        raw["size"] = file.size
    if file.upload_time is not None:
        raw["upload-time"] = file.upload_time
    return raw


def render_project_json(project: str, versions: t.Iterable[str], files: t.Iterable[ProjectFile]) -> str:
    return json.dumps({
        "meta": {"api-version": API_VERSION},
        "name": project,
        "versions": list(versions),
        "files": [_file_json(file) for file in files],
    })


def request_fullpath() -> str:
    """The request's path as pypiserver's links start from (``pypiserver._app``'s function
    of that name; not imported: each import of that module builds another app)."""
    parsed = urlparse(request.urlparts.scheme + "://" + request.urlparts.netloc)
    return parsed.path.rstrip("/") + "/" + request.fullpath.lstrip("/")


# -- the plugin ---------------------------------------------------------------------------

INDEX_RULE = "/simple/"
PROJECT_RULE = "/simple/:project/"


class SimpleApiPlugin:
    """Around pypiserver's two simple-API routes. Every answer of theirs carries
    ``Vary: Accept``.

    A page is rendered once, here, from the index: pypiserver's auth check comes first
    (its lines, on its config: same 401/403), then the negotiation (406), then the page.
    Whatever is not a page (a name to redirect to its normalized spelling, an unknown
    project: fallback redirect or 404) is left to the stock callback, whose answer is
    returned as it is. Running the stock callback for pages too and rendering again cost
    a third more per page (its template is the dearer half), hence this split."""

    name = "gcs_sync_simple_api"
    api = 2

    def __init__(self, config: "RunConfig") -> None:
        self.config = config  # read at request time: the backend is replaced after app()
        self._pages = PageCache()

    def apply(self, callback: t.Callable[..., t.Any], route: t.Any) -> t.Callable[..., t.Any]:
        if route.rule == INDEX_RULE:
            def answer(**kwargs: t.Any) -> t.Any:
                self._authorize()
                return self._answer(self._index)
        elif route.rule == PROJECT_RULE:
            def answer(**kwargs: t.Any) -> t.Any:
                self._authorize()
                project = kwargs["project"]
                packages = self._project_packages(project)
                if packages is None:
                    # pypiserver's redirect or 404 (its auth again: a login passed once
                    # passes again, and a refused one never gets here)
                    result = callback(**kwargs)
                    if isinstance(result, HTTPResponse):
                        return result
                    # Its page: the project's first file reached the index between the two
                    # reads. Render it here too, so a JSON request never gets HTML.
                    packages = self._project_packages(project)
                    if packages is None:
                        return result
                return self._answer(lambda media_type: self._project_page(media_type, project, packages))
        else:
            return callback

        def negotiated(**kwargs: t.Any) -> t.Any:
            try:
                result = answer(**kwargs)
            except HTTPResponse as refused:  # 401/403, redirects
                refused.set_header("Vary", "Accept")
                raise
            if isinstance(result, HTTPResponse):  # 404, fallback redirect, 406
                result.set_header("Vary", "Accept")
            return result

        return negotiated

    def _authorize(self) -> None:
        """pypiserver's ``auth("list")`` (``pypiserver._app.auth``), on the same config: the
        same 401 (with its challenge) and 403, and one call of the auther."""
        if "list" not in self.config.authenticate:
            return
        credentials = request.auth
        if not credentials or credentials[1] is None:
            raise HTTPError(401, headers={"WWW-Authenticate": 'Basic realm="pypi"'})
        if not self.config.auther(*credentials):
            raise HTTPError(403)

    def _answer(self, render: t.Callable[[str], str]) -> t.Any:
        media_type = negotiate(request.headers.get("Accept"), request.query.get("format"))
        if media_type is None:
            return HTTPResponse(not_acceptable_body(), status=406, headers={
                "Content-Type": "text/plain; charset=utf-8"})
        body = render(media_type)
        response.content_type = CONTENT_TYPES[media_type]
        response.set_header("Vary", "Accept")
        return body

    def _index(self, media_type: str) -> str:
        projects = sorted(self.config.backend.get_projects())
        return render_index_json(projects) if media_type == JSON_V1 else render_index_html(projects)

    def _project_packages(self, project: str) -> t.Optional[t.Sequence[PkgFile]]:
        """The project's files as the backend has them (the index's tuple, unsorted), or
        None when pypiserver would not answer with a page: a name to normalize, or no files."""
        if project != normalize_pkgname_for_url(project):
            return None
        backend = self.config.backend
        inner = getattr(backend, "backend", None)  # the backend pypiserver's BackendProxy wraps
        if isinstance(inner, SyncedFolderBackend):
            # The index's own tuple, the page's version (page_cache.py). The proxy would
            # copy it into a list and give every file a new digester on each request.
            indexed = inner.find_project_packages(project)
            for pkg in indexed:
                if pkg.digest is None and pkg.digester is None:  # HASH_ALGO other than sha256
                    pkg.digester = inner.digest
            return indexed or None
        return list(backend.find_project_packages(project)) or None

    def _project_page(self, media_type: str, project: str, packages: t.Sequence[PkgFile]) -> str:
        # pypiserver's links (``fname_and_hash`` sets pkg.digest, as on its page).
        base = urljoin(request_fullpath(), "../../packages/")
        if not isinstance(packages, tuple):  # not the index's (a backend of another kind): no version to key on
            return self._project(media_type, project, base, packages)
        return self._pages.page((project, media_type, base), packages,
                                lambda: self._project(media_type, project, base, packages))

    def _project(self, media_type: str, project: str, base: str, found: t.Sequence[PkgFile]) -> str:
        packages = sorted(found, key=lambda pkg: (pkg.parsed_version, pkg.relfn))  # pypiserver's order
        files = [project_file(pkg, base + pkg.fname_and_hash) for pkg in packages]
        if media_type != JSON_V1:
            return render_project_html(project, files)
        versions = {pkg.version: pkg.parsed_version for pkg in packages}
        return render_project_json(project, sorted(versions, key=versions.__getitem__), files)
