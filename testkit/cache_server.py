"""A tiny WSGI server in front of the package-file cache, for its tests: the vendored
bottle's app with one route, ``/packages/<filename>``, answered by ``cached_response`` over
a real driver, and stock ``static_file`` at ``/stock/<filename>`` from a plain folder (what
mirror mode serves), to compare the headers with.

In this process (``CacheServer``, a threaded wsgiref server in a thread) or as a process of
its own sharing a cache folder (``python -m testkit.cache_server SPEC.json``, which prints
its URL): the driver comes from the environment as the app's does (``Settings.from_env``).
"""

from __future__ import annotations

import dataclasses
import json
import mimetypes
import os
import socketserver
import sys
import threading
from pathlib import Path
from typing import Any, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from pypiserver.bottle_wrapper import Bottle, HTTPError, static_file

from gcs_sync import Settings
from gcs_sync.drivers import FileStoreDriver, make_driver
from gcs_sync.drivers.base import Version
from gcs_sync.sync.cache import FileCache
from gcs_sync.web.cached_download import cached_response


@dataclasses.dataclass(frozen=True)
class Entry:
    """What the index knows of a file: its bytes' digest and size, and the version it reads."""

    sha256: str
    size: int
    version: str


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def make_app(cache: FileCache, driver: FileStoreDriver, catalog: dict[str, Entry],
             cache_control: Optional[int] = None, stock_root: Optional[Path] = None) -> Bottle:
    app = Bottle()

    @app.route("/packages/<filename>")
    def serve(filename: str) -> Any:
        entry = catalog.get(filename)
        if entry is None:
            return HTTPError(404, f"Not Found ({filename} does not exist)")
        return cached_response(
            cache, filename, sha256=entry.sha256, size=entry.size,
            open_source=lambda: driver.open_stream(filename, Version(entry.version)),
            cache_control=cache_control,
        )

    @app.route("/stock/<filename>")
    def stock(filename: str) -> Any:
        # As pypiserver's server_static does it.
        response = static_file(filename, root=str(stock_root), mimetype=mimetypes.guess_type(filename)[0])
        if cache_control:
            response.set_header("Cache-Control", f"public, max-age={cache_control}")
        return response

    return app


class CacheServer:
    def __init__(self, app: Bottle) -> None:
        self._server = make_server("127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "CacheServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.server_close()


def main(spec_path: str) -> None:
    """Serve the spec's catalog (``{"cache": DIR, "max_bytes": N, "files": {name: Entry}}``)
    until killed, with the driver the environment names."""
    spec = json.loads(Path(spec_path).read_text())
    driver = make_driver(Settings.from_env(os.environ))
    cache = FileCache(Path(spec["cache"]), int(spec["max_bytes"]))
    catalog = {name: Entry(**entry) for name, entry in spec["files"].items()}
    with CacheServer(make_app(cache, driver, catalog)) as server:
        print(server.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1])
