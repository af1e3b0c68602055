"""``cmcr serve``: the JSON API and the web page over an :class:`~cmcr.serve.index.Index`.

Starlette on uvicorn. Every answer to a bad request is a 4xx with ``{"error": "..."}``; media are
served by row number only (``/media/ROW``), so no path from a request ever reaches the disk, and
only files inside the index's media folder (when it has one) whose content is what they claim.
Uploads are checked against :class:`~cmcr.serve.query.UploadLimits` from their header, then decoded
in a small pool of threads outside the encoder's lock, so text queries keep answering meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
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
from cmcr.serve.access import TokenGuard, check_exposure, media_signature
from cmcr.serve.index import Index, NotInIndexError, SearchFilters
from cmcr.serve.metrics import CONTENT_TYPE, Metrics
from cmcr.serve.media import (SERVED_FOR, allowed_media_path, check_thumbnail_size, duration,
                              sniff_media, spectrogram, thumbnail)
from cmcr.serve.query import UploadLimitError, UploadLimits, UploadTypeError

STATIC_DIR = Path(__file__).parent / "static"
UPLOADS_PER_WORKER = 8  # uploads held at once (decoding or waiting) per decode thread; then 503
MAX_ROW_DIGITS = 18
THUMBNAIL_PIXELS = 256  # the thumbnails the page shows (thumb_url)


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




def _int_param(value: Any, name: str, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"'{name}' must be an integer, got {str(value)[:40]!r}") from None


def _float_param(value: Any, name: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if number != number or number in (float("inf"), float("-inf")):
        raise InputError(f"'{name}' must be a number, got {str(value)[:40]!r}")
    return number


def search_filters(params: dict[str, Any]) -> SearchFilters:
    """The filters of a search request: modality, collection (comma-separated), path_prefix,
    min_score, min_calibrated, dedup."""
    return SearchFilters(modality=params.get("modality") or None,
                         collections=tuple(name for name in str(params.get("collection") or "")
                                           .split(",") if name),
                         path_prefix=params.get("path_prefix") or None,
                         min_score=_float_param(params.get("min_score"), "min_score"),
                         min_calibrated=_float_param(params.get("min_calibrated"), "min_calibrated"),
                         dedup=_float_param(params.get("dedup"), "dedup"))


class ServerBusy(Exception):
    """Too many uploads are being decoded or waiting (answered 503 by the app's handler)."""


class UnservableMedia(Exception):
    """A row's file is not the image, audio or video it should be (answered 415)."""


class SearchAPI:
    """The handlers of the page, the API and the media over one index."""

    def __init__(self, index: Index, limits: UploadLimits | None = None, decode_workers: int = 2,
                 *, token: str | None = None, show_paths: bool = False):
        self.index = index
        self.token = token
        self.show_paths = show_paths
        self.encoder = index.encoder  # loads and checks the model now, so a wrong one fails at start
        self.limits = limits or UploadLimits()
        self.decoder = ThreadPoolExecutor(max_workers=decode_workers,
                                          thread_name_prefix="cmcr-decode")
        self.max_uploads = UPLOADS_PER_WORKER * decode_workers
        self.uploads = 0  # held now (decoding or waiting); counted on the event loop's thread

    async def page(self, request: Request) -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    async def info(self, request: Request) -> JSONResponse:
        return JSONResponse(self.described())

    def described(self) -> dict[str, Any]:
        """``/api/info``: the index's description; without ``show_paths``, folders by name only."""
        info = self.index.info()
        if self.show_paths:
            return info
        info["path"], info["model"] = Path(info["path"]).name, Path(info["model"]).name
        info["spaces"] = {name: _folder_name(spec) for name, spec in info["spaces"].items()}
        for collection in info["collections"]:
            collection["store"] = Path(collection["store"]).name
            collection["frozen_space"] = _folder_name(collection["frozen_space"])
            collection["media"] = collection["root"] = None
        return info

    async def search(self, request: Request) -> JSONResponse:
        began = time.perf_counter()
        params = dict(request.query_params)
        if request.method == "POST":
            params.update(await self.form_fields(request))
        k, offset = _int_param(params.get("k"), "k", 10), _int_param(params.get("offset"), "offset", 0)
        filters, rank = search_filters(params), params.get("rank") or "auto"
        query, vector, exclude = await self.query_vector(params)
        hits = await run_in_threadpool(functools.partial(
            self.index.search_vector, vector, k=k, offset=offset, exclude=exclude, rank=rank,
            filters=filters))
        return JSONResponse({"query": query, "k": k, "offset": offset,
                             "took_ms": round(1000 * (time.perf_counter() - began), 1),
                             "results": [self.result_json(hit) for hit in hits]})

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
            return {"kind": "row", **self.result_json(self.index.result(row, 1.0))}, vector, row
        upload = params["file"]
        if not hasattr(upload, "read"):
            raise InputError("'file' must be an uploaded file (multipart/form-data)")
        name = upload.filename or ""
        prepared = await self.decode_upload(upload, name)
        vector = await run_in_threadpool(self.encoder.embed_prepared, prepared)
        return {"kind": "file", "modality": prepared.modality, "filename": name}, vector, None

    async def decode_upload(self, upload: Any, name: str) -> Any:
        """The upload sniffed, checked and decoded in the decode pool (outside the encoder's
        lock); refused with 503 when the pool already holds its share of uploads."""
        if self.uploads >= self.max_uploads:
            raise ServerBusy(f"the server is decoding or holding {self.uploads} uploads (its "
                             f"limit); retry in a few seconds")
        self.uploads += 1
        try:
            data = await upload.read()
            modality, suffix = await run_in_threadpool(self.encoder.check_upload, data, name,
                                                       self.limits)
            return await asyncio.get_running_loop().run_in_executor(
                self.decoder, decode_and_trim, self.encoder, data, name, modality, suffix)
        finally:
            self.uploads -= 1

    @staticmethod
    async def form_fields(request: Request) -> dict[str, Any]:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InputError("POST /api/search takes multipart/form-data (a 'file' field, and "
                             "optionally 'modality', 'k', 'offset')")
        form = await request.form(max_files=1, max_fields=16)
        return dict(form.items())

    def result_json(self, hit: Any) -> dict[str, Any]:
        """A search hit as the API returns it: ``media_url`` and ``thumb_url`` (an image's
        thumbnail, an audio file's spectrogram) for rows with a media file, audio ``duration``."""
        found = hit.to_json()
        found["media_url"] = found["thumb_url"] = found["duration"] = None
        if not self.show_paths:
            found["source"] = None  # its path relative to the collection's root is "path"
        if hit.source is None:
            return found
        signed = f"sig={media_signature(self.token, hit.row)}" if self.token else ""
        found["media_url"] = f"/media/{hit.row}" + (f"?{signed}" if signed else "")
        kind = "spectrogram" if hit.modality == "audio" else "thumb"
        found["thumb_url"] = f"/media/{hit.row}?{kind}={THUMBNAIL_PIXELS}" + (
            f"&{signed}" if signed else "")
        if hit.modality == "audio":
            path = allowed_media_path(hit.source, self.index.collection_of(hit.row).media)
            found["duration"] = duration(str(path)) if path is not None else None
        return found

    async def media(self, request: Request) -> Response:
        """A row's file; ``?thumb=PX`` gives an image row as a JPEG at most PX wide and high,
        ``?spectrogram=PX`` an audio row's spectrogram, PX wide and PX / 2 high."""
        row = _row_param(request.path_params["row"])
        kinds = [kind for kind in ("thumb", "spectrogram") if kind in request.query_params]
        size = None
        if kinds:
            size = check_thumbnail_size(
                _int_param(request.query_params[kinds[0]], kinds[0], 0), kinds[0])
        path, media_type = await run_in_threadpool(self.media_file, row)
        if size is None:
            return FileResponse(path, media_type=media_type)
        if kinds[0] == "thumb" and not media_type.startswith(("image/", "video/")):
            raise InputError(f"thumb=PX is for image rows; row {row}'s file is {media_type} "
                             "(spectrogram=PX draws audio)")
        if kinds[0] == "spectrogram" and not media_type.startswith("audio/"):
            raise InputError(f"spectrogram=PX is for audio rows; row {row}'s file is {media_type}")
        drawing = thumbnail if kinds[0] == "thumb" else spectrogram
        draw = functools.partial(drawing, str(path), size, self.limits)
        data = await run_in_threadpool(draw)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    def media_file(self, row: int) -> tuple[Path, str]:
        """(file, media type sniffed from its content) of a row the server may send: inside the
        collection's media folder when it has one, and an image, audio or video as its row says."""
        found = self.index.result(row, 0.0)
        collection = self.index.collection_of(row)
        path = allowed_media_path(found.source, collection.media) if found.source else None
        if path is None:
            folder = collection.media if self.show_paths else "of its collection"
            where = f" inside the media folder {folder}" if collection.media else ""
            raise NotInIndexError(f"row {row} has no media file{where} to serve")
        media_type = sniff_media(path)
        if media_type is None or not media_type.startswith(SERVED_FOR.get(found.modality, ())):
            shown = f"is {media_type}" if media_type else "is not an image, audio or video file"
            raise UnservableMedia(f"row {row} is a {found.modality} row, but its file "
                                  f"{path.name} {shown}; it is not served")
        return path, media_type


def decode_and_trim(encoder: Any, data: bytes, name: str, modality: str, suffix: str) -> Any:
    """``encoder.decode_upload``, then the freed decoding buffers handed back to the system."""
    try:
        return encoder.decode_upload(data, name, modality, suffix)
    finally:
        trim_memory()


def trim_memory() -> None:
    """Return the C heap's free pages to the system (glibc's malloc_trim; nothing elsewhere):
    a decode's buffers are smaller than glibc's mmap threshold once it has grown, so they are
    freed into the heap, where they would keep the server's RSS at its peak."""
    if _libc() is not None:
        _libc().malloc_trim(0)


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _folder_name(spec: str | None) -> str | None:
    """A space spec with a local folder (``clip:/models/clip``) shown by the folder's name only
    (``clip:clip``); hub names (``clip:openai/clip-vit-base-patch32``) as they are."""
    if not spec:
        return spec
    kind, colon, where = spec.partition(":")
    return f"{kind}:{Path(where).name}" if colon and Path(where).is_absolute() else spec


def _row_param(text: str) -> int:
    """``/media/ROW``'s row: digits only (else no such page), at most 18 of them."""
    if not (text.isascii() and text.isdigit()):
        raise HTTPException(404)
    if len(text) > MAX_ROW_DIGITS:
        raise NotInIndexError(f"row {text[:12]}... ({len(text):,} digits) is not in the index")
    return int(text)


def create_app(index: Index, max_upload_bytes: int = 20_000_000,
               limits: UploadLimits | None = None, decode_workers: int = 2, *,
               token: str | None = None, show_paths: bool = False) -> Metrics:
    """The ASGI application: the page, the API, the media and the metrics, behind the token
    (when given) and the upload limit; uploads are held to ``limits`` and decoded by
    ``decode_workers`` threads; paths are relative to each collection's root unless
    ``show_paths``."""
    api = SearchAPI(index, limits, decode_workers, token=token, show_paths=show_paths)
    metrics = Metrics(None, rows=len(index))

    async def metrics_page(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    routes = [Route("/", api.page), Route("/api/info", api.info),
              Route("/api/search", api.search, methods=["GET", "POST"]),
              Route("/media/{row}", api.media), Route("/metrics", metrics_page),
              Mount("/static", StaticFiles(directory=STATIC_DIR))]
    handlers = {CmcrError: _error_handler(400), UploadTypeError: _error_handler(415),
                UploadLimitError: _error_handler(413), UnservableMedia: _error_handler(415),
                NotInIndexError: _error_handler(404), ServerBusy: _error_handler(503),
                UploadTooLarge: _too_large, HTTPException: _http_error,
                Exception: _error_handler(500)}

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        api.decoder.shutdown(wait=False, cancel_futures=True)

    starlette = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    limited = BodyLimit(starlette, max_upload_bytes)
    metrics.app = TokenGuard(limited, token) if token else limited
    return metrics


def _error_handler(status: int) -> Any:
    async def handle(request: Any, error: Exception) -> JSONResponse:
        message = str(error)
        if status == 500:
            message = f"internal error ({type(error).__name__}); the server keeps serving"
        release_frames(error)
        return JSONResponse({"error": message}, status_code=status)
    return handle


def release_frames(error: BaseException) -> None:
    """Clear the local variables of every finished frame in ``error``'s tracebacks (and those of
    its causes): a failed decode's arrays would otherwise live on in reference cycles with the
    exception until a full garbage collection, and memory would stay high after the request."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


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
          max_upload_bytes: int = 20_000_000, limits: UploadLimits | None = None,
          decode_workers: int = 2, *, token: str | None = None, show_paths: bool = False) -> None:
    """Run the server until interrupted (refused beyond loopback without a token)."""
    import uvicorn

    check_exposure(host, token)
    check_port_free(host, port)
    app = create_app(index, max_upload_bytes, limits, decode_workers, token=token,
                     show_paths=show_paths)
    index.encoder.warm_up(["text", "image", "audio"])
    guarded = "; every API and media request needs the token" if token else ""
    print(f"cmcr: serving {index.path} ({len(index):,} rows: {', '.join(index.modalities)}) "
          f"at http://{host}:{port}{guarded}  (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
