"""CLIP (image, text) through transformers: ``CLIPModel`` checkpoints, e.g. openai/clip-vit-base-patch32.

Only the tower a call needs is loaded (``CLIPVisionModelWithProjection`` or
``CLIPTextModelWithProjection`` from the same checkpoint). CLIP's features are not unit length;
this adapter normalises them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cmcr.errors import ConfigError, InputError
from cmcr.data.processing import load_image, to_rgb
from cmcr.spaces.base import Preprocessor, TransformersSpace, require_transformers, to_model


def clip_image_processor(size: int) -> Any:
    """A CLIP image processor for ``size`` px: the PIL one when transformers has it (no
    torchvision needed), else the default one."""
    transformers = require_transformers()
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


PATCH_MODES = ("tokens", "values")


class ClipImagePreprocessor(Preprocessor):
    """Image files / PIL images / HxWx3 uint8 arrays -> ``pixel_values`` (CLIP's resize and crop)."""

    def __init__(self, image_processor: Any, frame_time: float | None = None):
        self.image_processor = image_processor
        self.frame_time = frame_time

    def load(self, path: Path) -> Any:
        return load_image(path, self.frame_time)

    def prepare(self, item: Any) -> Any:
        if isinstance(item, (str, Path)):
            return self.load(Path(item))
        if isinstance(item, np.ndarray):
            from PIL import Image
            return to_rgb(Image.fromarray(item))
        if hasattr(item, "mode") and hasattr(item, "convert"):
            return to_rgb(item)
        raise InputError(f"an image must be a path, a PIL image or an array, got {type(item).__name__}")

    def collate(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        batch = self.image_processor(images=list(items), return_tensors="pt")
        return {"pixel_values": batch["pixel_values"]}


class TextPreprocessor(Preprocessor):
    """Strings -> token ids, padded to the batch's longest and truncated at ``max_length``."""

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def load(self, path: Path) -> Any:
        raise InputError(f"{path}: texts are passed as strings; read a text file with "
                         "cmcr.data.processing.read_texts")

    def prepare(self, item: Any) -> str:
        if not isinstance(item, str):
            raise InputError(f"a text must be a string, got {type(item).__name__}")
        return item

    def collate(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(list(items), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


class ClipSpace(TransformersSpace):
    """CLIP's image and text towers; ``embed`` gives (n, projection_dim) unit rows."""

    kind = "clip"
    label = "CLIP"
    modalities = ("image", "text")
    config_class = "CLIPConfig"
    processor_class = "CLIPProcessor"
    tower_classes = {"image": ("CLIPVisionModelWithProjection", "vision_config"),
                     "text": ("CLIPTextModelWithProjection", "text_config")}

    def __init__(self, name_or_path: str, *, frame_time: float | None = None, **options: Any):
        super().__init__(name_or_path, **options)
        self.frame_time = frame_time

    # -- the Space interface ---------------------------------------------------------------------
    def preprocessor(self, modality: str) -> Preprocessor:
        modality = self.check_modality(modality)
        if modality == "image":
            return ClipImagePreprocessor(self.processor.image_processor, self.frame_time)
        max_length = min(77, int(self.config.text_config.max_position_embeddings))
        return TextPreprocessor(self.processor.tokenizer, max_length)

    def embed_image_patches(self, images: Sequence[Any], batch_size: int = 32,
                            mode: str = "tokens") -> torch.Tensor:
        """Patch features projected like the pooled output: (n, patches, d) unit rows (no CLS).

        ``mode="tokens"``: last_hidden_state -> post_layernorm -> visual_projection, as CLIP does
        for its CLS token, so a patch and the whole image live in the same space.
        ``mode="values"``: the last layer's value path without attention mixing (MaskCLIP, Zhou
        et al. 2022): out_proj(v_proj(layer_norm1(x))) -> post_layernorm -> visual_projection;
        it keeps each patch's own content, which sharpens localisation heat maps.
        """
        if mode not in PATCH_MODES:
            raise ConfigError(f"patch mode must be one of {', '.join(PATCH_MODES)}, got {mode!r}")
        preprocessor = self.preprocessor("image")
        items = [preprocessor.prepare(image) for image in images]
        parts = [self._patches(preprocessor.collate(items[start:start + batch_size]), mode)
                 for start in range(0, len(items), max(1, batch_size))]
        return torch.cat(parts) if parts else torch.zeros((0, 0, self.dim))

    def _patches(self, inputs: dict[str, torch.Tensor], mode: str) -> torch.Tensor:
        tower = self.tower("image")
        vision = tower.vision_model
        with torch.inference_mode():
            output = vision(**to_model(inputs, self.device, self.dtype),
                            output_hidden_states=mode == "values")
            if mode == "tokens":
                hidden = output.last_hidden_state[:, 1:]
            else:
                last = vision.encoder.layers[-1]
                attention = last.self_attn
                hidden = attention.out_proj(attention.v_proj(last.layer_norm1(
                    output.hidden_states[-2])))[:, 1:]
            tokens = tower.visual_projection(vision.post_layernorm(hidden))
        return F.normalize(tokens.float(), dim=-1).cpu()
