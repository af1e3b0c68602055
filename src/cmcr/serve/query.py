"""Queries into the joint space: texts, files and uploads through the right frozen space, then
the connected model's projector. Uploads are checked for what they really are before decoding."""

from __future__ import annotations

import io
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from cmcr.errors import CmcrError, ConfigError, InputError
from cmcr.processing import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS

MAX_QUERY_CHARS = 2000
IMAGE_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp",
                 "TIFF": ".tif"}
AUDIO_FORMATS = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3", "AIFF": ".aiff"}


class UploadTypeError(InputError):
    """An upload that is not an image or audio file, or not the kind its name says."""


def sniff_upload(data: bytes, filename: str) -> tuple[str, str]:
    """(modality, file suffix) of an upload, read from its bytes, not its name; an upload that
    is neither, or whose name says another modality, is refused."""
    detected = _sniff_image(data) or _sniff_audio(data)
    label = filename or "the upload"
    if detected is None:
        raise UploadTypeError(f"{label}: neither an image ({', '.join(IMAGE_FORMATS)}) nor audio "
                         f"({', '.join(AUDIO_FORMATS)}) that cmcr can read")
    modality, suffix, file_format = detected
    named = Path(filename or "").suffix.lower()
    named_modality = ("image" if named in IMAGE_EXTENSIONS else
                      "audio" if named in AUDIO_EXTENSIONS else None)
    if named_modality is not None and named_modality != modality:
        raise UploadTypeError(f"{label}: named like {named_modality} ({named}), but its content is "
                         f"{file_format} {modality}")
    return modality, suffix


def _sniff_image(data: bytes) -> tuple[str, str, str] | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            file_format = image.format
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return ("image", IMAGE_FORMATS[file_format], file_format) if file_format in IMAGE_FORMATS else None


def _sniff_audio(data: bytes) -> tuple[str, str, str] | None:
    import soundfile

    try:
        file_format = soundfile.info(io.BytesIO(data)).format
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError):
        return None
    return ("audio", AUDIO_FORMATS[file_format], file_format) if file_format in AUDIO_FORMATS else None


class QueryEncoder:
    """A connected model plus the frozen spaces behind it, loaded when a query first needs one.

    Embedding is serialised by a lock, so one encoder can serve a threaded web server.
    """

    def __init__(self, model: Any, spaces: dict[str, str], device: str = "auto"):
        self.model = model
        self.space_specs = dict(spaces)
        self.device = device
        self._spaces: dict[str, Any] = {}
        self._lock = threading.Lock()

    def space(self, name: str) -> Any:
        from cmcr.encoders import check_space_fits
        from cmcr.spaces import load_space

        if name not in self._spaces:
            spec = self.space_specs.get(name)
            if spec is None:
                raise ConfigError(f"the index does not record which frozen space is behind the "
                                  f"model's '{name}' space; pass --space {name}=KIND:NAME_OR_PATH")
            space = load_space(spec, device=self.device)
            check_space_fits(self.model, name, space)
            self._spaces[name] = space
        return self._spaces[name]

    def warm_up(self, modalities: list[str]) -> None:
        """Load the towers that queries of ``modalities`` will need (so the first query is fast);
        a space that cannot be loaded is left for its first query to report."""
        for modality in modalities:
            try:
                name = self.model.space_for(modality)
                space = self.space(name)
                if hasattr(space, "tower"):
                    space.tower(modality)
            except CmcrError:
                continue

    def embed(self, modality: str, item: Any) -> np.ndarray:
        """One text, path or decoded item of ``modality`` -> (d,) joint-space unit row."""
        name = self.model.space_for(modality)
        with self._lock:
            frozen = self.space(name).embed(modality, [item])
            return self.model.project(name, frozen, modality)[0].float().cpu().numpy()

    def embed_text(self, text: str) -> np.ndarray:
        text = (text or "").strip()
        if not text:
            raise ConfigError("the text query is empty")
        if len(text) > MAX_QUERY_CHARS:
            raise ConfigError(f"the text query has {len(text)} characters; at most "
                              f"{MAX_QUERY_CHARS} are accepted")
        return self.embed("text", text)

    def embed_file(self, path: str | Path, modality: str) -> np.ndarray:
        path = Path(path).expanduser()
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        return self.embed(modality, str(path))

    def embed_upload(self, data: bytes, filename: str) -> tuple[np.ndarray, str]:
        """An uploaded file's bytes -> (joint-space row, its modality), after sniffing them."""
        if not data:
            raise InputError(f"{filename or 'the upload'}: the file is empty")
        modality, suffix = sniff_upload(data, filename)
        with tempfile.TemporaryDirectory(prefix="cmcr-upload-") as folder:
            path = Path(folder) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                return self.embed_file(path, modality), modality
            except InputError as err:
                raise InputError(str(err).replace(str(path), filename or "the upload")) from None
