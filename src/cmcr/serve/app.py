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
import io
import mimetypes
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
from cmcr.serve.index import Index, NotInIndexError
from cmcr.serve.query import (AUDIO_FORMATS, IMAGE_FORMATS, UploadLimitError, UploadLimits,
                              UploadTypeError)

STATIC_DIR = Path(__file__).parent / "static"
MAX_THUMBNAIL = 1024
UPLOADS_PER_WORKER = 8  # uploads held at once (decoding or waiting) per decode thread; then 503
MAX_ROW_DIGITS = 18
AUDIO_MEDIA_TYPES = {"WAV": "audio/x-wav", "FLAC": "audio/flac", "OGG": "audio/ogg",
                     "MP3": "audio/mpeg", "AIFF": "audio/aiff"}
VIDEO_MAGIC = ((4, b"ftypqt", "video/quicktime"), (4, b"ftyp", "video/mp4"),
               (0, b"\x1aE\xdf\xa3", "video/webm"), (8, b"AVI ", "video/x-msvideo"))
SERVED_FOR = {"image": ("image/", "video/"), "audio": ("audio/", "video/"),  # a row's modality
              "video": ("video/",)}                                          # -> types it may be


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


class ServerBusy(Exception):
    """Too many uploads are being decoded or waiting (answered 503 by the app's handler)."""


class UnservableMedia(Exception):
    """A row's file is not the image, audio or video it should be (answered 415)."""


class SearchAPI:
    """The handlers of the page, the API and the media over one index."""

    def __init__(self, index: Index, limits: UploadLimits | None = None, decode_workers: int = 2):
        self.index = index
        self.encoder = index.encoder  # loads and checks the model now, so a wrong one fails at start
        self.limits = limits or UploadLimits()
        self.decoder = ThreadPoolExecutor(max_workers=decode_workers,
                                          thread_name_prefix="cmcr-decode")
        self.max_uploads = UPLOADS_PER_WORKER * decode_workers
        self.uploads = 0  # held now (decoding or waiting); counted on the event loop's thread

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
        rank = params.get("rank") or "auto"
        query, vector, exclude = await self.query_vector(params)
        hits = await run_in_threadpool(functools.partial(
            self.index.search_vector, vector, modality, k, offset, exclude, rank=rank))
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
        form = await request.form(max_files=1, max_fields=8)
        return dict(form.items())

    async def media(self, request: Request) -> Response:
        """A row's file; ``?thumb=PX`` gives an image row as a JPEG at most PX wide and high."""
        row = _row_param(request.path_params["row"])
        size = None
        if "thumb" in request.query_params:
            size = _int_param(request.query_params["thumb"], "thumb", 0)
            if not 16 <= size <= MAX_THUMBNAIL:
                raise InputError(f"thumb must be between 16 and {MAX_THUMBNAIL} pixels, got {size}")
        path, media_type = await run_in_threadpool(self.media_file, row)
        if size is None:
            return FileResponse(path, media_type=media_type)
        if not media_type.startswith(("image/", "video/")):
            raise InputError(f"thumb=PX is for image rows; row {row}'s file is {media_type}")
        data = await run_in_threadpool(thumbnail, str(path), size)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    def media_file(self, row: int) -> tuple[Path, str]:
        """(file, media type sniffed from its content) of a row the server may send: inside the
        collection's media folder when it has one, and an image, audio or video as its row says."""
        found = self.index.result(row, 0.0)
        collection = self.index.collection_of(row)
        path = allowed_media_path(found.source, collection.media) if found.source else None
        if path is None:
            where = f" inside the media folder {collection.media}" if collection.media else ""
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


def _row_param(text: str) -> int:
    """``/media/ROW``'s row: digits only (else no such page), at most 18 of them."""
    if not (text.isascii() and text.isdigit()):
        raise HTTPException(404)
    if len(text) > MAX_ROW_DIGITS:
        raise NotInIndexError(f"row {text[:12]}... ({len(text):,} digits) is not in the index")
    return int(text)


def allowed_media_path(source: str, media: str | None) -> Path | None:
    """The regular file ``source`` names, or None: with a media folder, it must resolve (links
    followed) inside it, absolute paths included; without one, only absolute paths are served."""
    try:
        if media is None:
            path = Path(source)
            if not path.is_absolute():
                return None
        else:
            folder = Path(media).resolve()
            path = (folder / source).resolve()
            if not path.is_relative_to(folder):
                return None
        return path if path.is_file() else None
    except (OSError, ValueError, RuntimeError):  # a name too long, a NUL byte, a link loop
        return None


def sniff_media(path: Path) -> str | None:
    """A file's media type from its content (video magic bytes, PIL, libsndfile), or None."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return None
    for offset, magic, media_type in VIDEO_MAGIC:
        if head[offset:offset + len(magic)] == magic:
            guessed = mimetypes.guess_type(path.name)[0] or ""
            return guessed if guessed.startswith("video/") else media_type
    return _image_media_type(path) or _audio_media_type(path)


def _image_media_type(path: Path) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            file_format = image.format
    except Image.DecompressionBombError:  # an image, too large for PIL to open: sent as it is
        guessed = mimetypes.guess_type(path.name)[0] or ""
        return guessed if guessed.startswith("image/") else None
    except (OSError, ValueError, SyntaxError):
        return None
    return Image.MIME.get(file_format) if file_format in IMAGE_FORMATS else None


def _audio_media_type(path: Path) -> str | None:
    import soundfile

    try:
        file_format = soundfile.info(str(path)).format
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError):
        return None
    return AUDIO_MEDIA_TYPES.get(file_format) if file_format in AUDIO_FORMATS else None


@functools.lru_cache(maxsize=1024)
def thumbnail(path: str, size: int) -> bytes:
    """An image file as a JPEG at most ``size`` pixels wide and high (decoded by cmcr's protocol)."""
    from cmcr.processing import load_image

    image = load_image(path)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def create_app(index: Index, max_upload_bytes: int = 20_000_000,
               limits: UploadLimits | None = None, decode_workers: int = 2) -> BodyLimit:
    """The ASGI application: the page, the API and the media, behind the upload limit; uploads
    are held to ``limits`` and decoded by ``decode_workers`` threads."""
    api = SearchAPI(index, limits, decode_workers)
    routes = [Route("/", api.page), Route("/api/info", api.info),
              Route("/api/search", api.search, methods=["GET", "POST"]),
              Route("/media/{row}", api.media),
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
    return BodyLimit(starlette, max_upload_bytes)


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
          decode_workers: int = 2) -> None:
    """Run the server until interrupted."""
    import uvicorn

    check_port_free(host, port)
    app = create_app(index, max_upload_bytes, limits, decode_workers)
    index.encoder.warm_up(["text", "image", "audio"])
    print(f"cmcr: serving {index.path} ({len(index):,} rows: {', '.join(index.modalities)}) "
          f"at http://{host}:{port}  (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
