"""``cmcr serve``: the JSON API and the web page over an :class:`~cmcr.serve.index.Index`.

Starlette on uvicorn. Every answer to a bad request is a 4xx with ``{"error": "..."}``; media are
served by row number only (``/media/ROW``), so no path from a request ever reaches the disk.
"""

from __future__ import annotations

import functools
import io
import mimetypes
import socket
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cmcr.errors import CmcrError, InputError
from cmcr.serve.index import Index, NotInIndexError
from cmcr.serve.query import UploadTypeError

STATIC_DIR = Path(__file__).parent / "static"
MEDIA_TYPES = ("image/", "audio/", "video/")
MAX_THUMBNAIL = 1024


class BodyLimit:
    """ASGI middleware: refuse a request body over ``max_bytes`` with 413, whether it declares
    its length or streams, before anything spools it to disk."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await too_large_response(self.max_bytes)(scope, receive, send)
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise UploadTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


def too_large_response(max_bytes: int) -> JSONResponse:
    return JSONResponse({"error": f"upload too large: the limit is {max_bytes / 1e6:g} MB "
                                  "(cmcr serve --max-upload-mb)"}, status_code=413)


class UploadTooLarge(Exception):
    """A streamed request body passed the limit (answered 413 by the app's handler)."""


def result_json(hit: Any) -> dict[str, Any]:
    """A search hit as the API returns it (``media_url`` only for rows with a media file)."""
    found = hit.to_json()
    found["media_url"] = f"/media/{hit.row}" if hit.source is not None else None
    return found


def _int_param(value: Any, name: str, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"'{name}' must be an integer, got {str(value)[:40]!r}") from None


class SearchAPI:
    """The handlers of the page, the API and the media over one index."""

    def __init__(self, index: Index):
        self.index = index
        self.encoder = index.encoder  # loads and checks the model now, so a wrong one fails at start

    async def page(self, request: Request) -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    async def info(self, request: Request) -> JSONResponse:
        return JSONResponse(self.index.info())

    async def search(self, request: Request) -> JSONResponse:
        began = time.perf_counter()
        params = dict(request.query_params)
        if request.method == "POST":
            params.update(await self.form_fields(request))
        k, offset = _int_param(params.get("k"), "k", 10), _int_param(params.get("offset"), "offset", 0)
        modality = params.get("modality") or None
        query, vector, exclude = await self.query_vector(params)
        hits = await run_in_threadpool(self.index.search_vector, vector, modality, k, offset, exclude)
        return JSONResponse({"query": query, "k": k, "offset": offset,
                             "took_ms": round(1000 * (time.perf_counter() - began), 1),
                             "results": [result_json(hit) for hit in hits]})

    async def query_vector(self, params: dict[str, Any]) -> tuple[dict[str, Any], Any, int | None]:
        """(what the query was, its joint-space vector, a row to leave out of the results)."""
        given = [name for name in ("q", "like", "file") if params.get(name) not in (None, "")]
        if len(given) != 1:
            raise InputError("give exactly one query: q=TEXT, like=ROW, or an uploaded file "
                             f"(POST multipart field 'file'); got {given or 'none'}")
        if given == ["q"]:
            vector = await run_in_threadpool(self.encoder.embed_text, params["q"])
            return {"kind": "text", "text": params["q"]}, vector, None
        if given == ["like"]:
            row = _int_param(params["like"], "like", 0)
            vector = await run_in_threadpool(self.index.vector, row)
            return {"kind": "row", **result_json(self.index.result(row, 1.0))}, vector, row
        upload = params["file"]
        if not hasattr(upload, "read"):
            raise InputError("'file' must be an uploaded file (multipart/form-data)")
        data, name = await upload.read(), upload.filename or ""
        vector, modality = await run_in_threadpool(self.encoder.embed_upload, data, name)
        return {"kind": "file", "modality": modality, "filename": name}, vector, None

    @staticmethod
    async def form_fields(request: Request) -> dict[str, Any]:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InputError("POST /api/search takes multipart/form-data (a 'file' field, and "
                             "optionally 'modality', 'k', 'offset')")
        form = await request.form(max_files=1, max_fields=8)
        return dict(form.items())

    async def media(self, request: Request) -> Response:
        """A row's file; ``?thumb=PX`` gives an image row as a JPEG at most PX wide and high."""
        row = request.path_params["row"]
        path = await run_in_threadpool(self.index.media_path, row)
        media_type = mimetypes.guess_type(str(path))[0] if path else None
        if path is None or not (media_type or "").startswith(MEDIA_TYPES):
            raise NotInIndexError(f"row {row} has no media file to serve")
        size = _int_param(request.query_params.get("thumb"), "thumb", 0)
        if size and media_type.startswith("image/"):
            if not 16 <= size <= MAX_THUMBNAIL:
                raise InputError(f"thumb must be between 16 and {MAX_THUMBNAIL} pixels, got {size}")
            data = await run_in_threadpool(thumbnail, str(path), size)
            return Response(data, media_type="image/jpeg",
                            headers={"Cache-Control": "max-age=3600"})
        return FileResponse(path, media_type=media_type)


@functools.lru_cache(maxsize=1024)
def thumbnail(path: str, size: int) -> bytes:
    """An image file as a JPEG at most ``size`` pixels wide and high (decoded by cmcr's protocol)."""
    from cmcr.processing import load_image

    image = load_image(path)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def create_app(index: Index, max_upload_bytes: int = 20_000_000) -> BodyLimit:
    """The ASGI application: the page, the API and the media, behind the upload limit."""
    api = SearchAPI(index)
    routes = [Route("/", api.page), Route("/api/info", api.info),
              Route("/api/search", api.search, methods=["GET", "POST"]),
              Route("/media/{row:int}", api.media),
              Mount("/static", StaticFiles(directory=STATIC_DIR))]
    handlers = {CmcrError: _error_handler(400), UploadTypeError: _error_handler(415),
                NotInIndexError: _error_handler(404), UploadTooLarge: _too_large,
                HTTPException: _http_error, Exception: _error_handler(500)}
    return BodyLimit(Starlette(routes=routes, exception_handlers=handlers), max_upload_bytes)


def _error_handler(status: int) -> Any:
    async def handle(request: Any, error: Exception) -> JSONResponse:
        message = str(error)
        if status == 500:
            message = f"internal error ({type(error).__name__}); the server keeps serving"
        return JSONResponse({"error": message}, status_code=status)
    return handle


async def _too_large(request: Any, error: UploadTooLarge) -> Any:
    return too_large_response(error.args[0])


async def _http_error(request: Any, error: Any) -> JSONResponse:
    detail = error.detail if error.status_code != 404 else f"no such page: {request.url.path}"
    return JSONResponse({"error": detail}, status_code=error.status_code)


def check_port_free(host: str, port: int) -> None:
    """Fail before loading anything when the address cannot be listened on."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as err:
        raise CmcrError(f"cannot listen on {host}:{port} ({err.strerror or err}): another "
                        "server may be using it; choose another with --port") from None


def serve(index: Index, host: str = "127.0.0.1", port: int = 8000,
          max_upload_bytes: int = 20_000_000) -> None:
    """Run the server until interrupted."""
    import uvicorn

    check_port_free(host, port)
    app = create_app(index, max_upload_bytes)
    index.encoder.warm_up(["text", "image", "audio"])
    print(f"cmcr: serving {index.path} ({len(index):,} rows: {', '.join(index.modalities)}) "
          f"at http://{host}:{port}  (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
