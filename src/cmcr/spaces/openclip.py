"""open_clip models (image, text): ``open_clip:ARCH:TAG_OR_PATH``.

    open_clip:ViT-H-14:laion2b_s32b_b79k          a pretrained tag (open_clip downloads and caches it)
    open_clip:ViT-B-32:/weights/epoch_32.pt       a weights file: safetensors, or a torch file
    open_clip:hf-hub:timm/ViT-B-16-SigLIP         a hub model (architecture and weights with it)
    open_clip:local-dir:/models/my-open-clip      a folder with open_clip_config.json and weights

Through the ``open-clip-torch`` package (``pip install "cmcr[open-clip]"``; it needs the
torchvision release that pairs with your torch), with the model's own preprocessing and
tokenizer, so rows are open_clip's ``encode_image`` / ``encode_text`` scaled to unit length.
Torch files are read with ``weights_only=True`` (tensors only): open_clip_train's ``epoch_N.pt``
with its ``state_dict`` and ``module.`` prefixes loads; a file holding Python objects is refused.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Sequence

import torch

from cmcr.errors import CheckpointError, CmcrError, ConfigError, MissingDependencyError
from cmcr.data.weights import holds_python_objects
from cmcr.spaces import files
from cmcr.spaces.base import Preprocessor, Space, resolve_dtype, unit_rows
from cmcr.spaces.clip import ClipImagePreprocessor, TextPreprocessor

SCHEMAS = ("hf-hub:", "local-dir:")  # model names that carry their own weights
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
INSTALL = ('pip install "cmcr[open-clip]" (open-clip-torch, and the torchvision release that '
           'pairs with your torch: e.g. torch 2.14.1 with torchvision 0.29.1)')


def import_open_clip() -> Any:
    """``open_clip``, or a MissingDependencyError that says what to install."""
    try:
        import open_clip
    except ImportError:
        raise MissingDependencyError(f"open_clip spaces need open-clip-torch: {INSTALL}") from None
    except RuntimeError as err:  # torchvision built for another torch: 'operator ... does not exist'
        raise MissingDependencyError(f"open_clip could not import ({str(err).splitlines()[0]}): "
                                     f"torchvision does not match this torch; {INSTALL}") from None
    return open_clip


def parse_target(target: str) -> tuple[str, str | None]:
    """``ARCH:TAG_OR_PATH`` -> (ARCH, TAG_OR_PATH); a hf-hub:/local-dir: name -> (name, None)."""
    if target.startswith(SCHEMAS):
        return target, None
    arch, _, weights = target.partition(":")
    if not arch or not weights:
        raise ConfigError(f"open_clip space '{target}' names no weights: use open_clip:ARCH:TAG "
                          "(a pretrained tag, e.g. open_clip:ViT-B-32:laion2b_s34b_b79k; "
                          "open_clip.list_pretrained() lists them) or open_clip:ARCH:PATH to a "
                          "weights file")
    return arch, weights


def weights_path(weights: str | None) -> Path | None:
    """The local file ``weights`` names, or None when it is a pretrained tag."""
    if weights is None:
        return None
    path = Path(weights).expanduser()
    if path.exists() or path.suffix in WEIGHT_SUFFIXES or "/" in weights or "\\" in weights:
        return path
    return None


class OpenClipImagePreprocessor(ClipImagePreprocessor):
    """Image files / PIL images / arrays -> ``pixel_values`` through the model's own transform."""

    def __init__(self, transform: Any, frame_time: float | None = None):
        super().__init__(image_processor=None, frame_time=frame_time)
        self.transform = transform

    def collate(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.stack([self.transform(item) for item in items])}


class OpenClipTextPreprocessor(TextPreprocessor):
    """Strings -> the model's own token ids (its context length, truncated as open_clip does)."""

    def __init__(self, tokenizer: Any):
        super().__init__(tokenizer, max_length=int(getattr(tokenizer, "context_length", 77)))

    def collate(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.as_tensor(self.tokenizer(list(items)))}


class OpenClipSpace(Space):
    """An open_clip model's image and text towers; ``embed`` gives (n, embed_dim) unit rows.

    Nothing is read when the space is made; the model (both towers) loads at the first call
    that needs it, the tokenizer at the first text.
    """

    kind = "open_clip"
    modalities = ("image", "text")

    def __init__(self, target: str, *, device: str | torch.device | None = "auto",
                 dtype: str | torch.dtype | None = None, name: str | None = None,
                 frame_time: float | None = None):
        from cmcr.runtime import resolve_device

        self.arch, self.weights = parse_target(str(target))
        self.weights_file = weights_path(self.weights)
        if self.weights_file is not None and not self.weights_file.is_file():
            raise ConfigError(f"{self.weights_file}: open_clip weights file not found")
        self.name = name or f"{self.kind}:{target}"
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.frame_time = frame_time
        self._model: Any = None
        self._transform: Any = None
        self._tokenizer: Any = None

    @classmethod
    def local_weights(cls, target: str) -> Path | None:
        """The weights file a target names, when it is one (for sha256 records)."""
        try:
            path = weights_path(parse_target(target)[1])
        except ConfigError:
            return None
        return path if path is not None and path.is_file() else None

    @classmethod
    def portable_target(cls, target: str) -> str:
        """The target with a local weights file made absolute (stores record it)."""
        path = cls.local_weights(target)
        return target if path is None else f"{parse_target(target)[0]}:{path.resolve()}"

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model, self._transform = self._load()
        return self._model

    def _load(self) -> tuple[torch.nn.Module, Any]:
        open_clip = import_open_clip()
        label = str(self.weights_file) if self.weights_file else f"open_clip {self.arch}"
        try:
            model, _, transform = open_clip.create_model_and_transforms(
                self.arch, pretrained=str(self.weights_file or self.weights or "") or None,
                device="cpu", weights_only=True, require_pretrained=self.weights is not None)
        except (CmcrError, MemoryError):
            raise
        except pickle.UnpicklingError as err:
            fault = ("holds Python objects, which cmcr does not unpickle"
                     if holds_python_objects(err) else "is damaged or not written by torch.save")
            raise CheckpointError(f"{label}: the weights file {fault}; use tensors only "
                                  "(safetensors, or a state_dict saved by torch.save)") from None
        except Exception as err:  # open_clip raises RuntimeError/ValueError/KeyError alike
            raise self._load_error(err, label) from None
        files.check_parameters_finite(model, label)
        return model.to(device=self.device, dtype=self.dtype).eval(), transform

    def _load_error(self, err: Exception, label: str) -> CmcrError:
        """One line that says what was wrong: the architecture, the tag, or the file."""
        open_clip = import_open_clip()
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        message = " ".join(lines[:3]) or type(err).__name__  # load_state_dict: keys on lines 2-3
        if not self.arch.startswith(SCHEMAS) and self.arch not in open_clip.list_models():
            return ConfigError(f"open_clip has no architecture '{self.arch}' (open_clip."
                               "list_models() lists them, e.g. ViT-B-32, ViT-H-14, RN50)")
        if self.weights_file is None and self.weights is not None:
            tags = open_clip.list_pretrained_tags_by_model(self.arch)
            if self.weights not in tags:
                return ConfigError(f"open_clip {self.arch} has no pretrained tag "
                                   f"'{self.weights}' (its tags: {', '.join(tags) or 'none'})")
            return ConfigError(f"cannot fetch open_clip {self.arch}:{self.weights}: {message[:300]}")
        return CheckpointError(f"{label}: not weights of open_clip {self.arch}: "
                               f"{type(err).__name__}: {message[:300]}")

    @property
    def dim(self) -> int:
        config = None
        if not self.arch.startswith(SCHEMAS):
            config = import_open_clip().get_model_config(self.arch)
        if config and "embed_dim" in config:
            return int(config["embed_dim"])
        return int(self.encode("text", self.preprocessor("text").collate(["a"])).shape[1])

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = import_open_clip().get_tokenizer(self.arch)
        return self._tokenizer

    def preprocessor(self, modality: str) -> Preprocessor:
        modality = self.check_modality(modality)
        if modality == "image":
            _ = self.model  # the transform comes with the model (its size, mean and std)
            return OpenClipImagePreprocessor(self._transform, self.frame_time)
        return OpenClipTextPreprocessor(self.tokenizer)

    def encode(self, modality: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """A collated batch through ``modality``'s tower -> (n, d) float32 CPU unit rows."""
        modality = self.check_modality(modality)
        model = self.model
        with torch.inference_mode():
            if modality == "image":
                pixels = inputs["pixel_values"].to(device=self.device, dtype=self.dtype)
                return unit_rows(model.encode_image(pixels))
            return unit_rows(model.encode_text(inputs["input_ids"].to(self.device)))
