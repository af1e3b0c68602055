"""``cmcr serve``: the JSON API and the web page over an :class:`~cmcr.serve.index.Index`.

Starlette on uvicorn. Every answer to a bad request is a 4xx with ``{"error": "..."}``; media are
served by row number only (``/media/ROW``), so no path from a request ever reaches the disk.
"""

from __future__ import annotations

import mimetypes
import time
from pathlib import Path
from typing import Any

from cmcr.errors import CmcrError, InputError, MissingDependencyError
from cmcr.serve.index import Index
from cmcr.serve.query import UploadTypeError

STATIC_DIR = Path(__file__).parent / "static"
MEDIA_TYPES = ("image/", "audio/", "video/")


def _require_web() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MissingDependencyError("cmcr serve needs starlette and uvicorn: pip install "
                                     "starlette uvicorn python-multipart") from None


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


def too_large_response(max_bytes: int) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": f"upload too large: the limit is {max_bytes / 1e6:g} MB "
                                  "(cmcr serve --max-upload-mb)"}, status_code=413)


class UploadTooLarge(Exception):
    """A streamed request body passed the limit (answered 413 by the app's handler)."""


def result_json(index: Index, hit: Any) -> dict[str, Any]:
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


def create_app(index: Index, max_upload_bytes: int = 20_000_000) -> Any:
    """The ASGI application (the index's model is loaded now, so a wrong one fails at start)."""
    _require_web()
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    encoder = index.encoder  # loads and checks the model

    async def info(request: Request) -> JSONResponse:
        return JSONResponse(index.info())

    async def search(request: Request) -> JSONResponse:
        began = time.perf_counter()
        params = dict(request.query_params)
        if request.method == "POST":
            params.update(await _form_fields(request))
        k, offset = _int_param(params.get("k"), "k", 10), _int_param(params.get("offset"), "offset", 0)
        modality = params.get("modality") or None
        query, vector, exclude = await _query_vector(params, request)
        hits = await run_in_threadpool(index.search_vector, vector, modality, k, offset, exclude)
        return JSONResponse({"query": query, "k": k, "offset": offset,
                             "took_ms": round(1000 * (time.perf_counter() - began), 1),
                             "results": [result_json(index, hit) for hit in hits]})

    async def _query_vector(params: dict[str, Any], request: Request) -> tuple[dict, Any, Any]:
        upload = params.get("file")
        given = [name for name in ("q", "like", "file") if params.get(name) not in (None, "")]
        if len(given) != 1:
            raise InputError("give exactly one query: q=TEXT, like=ROW, or an uploaded file "
                             f"(POST multipart field 'file'); got {given or 'none'}")
        if given == ["q"]:
            vector = await run_in_threadpool(encoder.embed_text, params["q"])
            return {"kind": "text", "text": params["q"]}, vector, None
        if given == ["like"]:
            row = _int_param(params["like"], "like", 0)
            vector = await run_in_threadpool(index.vector, row)
            return {"kind": "row", "row": row, **result_json(index, index.result(row, 1.0))}, vector, row
        data = await upload.read() if hasattr(upload, "read") else None
        if data is None:
            raise InputError("'file' must be an uploaded file (multipart/form-data)")
        vector, modality = await run_in_threadpool(encoder.embed_upload, data, upload.filename or "")
        return {"kind": "file", "modality": modality, "filename": upload.filename}, vector, None

    async def _form_fields(request: Request) -> dict[str, Any]:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InputError("POST /api/search takes multipart/form-data (a 'file' field, and "
                             "optionally 'modality', 'k', 'offset')")
        form = await request.form(max_files=1, max_fields=8)
        return dict(form.items())

    async def media(request: Request) -> FileResponse:
        row = request.path_params["row"]
        path = await run_in_threadpool(index.media_path, row)
        media_type = mimetypes.guess_type(str(path))[0] if path else None
        if path is None or not (media_type or "").startswith(MEDIA_TYPES):
            raise KeyError(f"row {row} has no media file to serve")
        return FileResponse(path, media_type=media_type)

    async def page(request: Request) -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    routes = [Route("/", page), Route("/api/info", info), Route("/api/search", search,
                                                                 methods=["GET", "POST"]),
              Route("/media/{row:int}", media), Mount("/static", StaticFiles(directory=STATIC_DIR))]
    handlers = {CmcrError: _error_handler(400), UploadTypeError: _error_handler(415),
                KeyError: _error_handler(404), UploadTooLarge: _too_large,
                HTTPException: _http_error, Exception: _error_handler(500)}
    app = Starlette(routes=routes, exception_handlers=handlers)
    return BodyLimit(app, max_upload_bytes)


def _error_handler(status: int) -> Any:
    from starlette.responses import JSONResponse

    async def handle(request: Any, error: Exception) -> JSONResponse:
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        if status == 500:
            message = f"internal error ({type(error).__name__}); the server keeps serving"
        return JSONResponse({"error": message}, status_code=status)
    return handle


async def _too_large(request: Any, error: UploadTooLarge) -> Any:
    return too_large_response(error.args[0])


async def _http_error(request: Any, error: Any) -> Any:
    from starlette.responses import JSONResponse

    detail = error.detail if error.status_code != 404 else f"no such page: {request.url.path}"
    return JSONResponse({"error": detail}, status_code=error.status_code)


def serve(index: Index, host: str = "127.0.0.1", port: int = 8000,
          max_upload_bytes: int = 20_000_000) -> None:
    """Run the server until interrupted."""
    import uvicorn

    app = create_app(index, max_upload_bytes)
    print(f"cmcr: serving {index.path} ({len(index):,} rows: {', '.join(index.modalities)}) "
          f"at http://{host}:{port}  (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
