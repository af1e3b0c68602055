"""Queries into the joint space: texts, files and uploads through the right frozen space, then
the connected model's projector. Uploads are checked for what they really are before decoding."""

from __future__ import annotations

import copy
import io
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmcr.errors import CmcrError, ConfigError, InputError
from cmcr.data.processing import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS

MAX_QUERY_CHARS = 2000
IMAGE_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp",
                 "TIFF": ".tif"}
AUDIO_FORMATS = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3", "AIFF": ".aiff"}


class UploadTypeError(InputError):
    """An upload that is not an image or audio file, or not the kind its name says."""


class UploadLimitError(InputError):
    """An upload whose header says it would decode to more than the server's limits allow."""


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may decode to, checked from its header before any sample or pixel is
    decoded (a 14 KB PNG can hold 5,000,000 x 1 pixels, a 3 MB FLAC six hours of silence)."""

    max_seconds: float = 60.0  # cmcr serve --max-upload-seconds
    max_sample_rate: int = 192_000  # --max-sample-rate
    max_channels: int = 8  # --max-channels
    max_image_pixels: int = 40_000_000  # --max-image-pixels
    max_image_aspect: float = 100.0  # --max-image-aspect (long side / short side)


def sniff_upload(data: bytes, filename: str,
                 limits: UploadLimits | None = None) -> tuple[str, str]:
    """(modality, file suffix) of an upload, read from its bytes, not its name; an upload that
    is neither, whose name says another modality, or whose header is over ``limits``, is refused."""
    label = filename or "the upload"
    detected = _sniff_image(data, label) or _sniff_audio(data)
    if detected is None:
        raise UploadTypeError(f"{label}: neither an image ({', '.join(IMAGE_FORMATS)}) nor audio "
                         f"({', '.join(AUDIO_FORMATS)}) that cmcr can read")
    modality, suffix, file_format, header = detected
    named = Path(filename or "").suffix.lower()
    named_modality = ("image" if named in IMAGE_EXTENSIONS else
                      "audio" if named in AUDIO_EXTENSIONS else None)
    if named_modality is not None and named_modality != modality:
        raise UploadTypeError(f"{label}: named like {named_modality} ({named}), but its content is "
                         f"{file_format} {modality}")
    check = check_image_header if modality == "image" else check_audio_header
    check(header, label, limits or UploadLimits())
    return modality, suffix


def image_header(source: Any, label: str) -> tuple[str | None, tuple[int, int]] | None:
    """(format, (width, height)) from an image's header (a path or a binary stream), nothing
    decoded; None when PIL cannot open it as an image. PIL's decompression-bomb refusal is an
    UploadLimitError naming ``label``."""
    from PIL import Image

    try:
        with Image.open(source) as image:
            return image.format, image.size
    except Image.DecompressionBombError as err:  # PIL's own bound, met before ours when raised
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        shown = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        raise UploadLimitError(f"{label}: the image has {shown}, over PIL's decompression-bomb "
                               "limit; it is not decoded") from None
    except (OSError, ValueError, SyntaxError):
        return None


def _sniff_image(data: bytes, label: str) -> tuple[str, str, str, Any] | None:
    header = image_header(io.BytesIO(data), label)
    if header is None or header[0] not in IMAGE_FORMATS:
        return None
    file_format, size = header
    return "image", IMAGE_FORMATS[file_format], file_format, size


def _sniff_audio(data: bytes) -> tuple[str, str, str, Any] | None:
    import soundfile

    try:
        info = soundfile.info(io.BytesIO(data))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError):
        return None
    if info.format not in AUDIO_FORMATS:
        return None
    return "audio", AUDIO_FORMATS[info.format], info.format, info


def check_image_header(size: tuple[int, int], label: str, limits: UploadLimits) -> None:
    """Refuse an image whose header size is over the pixel or aspect-ratio limit (resizing a
    5,000,000 x 1 image to the encoder's short side would need gigabytes)."""
    width, height = size
    if width * height > limits.max_image_pixels:
        raise UploadLimitError(f"{label}: the image is {width:,} x {height:,} = "
                               f"{width * height:,} pixels; the limit is "
                               f"{limits.max_image_pixels:,} (cmcr serve --max-image-pixels)")
    aspect = max(width, height) / max(1, min(width, height))
    if aspect > limits.max_image_aspect:
        raise UploadLimitError(f"{label}: the image is {width:,} x {height:,}, an aspect ratio "
                               f"of {aspect:,.0f}:1; the limit is {limits.max_image_aspect:g}:1 "
                               "(cmcr serve --max-image-aspect)")


def check_audio_header(info: Any, label: str, limits: UploadLimits) -> None:
    """Refuse audio whose header (soundfile.info) gives a sample rate, channel count or duration
    (frames / rate) over ``limits``: decoding and resampling cost grows with each."""
    rate, channels, frames = int(info.samplerate), int(info.channels), int(info.frames)
    if rate > limits.max_sample_rate:
        raise UploadLimitError(f"{label}: the audio's sample rate is {rate:,} Hz; the limit is "
                               f"{limits.max_sample_rate:,} Hz (cmcr serve --max-sample-rate)")
    if channels > limits.max_channels:
        raise UploadLimitError(f"{label}: the audio has {channels:,} channels; the limit is "
                               f"{limits.max_channels} (cmcr serve --max-channels)")
    seconds = frames / max(rate, 1)
    if seconds > limits.max_seconds:
        raise UploadLimitError(f"{label}: the audio is {frames:,} frames at {rate:,} Hz = "
                               f"{seconds:,.1f} s; the limit is {limits.max_seconds:g} s "
                               "(cmcr serve --max-upload-seconds)")


@dataclass
class PreparedQuery:
    """An upload decoded and collated into its space's model inputs, ready for the forward pass."""

    modality: str
    space: str
    batch: dict[str, Any]


class QueryEncoder:
    """A connected model plus the frozen spaces behind it, loaded when a query first needs one.

    Only the forward pass is serialised by a lock, so one encoder can serve a threaded web
    server: uploads are decoded and collated outside it (:meth:`prepare_upload`), each thread
    with its own copy of the space's preprocessor (preprocessors are made for one worker each).
    """

    def __init__(self, model: Any, spaces: dict[str, str], device: str = "auto"):
        self.model = model
        self.space_specs = dict(spaces)
        self.device = device
        self._spaces: dict[str, Any] = {}
        self._lock = threading.Lock()  # the forward pass
        self._load_lock = threading.Lock()  # loading a space
        self._local = threading.local()  # each thread's preprocessors

    def space(self, name: str) -> Any:
        from cmcr.encoders import check_space_fits
        from cmcr.spaces import load_space

        with self._load_lock:
            if name not in self._spaces:
                spec = self.space_specs.get(name)
                if spec is None:
                    raise ConfigError(f"the index does not record which frozen space is behind "
                                      f"the model's '{name}' space; pass --space "
                                      f"{name}=KIND:NAME_OR_PATH")
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

    def _preprocessor(self, name: str, modality: str) -> Any:
        """This thread's own copy of the space's preprocessor for ``modality``."""
        made = self._local.__dict__.setdefault("preprocessors", {})
        if (name, modality) not in made:
            made[name, modality] = copy.deepcopy(self.space(name).preprocessor(modality))
        return made[name, modality]

    def check_upload(self, data: bytes, filename: str,
                     limits: UploadLimits | None = None) -> tuple[str, str]:
        """(modality, suffix) of an upload, sniffed and its header checked against ``limits``:
        quick (nothing is decoded), so a refusal never waits behind slow decodes."""
        if not data:
            raise InputError(f"{filename or 'the upload'}: the file is empty")
        return sniff_upload(data, filename, limits)

    def decode_upload(self, data: bytes, filename: str, modality: str,
                      suffix: str) -> PreparedQuery:
        """A checked upload -> its model inputs, decoded and collated with no lock held (the
        slow part: run it in a bounded pool)."""
        label = filename or "the upload"
        name = self.model.space_for(modality)
        preprocessor = self._preprocessor(name, modality)
        with tempfile.TemporaryDirectory(prefix="cmcr-upload-") as folder:
            path = Path(folder) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                batch = preprocessor.collate([preprocessor.prepare(path)])
            except InputError as err:
                refusal = InputError(str(err).replace(str(path), label))
            except MemoryError:
                refusal = UploadLimitError(f"{label}: not enough memory to decode it; lower the "
                                           "cmcr serve --max-* limits or send a smaller file")
            else:
                return PreparedQuery(modality, name, batch)
        raise refusal  # raised here, so no frame of the decoder (nor its arrays) stays referenced

    def prepare_upload(self, data: bytes, filename: str,
                       limits: UploadLimits | None = None) -> PreparedQuery:
        """An upload's bytes -> its model inputs (:meth:`check_upload`, then :meth:`decode_upload`)."""
        modality, suffix = self.check_upload(data, filename, limits)
        return self.decode_upload(data, filename, modality, suffix)

    def embed_prepared(self, prepared: PreparedQuery) -> np.ndarray:
        """A prepared upload through its space's tower and the projector (under the lock)."""
        with self._lock:
            frozen = self.space(prepared.space).encode(prepared.modality, prepared.batch)
            joint = self.model.project(prepared.space, frozen, prepared.modality)
        return joint[0].float().cpu().numpy()

    def embed_upload(self, data: bytes, filename: str,
                     limits: UploadLimits | None = None) -> tuple[np.ndarray, str]:
        """An uploaded file's bytes -> (joint-space row, its modality), after sniffing them."""
        prepared = self.prepare_upload(data, filename, limits)
        return self.embed_prepared(prepared), prepared.modality
