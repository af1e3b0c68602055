"""Inputs that name part of a file (one video frame, one stretch of audio), decoded only when a
space embeds them. Readers describe what to read; they never decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmcr.errors import InputError


@dataclass(frozen=True)
class VideoFrame:
    """The frame on screen at ``time_s`` seconds of a video file."""

    path: Path
    time_s: float

    @property
    def cache_key(self) -> str:
        return f"{self.path}@{self.time_s:.3f}s"

    def exists(self) -> bool:
        return Path(self.path).is_file()


@dataclass(frozen=True)
class AudioSegment:
    """Seconds ``[start_s, end_s)`` of an audio file or a video's audio track."""

    path: Path
    start_s: float
    end_s: float

    @property
    def cache_key(self) -> str:
        return f"{self.path}@{self.start_s:.3f}-{self.end_s:.3f}s"

    def exists(self) -> bool:
        return Path(self.path).is_file()


def read_segment(segment: AudioSegment, sample_rate: int) -> np.ndarray:
    """Mono samples of ``segment`` at ``sample_rate``. An audio file is read from the segment's
    start only (a MUSIC clip lasts minutes; thousands of frames each need one second of it); a
    video's track is decoded whole and cut."""
    from cmcr.data.processing import check_regular_file, finish_audio, is_video, load_audio

    path = Path(segment.path)
    if is_video(path):
        samples = load_audio(path, sample_rate)
        return samples[int(round(segment.start_s * sample_rate)):int(round(segment.end_s * sample_rate))]
    import soundfile

    check_regular_file(path)
    try:
        with soundfile.SoundFile(str(path)) as sound:
            rate = sound.samplerate
            sound.seek(min(int(round(segment.start_s * rate)), sound.frames))
            frames = sound.read(int(round((segment.end_s - segment.start_s) * rate)),
                                dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as err:
        raise InputError(f"{path}: cannot decode audio ({type(err).__name__}: {err})") from None
    if frames.size == 0:
        return np.zeros(0, dtype=np.float32)
    return finish_audio(frames.mean(axis=1), rate, sample_rate, path)


def decode(item: Any, modality: str, sample_rate: int | None) -> Any:
    """A :class:`VideoFrame` -> RGB PIL image; an :class:`AudioSegment` -> mono samples at
    ``sample_rate``; anything else unchanged (the space decodes paths itself)."""
    from cmcr.data.processing import load_image

    if isinstance(item, VideoFrame):
        return load_image(item.path, item.time_s)
    if isinstance(item, AudioSegment):
        if sample_rate is None:
            raise InputError(f"{item.path}: a {modality} space without a sample rate cannot read "
                             "a stretch of audio")
        segment = read_segment(item, sample_rate)
        if segment.size == 0:
            raise InputError(f"{item.path}: no audio in {item.start_s:g}-{item.end_s:g} s (the "
                             "file ends before)")
        return np.ascontiguousarray(segment, dtype=np.float32)
    return item
