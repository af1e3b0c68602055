"""CLAP (audio, text) through transformers: ``ClapModel`` checkpoints, e.g. laion/clap-htsat-fused.

Fixed, deterministic audio protocol (transformers' defaults crop at random):

- fused models (``enable_fusion``): the processor's "fusion" input: a global view of the whole clip
  shrunk to 10 s plus three 10 s windows, taken at the *centre* of the front, middle and back
  thirds of the possible start positions (transformers and LAION draw them at random);
  ``is_longer`` is true exactly when the clip is longer than the window (transformers flags a random
  clip of each batch when none is, which makes embeddings depend on the batch).
- non-fused models: a centred crop of ``max_length_s`` (not the random crop of "rand_trunc").
- shorter clips are padded by the processor's own rule ("repeatpad": repeated, then zero-padded).
- folders converted from LAION-CLAP's own checkpoints (``cmcr convert laion-clap``) record
  ``"laion_int16_audio": true`` in config.json: the waveform is rounded to 16 bits first, as
  laion_clap's ``get_audio_embedding_from_*`` do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from cmcr.errors import ConfigError, InputError
from cmcr.data.processing import finish_audio, load_audio
from cmcr.spaces.base import Preprocessor, TransformersSpace
from cmcr.spaces.clip import TextPreprocessor

CLAP_TEXT_LENGTH = 77  # LAION-CLAP tokenises with max_length=77
LAION_INT16_AUDIO = "laion_int16_audio"  # config.json key: round waveforms to 16 bits first


def int16_round_trip(samples: np.ndarray) -> np.ndarray:
    """laion_clap's ``int16_to_float32(float32_to_int16(x))``: clip to [-1, 1], scale by 32767,
    truncate to int16, divide by 32767 (in float64, then float32, as numpy does there)."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return ((clipped * np.float32(32767.0)).astype(np.int16) / 32767.0).astype(np.float32)


def centred_mel_fusion(extractor: Any, mel: np.ndarray, total_frames: int,
                       chunk_frames: int) -> np.ndarray:
    """transformers' ``_random_mel_fusion`` with each window at the centre of its third."""
    starts = np.array_split(np.arange(0, total_frames - chunk_frames + 1), 3)
    front, middle, back = (int(part[len(part) // 2]) if len(part) else 0 for part in starts)
    chunks = [mel[start:start + chunk_frames, :] for start in (front, middle, back)]
    whole = torch.tensor(mel[None, None, :])
    shrunk = torch.nn.functional.interpolate(whole, size=[chunk_frames, mel.shape[1]],
                                             mode="bilinear", align_corners=False)[0][0].numpy()
    return np.stack([shrunk, *chunks], axis=0)


def centre_crop(samples: np.ndarray, length: int) -> np.ndarray:
    if len(samples) <= length:
        return samples
    start = (len(samples) - length) // 2
    return samples[start:start + length]


class ClapAudioPreprocessor(Preprocessor):
    """Audio files / waveforms -> ``input_features`` and ``is_longer``, deterministically."""

    def __init__(self, feature_extractor: Any, fused: bool, int16_audio: bool = False):
        self.feature_extractor = feature_extractor
        self.fused = fused
        self.int16_audio = int16_audio

    @property
    def sample_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @property
    def max_samples(self) -> int:
        return int(self.feature_extractor.nb_max_samples)

    def load(self, path: Path) -> np.ndarray:
        return load_audio(path, self.sample_rate)

    def prepare(self, item: Any) -> np.ndarray:
        """A path, a ``(samples, sample_rate)`` pair, or mono samples already at the model's rate."""
        if isinstance(item, (str, Path)):
            return self.load(Path(item))
        if isinstance(item, tuple) and len(item) == 2:
            samples, rate = np.asarray(item[0], dtype=np.float32), int(item[1])
            mono = samples.mean(axis=tuple(range(1, samples.ndim))) if samples.ndim > 1 else samples
            return finish_audio(mono, rate, self.sample_rate, "<waveform>")
        samples = np.asarray(item, dtype=np.float32)
        if samples.ndim != 1:
            raise InputError(f"a waveform must be 1-D mono samples at {self.sample_rate} Hz "
                             f"(or a (samples, rate) pair), got shape {samples.shape}")
        return finish_audio(samples, self.sample_rate, self.sample_rate, "<waveform>")

    def is_longer(self, samples: np.ndarray) -> bool:
        """Longer than one window, counted in mel frames as transformers does."""
        hop = int(self.feature_extractor.hop_length)
        return len(samples) > self.max_samples and len(samples) // hop != self.max_samples // hop

    def features(self, samples: np.ndarray) -> np.ndarray:
        """One clip -> (channels, frames, mel bins): 4 channels when fused, 1 otherwise."""
        extractor = self.feature_extractor
        if not self.fused:
            return extractor([centre_crop(samples, self.max_samples)], truncation="rand_trunc",
                             sampling_rate=self.sample_rate, return_tensors="np")["input_features"][0]
        if not hasattr(type(extractor), "_random_mel_fusion"):  # the hook we replace moved
            raise ConfigError(f"this transformers version's {type(extractor).__name__} has no "
                              "_random_mel_fusion; cmcr cannot fix its fusion windows (pin "
                              "transformers 4.45-5.x or report it)")
        extractor._random_mel_fusion = lambda *args: centred_mel_fusion(extractor, *args)
        try:
            return extractor([samples], truncation="fusion", sampling_rate=self.sample_rate,
                             return_tensors="np")["input_features"][0]
        finally:
            del extractor._random_mel_fusion

    def collate(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        if self.int16_audio:
            items = [int16_round_trip(samples) for samples in items]
        features = np.stack([self.features(samples) for samples in items]).astype(np.float32)
        longer = [[self.is_longer(samples)] for samples in items]
        return {"input_features": torch.from_numpy(features),
                "is_longer": torch.tensor(longer, dtype=torch.bool)}


class ClapSpace(TransformersSpace):
    """CLAP's audio and text towers; ``embed`` gives (n, projection_dim) unit rows."""

    kind = "clap"
    label = "CLAP"
    modalities = ("audio", "text")
    config_class = "ClapConfig"
    processor_class = "ClapProcessor"
    tower_classes = {"audio": ("ClapAudioModelWithProjection", "audio_config"),
                     "text": ("ClapTextModelWithProjection", "text_config")}

    @property
    def fused(self) -> bool:
        return bool(getattr(self.config.audio_config, "enable_fusion", False))

    @property
    def sample_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)

    def preprocessor(self, modality: str) -> Preprocessor:
        modality = self.check_modality(modality)
        if modality == "audio":
            return ClapAudioPreprocessor(self.processor.feature_extractor, self.fused,
                                         bool(getattr(self.config, LAION_INT16_AUDIO, False)))
        max_length = min(CLAP_TEXT_LENGTH, int(self.config.text_config.max_position_embeddings) - 2)
        return TextPreprocessor(self.processor.tokenizer, max_length)

