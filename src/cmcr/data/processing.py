"""Files -> encoder inputs, with one fixed protocol (docs/encoders.md says why each choice).

- images: decoded fully (a truncated file is an error, not a grey half), EXIF rotation applied,
  converted to RGB; transparency (RGBA, LA, palette with transparency) is composited on white;
  CMYK and palette images are converted; 16-bit and float images are scaled to 8 bit.
- audio: soundfile decodes (WAV, FLAC, OGG, MP3 where libsndfile supports it); all channels are
  averaged to mono; soxr resamples (HQ) to the model's rate. Length is left alone: the space's
  preprocessor pads or crops with its own fixed rule.
- video: PyAV decodes the frame shown at a chosen time (default: the middle of the clip) and the
  first audio track (averaged to mono and resampled like any audio).
- texts: .txt (one per line, lines end only at \n, empty lines skipped, id = 1-based line
  number), .csv / .jsonl / .parquet (one column of strings, id = 1-based row number or an id
  column).
- only regular files are opened: a FIFO would block forever, a dangling link reads as missing.

Every failure raises :class:`cmcr.errors.InputError` naming the path and the reason.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import stat
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cmcr.errors import InputError, MissingDependencyError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov")
TEXT_EXTENSIONS = (".txt", ".csv", ".jsonl", ".parquet")
TEXT_COLUMNS = ("text", "caption", "sentence")  # tried in order when no column is named

WHITE = (255, 255, 255)


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


FILE_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
              (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))


def check_regular_file(path: str | Path) -> None:
    """Refuse anything but a regular file before it is opened: opening a FIFO blocks forever, and
    a dangling link or a link loop would otherwise read as a plain 'not found'."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputError(f"{path}: dangling symbolic link (its target "
                             f"'{os.readlink(path)}' does not exist)") from None
        raise InputError(f"{path}: file not found") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputError(f"{path}: symbolic link loop") from None
        raise InputError(f"{path}: cannot read ({_reason(err)})") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in FILE_KINDS if test(mode)), "special file")
        raise InputError(f"{path}: not a regular file ({kind})")


# -- images --------------------------------------------------------------------------------------
def load_image(path: str | Path, frame_time: float | None = None) -> Any:
    """An image file (or a video's frame at ``frame_time`` s, default the middle) -> RGB PIL image."""
    path = Path(path)
    if is_video(path):
        return load_video_frame(path, frame_time)
    check_regular_file(path)  # before opening: a FIFO would block forever
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.load()  # decode now: truncated and corrupt files fail here, not later
            image = ImageOps.exif_transpose(image) or image
            return to_rgb(image, source=path)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise InputError(f"{path}: cannot decode image ({_reason(err)})") from None


def to_rgb(image: Any, source: str | Path = "<image>") -> Any:
    """Any PIL mode -> RGB: alpha composited on white, CMYK/palette converted, high bit depths
    scaled. A float image with NaN or infinite pixels is refused (``source`` names it), as such
    audio is."""
    from PIL import Image

    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        pixels = np.asarray(image, dtype=np.float32)
        if not np.isfinite(pixels).all():
            raise InputError(f"{source}: the image holds NaN or infinite pixel values")
        scale = 257.0 if image.mode.startswith("I;16") else max(1.0, float(pixels.max()) / 255.0)
        image = Image.fromarray(np.clip(pixels / scale, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image.copy()


# -- audio ---------------------------------------------------------------------------------------
def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """An audio file (or a video's audio track) -> float32 mono samples at ``sample_rate``."""
    path = Path(path)
    if is_video(path):
        return load_video_audio(path, sample_rate)
    check_regular_file(path)  # before opening: a FIFO would block forever
    import soundfile

    check_riff_complete(path)
    try:
        mono, source_rate = read_mono(path)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as err:
        raise InputError(f"{path}: cannot decode audio ({_reason(err)})") from None
    return finish_audio(mono, source_rate, sample_rate, path)


AUDIO_BLOCK_FRAMES = 65536


def read_mono(path: Path) -> tuple[np.ndarray, int]:
    """(float32 mono samples, sample rate), channels averaged block by block: memory holds the
    mono samples, not every channel; a short block ends the reading, so a header that claims
    more frames than the file holds cannot make it loop."""
    import soundfile

    blocks = []
    with soundfile.SoundFile(str(path)) as audio:
        while len(block := audio.read(AUDIO_BLOCK_FRAMES, dtype="float32", always_2d=True)):
            blocks.append(block.mean(axis=1))
            if len(block) < AUDIO_BLOCK_FRAMES:
                break
        source_rate = audio.samplerate
    return (np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)), source_rate


def check_riff_complete(path: Path) -> None:
    """Refuse a WAV (RIFF) file shorter than its header says: libsndfile would quietly decode
    the part that is there. Streaming writers' placeholder sizes (0, 0xFFFFFFFF) are allowed."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(12)
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({_reason(err)})") from None
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return
    declared = int.from_bytes(header[4:8], "little") + 8
    if 8 < declared < 0xFFFFFFF0 and size < declared:
        raise InputError(f"{path}: truncated WAV file: its header declares {declared:,} bytes, "
                         f"the file has {size:,}")


def finish_audio(mono: np.ndarray, source_rate: int, sample_rate: int, path: Path | str) -> np.ndarray:
    """Mono samples at ``source_rate`` -> float32 at ``sample_rate`` (soxr HQ), checked."""
    import soxr

    if mono.size == 0:
        raise InputError(f"{path}: the audio holds no samples")
    if not np.isfinite(mono).all():
        raise InputError(f"{path}: the audio holds NaN or infinite samples")
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if source_rate != sample_rate:
        mono = soxr.resample(mono, source_rate, sample_rate, quality="HQ").astype(np.float32)
    if mono.size == 0:  # a handful of samples can resample to none
        mono = np.zeros(1, dtype=np.float32)
    return mono


# -- video ---------------------------------------------------------------------------------------
def _require_av() -> Any:
    try:
        import av
    except ImportError:
        raise MissingDependencyError("reading video needs PyAV: pip install av "
                                     "(or pip install 'cmcr[video]')") from None
    return av


def _open_video(path: Path) -> Any:
    av = _require_av()
    check_regular_file(path)
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as err:
        raise InputError(f"{path}: cannot open video ({_reason(err)})") from None


def video_duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # microseconds (av.time_base)
    return None


@contextlib.contextmanager
def _first_stream(path: Path, kind: str, missing: str) -> Iterator[tuple[Any, Any]]:
    """The opened video file and its first ``kind`` stream ("video" or "audio"); an InputError
    saying ``missing`` when it has none."""
    with _open_video(path) as container:
        streams = getattr(container.streams, kind)
        if not streams:
            raise InputError(f"{path}: {missing}")
        yield container, streams[0]


def load_video_frame(path: str | Path, time_s: float | None = None) -> Any:
    """The frame on screen at ``time_s`` seconds (default: the middle of the video) as RGB PIL."""
    path = Path(path)
    av = _require_av()
    with _first_stream(path, "video", "no video stream") as (container, stream):
        if time_s is None:
            duration = video_duration(container, stream)
            time_s = duration / 2 if duration else 0.0
        try:
            frame = _frame_at(container, stream, time_s)
        except (av.FFmpegError, OSError, ValueError) as err:
            raise InputError(f"{path}: cannot decode video ({_reason(err)})") from None
    if frame is None:
        raise InputError(f"{path}: no decodable frame")
    return to_rgb(frame.to_image())


def _frame_at(container: Any, stream: Any, time_s: float) -> Any:
    """Decode from the keyframe before ``time_s``; keep the last frame starting at or before it."""
    if time_s > 0 and stream.time_base is not None:
        container.seek(int(time_s / stream.time_base), stream=stream, backward=True, any_frame=False)
    chosen = None
    for frame in container.decode(stream):
        if chosen is not None and frame.time is not None and frame.time > time_s + 1e-6:
            break
        chosen = frame
    return chosen


def load_video_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """A video's first audio track -> float32 mono at ``sample_rate`` (channels averaged, soxr)."""
    path = Path(path)
    av = _require_av()
    with _first_stream(path, "audio", "no audio track") as (container, stream):
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                for planar in resampler.resample(frame):
                    chunks.append(planar.to_ndarray().mean(axis=0))
            for planar in resampler.resample(None):
                chunks.append(planar.to_ndarray().mean(axis=0))
        except (av.FFmpegError, OSError, ValueError) as err:
            raise InputError(f"{path}: cannot decode the audio track ({_reason(err)})") from None
        source_rate = stream.rate
    mono = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    return finish_audio(mono, source_rate, sample_rate, path)


# -- texts ---------------------------------------------------------------------------------------
Row = tuple[str, dict[str, Any]]  # where a row sits in its file ("line 3", "row 3"), its values
JSON_KINDS = {type(None): "null", bool: "a boolean", int: "a number", float: "a number",
              list: "an array", dict: "an object"}


def read_texts(path: str | Path, column: str | None = None,
               id_column: str | None = None) -> list[tuple[str, str]]:
    """A text file or table -> [(id, text)]; empty texts are skipped but ids stay the line/row
    numbers. A value that is not a string (a JSON number, null, list...) is an error naming its
    line; a parquet null is a missing text, skipped like an empty one."""
    path = Path(path)
    check_regular_file(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(path)
    elif suffix == ".jsonl":
        rows = _jsonl_rows(path)
    elif suffix == ".parquet":
        rows = _parquet_rows(path)
    else:
        return [(str(number), line.strip()) for number, line in enumerate(_text_lines(path), 1)
                if line.strip()]
    return _column_texts(path, rows, column, id_column, null_is_empty=suffix == ".parquet")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.start}): re-save it as UTF-8") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({_reason(err)})") from None


def split_lines(text: str) -> list[str]:
    """Lines that end only at \n (a CRLF's \r dropped): str.splitlines would also break at
    U+2028/U+2029, form feeds, vertical tabs, \x1c-\x1e and \x85, which belong inside a text."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _text_lines(path: Path) -> list[str]:
    return split_lines(_read_text(path))


def _csv_rows(path: Path) -> list[Row]:
    """A CSV with a header row -> one dict per row, placed by the line it starts on. An unclosed
    quote (which would swallow every later row) or a row whose field count differs from the
    header's is an error naming its line; blank lines are skipped, as csv.DictReader does."""
    lines = io.StringIO(_read_text(path), newline="").readlines()
    reader = csv.reader(lines, strict=True)
    records: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for fields in reader:
            if fields:
                records.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as err:
        raise InputError(_csv_problem(path, lines, start, reader.line_num, err)) from None
    if not records:
        return []
    header = records[0][1]
    rows = []
    for line, fields in records[1:]:
        if len(fields) != len(header):
            raise InputError(f"{path}, line {line}: {len(fields)} fields, the header has "
                             f"{len(header)} (a comma inside a text needs quotes around the text)")
        rows.append((f"line {line}", dict(zip(header, fields))))
    return rows


def _csv_problem(path: Path, lines: list[str], start: int, line: int, err: csv.Error) -> str:
    """The message for a CSV that csv's strict reader refused in the row starting at ``start``."""
    opened = _unclosed_quote_line(lines[start - 1:], start)
    if opened is not None:
        return (f"{path}, line {opened}: unclosed quote: the quoted field that starts on this line "
                "never ends, so every later row would merge into it")
    hint = f"; the row starts on line {start}: is a quote left open there?" if line > start else ""
    return f"{path}, line {line}: malformed CSV ({err}){hint}"


def _unclosed_quote_line(lines: list[str], first: int) -> int | None:
    """The line where a quoted field still open at the end of ``lines`` (``lines[0]`` is line
    ``first``) starts, or None when every quote closes; csv's default (excel) dialect."""
    state, opened = "start", None
    for number, line in enumerate(lines, first):
        for char in line:
            if state == "quoted":
                state = "closing" if char == '"' else "quoted"
            elif state == "closing" and char == '"':
                state = "quoted"  # a doubled quote inside a quoted field
            elif state == "start" and char == '"':
                state, opened = "quoted", number
            else:
                state = "start" if char in ",\r\n" else "field"
    return opened if state == "quoted" else None


def _jsonl_rows(path: Path) -> list[Row]:
    rows: list[Row] = []
    for number, line in enumerate(_text_lines(path), 1):
        if not line.strip():
            rows.append((f"line {number}", {}))
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}, line {number}: not JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}, line {number}: expected a JSON object per line")
        rows.append((f"line {number}", row))
    return rows


def _parquet_rows(path: Path) -> list[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError("reading .parquet needs pyarrow: pip install pyarrow") from None
    try:
        table = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises its own error types for damaged files
        raise InputError(f"{path}: cannot read parquet ({_reason(err)})") from None
    return [(f"row {number}", row) for number, row in enumerate(table, 1)]


def _column_texts(path: Path, rows: list[Row], column: str | None, id_column: str | None,
                  null_is_empty: bool = False) -> list[tuple[str, str]]:
    """Rows -> [(id, text)] from the text column; a value that is not a string is an error."""
    if not rows:
        return []
    column = _text_column(path, rows, column, id_column)
    texts = []
    for number, (where, row) in enumerate(rows, 1):
        text = row.get(column, "")
        if text is None and null_is_empty:
            continue
        if not isinstance(text, str):
            raise InputError(_wrong_type(path, where, column, text, "a string"))
        if text.strip():
            texts.append((_row_id(path, where, row, id_column, number), text.strip()))
    return texts


def _text_column(path: Path, rows: list[Row], column: str | None, id_column: str | None) -> str:
    keys = list(dict.fromkeys(k for _, row in rows for k in row))
    if column is None:
        column = next((c for c in TEXT_COLUMNS if c in keys), keys[0] if len(keys) == 1 else None)
        if column is None:
            raise InputError(f"{path}: name the text column (--column); columns: {keys}")
    for name in (column, id_column):
        if name is not None and name not in keys:
            raise InputError(f"{path}: no column '{name}'; columns: {keys}")
    return column


def _row_id(path: Path, where: str, row: dict[str, Any], id_column: str | None,
            number: int) -> str:
    """The row's id: its 1-based number, or its id column's string or integer."""
    if id_column is None:
        return str(number)
    if id_column not in row:
        raise InputError(f"{path}, {where}: no '{id_column}' id")
    value = row[id_column]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(_wrong_type(path, where, id_column, value, "a string or an integer"))
    return str(value)


def _wrong_type(path: Path, where: str, column: str, value: Any, wanted: str) -> str:
    """The message for a value of the wrong type, naming its JSON type and showing it briefly."""
    kind = JSON_KINDS.get(type(value), f"a {type(value).__name__}")
    try:
        shown = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        shown = repr(value)
    shown = "" if value is None else f" ({shown[:37] + '...' if len(shown) > 40 else shown})"
    return f"{path}, {where}: the '{column}' value is {kind}{shown}, not {wanted}"
