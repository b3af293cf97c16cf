"""Make gcp-storage-emulator honour ``ifGenerationMatch`` on uploads, downloads and deletes,
and send ``x-goog-generation`` with a download, as GCS does.

The emulator ignores preconditions, so a create-only upload would silently overwrite.
Real GCS answers 412; this wraps the emulator's handlers to do the same. Real GCS also
says which generation a download's bytes are (the header), so one request reads an
object and its version; without it the driver needs a second request, and tests that
count bucket calls would count the emulator's gap. It is the one place the tests change
a storage server, for things the emulator cannot do.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Callable

from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def _object_name(request: Any) -> str | None:
    if "object_id" in request.params:
        return request.params["object_id"]
    if "name" in request.query:
        return request.query["name"][0]
    data = request.data
    if isinstance(data, dict):
        meta = data.get("meta")
        if isinstance(meta, dict):
            return meta.get("name")
        return data.get("name")
    return None


def _with_generation_precondition(handler: Callable[..., Any], creates: bool) -> Callable[..., Any]:
    def checked(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        expected = request.query.get("ifGenerationMatch")
        name = _object_name(request)
        if expected and name:
            try:
                current = str(storage.get_file_obj(request.params["bucket_name"], name)["generation"])
            except NotFound:
                if not creates:  # reading or deleting a missing object is a 404, as on GCS
                    return handler(request, response, storage, *args, **kwargs)
                current = "0"
            if current != expected[0]:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": "conditionNotMet", "errors": [
                    {"reason": "conditionNotMet", "message": "Precondition Failed"}]}})
                return None
        return handler(request, response, storage, *args, **kwargs)

    return checked


def _with_generation_header(handler: Callable[..., Any]) -> Callable[..., Any]:
    def answered(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        result = handler(request, response, storage, *args, **kwargs)
        if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT, 200, 206):
            try:
                obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
                response["x-goog-generation"] = str(obj["generation"])
            except (NotFound, KeyError):
                pass  # nothing was sent: no header to add
        return result

    return answered


def enforce_generation_preconditions() -> None:
    checked = {
        original: _with_generation_precondition(original, creates=original is objects.insert)
        for original in (objects.insert, objects.get, objects.delete)
    }
    checked[objects.download] = _with_generation_header(
        _with_generation_precondition(objects.download, creates=False))
    for _pattern, handlers in emulator_server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler in checked:
                handlers[method] = checked[handler]
