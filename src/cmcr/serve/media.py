"""What ``cmcr serve`` sends of a row's file: the file itself (only inside its collection's media
folder when it has one, and only when its content is the image, audio or video its row says),
an image row's thumbnail, an audio row's spectrogram thumbnail and its duration.

Thumbnails and spectrograms are bounded like uploads: at most MAX_THUMBNAIL pixels a side, an
image refused from its header when its pixels or aspect ratio are over the server's upload
limits, audio read for at most SPECTROGRAM_SECONDS and refused from its header when its sample
rate or channel count is over them; both are cached (LRU, THUMBNAIL_CACHE entries each).
"""

from __future__ import annotations

import functools
import io
import mimetypes
from pathlib import Path

import numpy as np

from cmcr.errors import InputError
from cmcr.serve.query import (AUDIO_FORMATS, IMAGE_FORMATS, UploadLimitError, UploadLimits,
                              check_image_header, image_header)

MAX_THUMBNAIL = 1024
THUMBNAIL_CACHE = 1024
SPECTROGRAM_SECONDS = 30.0  # read at most this much of a file for its spectrogram
SPECTROGRAM_DB = 80.0  # dynamic range drawn (dB below the loudest bin)
# magma-like colours from quiet to loud (dark purple -> pale yellow)
SPECTROGRAM_COLOURS = np.array([(0, 0, 4), (80, 18, 123), (183, 55, 121), (251, 136, 97),
                                (252, 253, 191)], dtype=np.float64)
AUDIO_MEDIA_TYPES = {"WAV": "audio/x-wav", "FLAC": "audio/flac", "OGG": "audio/ogg",
                     "MP3": "audio/mpeg", "AIFF": "audio/aiff"}
VIDEO_MAGIC = ((4, b"ftypqt", "video/quicktime"), (4, b"ftyp", "video/mp4"),
               (0, b"\x1aE\xdf\xa3", "video/webm"), (8, b"AVI ", "video/x-msvideo"))
SERVED_FOR = {"image": ("image/", "video/"), "audio": ("audio/", "video/"),  # a row's modality
              "video": ("video/",)}                                          # -> types it may be


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


def check_thumbnail_size(size: int, name: str = "thumb") -> int:
    if not 16 <= size <= MAX_THUMBNAIL:
        raise InputError(f"{name} must be between 16 and {MAX_THUMBNAIL} pixels, got {size}")
    return size


def jpeg(image: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@functools.lru_cache(maxsize=THUMBNAIL_CACHE)
def thumbnail(path: str, size: int, limits: UploadLimits = UploadLimits()) -> bytes:
    """An image file as a JPEG at most ``size`` pixels wide and high (decoded by cmcr's protocol),
    refused from its header when its pixels or aspect ratio are over the upload limits."""
    from cmcr.data.processing import load_image

    header = image_header(path, Path(path).name)
    if header is not None:  # None: not a still image (a video frame); load_image decides
        check_image_header(header[1], Path(path).name, limits)
    image = load_image(path)
    image.thumbnail((size, size))
    return jpeg(image)


@functools.lru_cache(maxsize=4 * THUMBNAIL_CACHE)
def duration(path: str) -> float | None:
    """An audio file's length in seconds, from its header (None when it has none)."""
    import soundfile

    try:
        info = soundfile.info(path)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError):
        return None
    return round(info.frames / info.samplerate, 3) if info.samplerate > 0 else None


@functools.lru_cache(maxsize=THUMBNAIL_CACHE)
def spectrogram(path: str, size: int, limits: UploadLimits = UploadLimits()) -> bytes:
    """The first SPECTROGRAM_SECONDS of an audio file as a ``size`` x ``size // 2`` JPEG:
    time left to right, log frequency bottom to top, loudness in colour (80 dB range)."""
    from PIL import Image

    mono, rate = read_for_spectrogram(path, limits)
    levels = spectrogram_levels(mono, rate, size, max(8, size // 2))
    pixels = np.stack([np.interp(levels, np.linspace(0, 1, len(SPECTROGRAM_COLOURS)),
                                 SPECTROGRAM_COLOURS[:, channel]) for channel in range(3)], -1)
    return jpeg(Image.fromarray(pixels.astype(np.uint8), mode="RGB"))


def read_for_spectrogram(path: str, limits: UploadLimits) -> tuple[np.ndarray, int]:
    """Mono float32 samples of at most SPECTROGRAM_SECONDS, read block by block (a refusal from
    the header when the rate or channel count is over the upload limits)."""
    import soundfile

    try:
        with soundfile.SoundFile(path) as sound:
            rate, channels = int(sound.samplerate), int(sound.channels)
            if rate > limits.max_sample_rate or channels > limits.max_channels:
                raise UploadLimitError(
                    f"{Path(path).name}: {rate:,} Hz, {channels} channels: over the server's limits "
                    f"({limits.max_sample_rate:,} Hz, {limits.max_channels} channels); no "
                    "spectrogram is drawn")
            frames = min(sound.frames, int(SPECTROGRAM_SECONDS * rate))
            blocks = [block.mean(axis=1) for block in sound.blocks(
                blocksize=65536, frames=frames, dtype="float32", always_2d=True)]
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise InputError(f"{Path(path).name}: unreadable audio ({err})") from None
    mono = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    return mono, rate


def spectrogram_levels(mono: np.ndarray, rate: int, width: int, height: int) -> np.ndarray:
    """(height, width) loudness in [0, 1]: ``width`` Hann windows spread over the sound, their
    power in dB on ``height`` log-spaced frequencies from 40 Hz to half the rate (top: high)."""
    n_fft = int(np.clip(2 ** round(np.log2(max(rate, 1) / 16)), 256, 4096))
    padded = np.pad(mono, (0, max(0, n_fft - len(mono))))
    starts = np.linspace(0, len(padded) - n_fft, width).astype(np.int64)
    windows = padded[starts[:, None] + np.arange(n_fft)] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(windows, axis=1)) ** 2  # (width, n_fft // 2 + 1)
    decibels = 10 * np.log10(power + 1e-12)
    bins = np.fft.rfftfreq(n_fft, 1 / max(rate, 1))
    wanted = np.geomspace(min(40.0, rate / 4), rate / 2, height)
    columns = np.stack([np.interp(wanted, bins, column) for column in decibels], axis=1)
    loudest = columns.max() if columns.size else 0.0
    return np.clip((columns - loudest + SPECTROGRAM_DB) / SPECTROGRAM_DB, 0, 1)[::-1]
