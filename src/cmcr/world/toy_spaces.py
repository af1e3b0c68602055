"""The built-in world's two toy spaces: a tiny ``CLIPModel`` and a tiny ``ClapModel``.

They are real transformers models of the same classes as CLIP and CLAP, saved with their
processors, so the demo loads them through ``cmcr.load_space("clip:DIR")`` exactly as it would load
``openai/clip-vit-base-patch32``. Each is trained with its own contrastive loss on its own data:
the toy CLIP on (image, look caption) pairs, the toy CLAP on (audio, sound caption) pairs. They
have different text encoders (CLIP's causal transformer, CLAP's RoBERTa) and different dims.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from cmcr.spaces.base import quiet_transformers, require_transformers
from cmcr.spaces.clip import clip_image_processor
from cmcr.spaces.tokenizer import write_bpe_files

SAMPLE_RATE = 16000
CLIP_DIM = 512  # as CLIP ViT-B/32's joint space
CLAP_DIM = 512  # as LAION-CLAP's


@dataclass
class ToyTraining:
    """How a toy space is trained (contrastive, AdamW, cosine)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0
    # a fixed logit scale (CLIP caps its learned one at 100), frozen during training; None:
    # learned from the models' own start (1/0.07), as the shipped spaces were trained. A high
    # fixed scale keeps the cone of initialisation (Liang et al. 2022): docs/regimes.md
    logit_scale: float | None = None


# (pairs, generator) -> the order of the pairs for one epoch
EpochOrder = Callable[[int, torch.Generator], torch.Tensor]


def packaged_space_dir(kind: str) -> Path:
    """Where the shipped toy weights live inside the package ("clip" or "clap")."""
    return Path(str(resources.files("cmcr.world") / "weights" / f"toy-{kind}"))


def build_toy_clip(directory: str | Path, words: Sequence[str], image_size: int = 64,
                   seed: int = 0) -> Path:
    """A random-init tiny CLIPModel (ViT 8-px patches, joint dim 512) + CLIPProcessor in ``directory``."""
    transformers = require_transformers()
    directory = write_bpe_files(directory, words, style="clip")
    tokenizer = transformers.CLIPTokenizer(str(directory / "vocab.json"),
                                           str(directory / "merges.txt"))
    transformers.CLIPProcessor(image_processor=clip_image_processor(image_size),
                               tokenizer=tokenizer).save_pretrained(directory)
    vocab_size = len(tokenizer)
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32,
                         bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                         pad_token_id=vocab_size - 1),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                           num_attention_heads=2, image_size=image_size, patch_size=8),
        projection_dim=CLIP_DIM)
    torch.manual_seed(seed)
    with quiet_transformers():
        transformers.CLIPModel(config).save_pretrained(directory)
    return directory


def build_toy_clap(directory: str | Path, words: Sequence[str], seed: int = 0) -> Path:
    """A random-init tiny ClapModel (HTSAT-like, 32 mel bins, 4 s at 16 kHz, joint dim 512)."""
    transformers = require_transformers()
    directory = write_bpe_files(directory, words, style="roberta")
    tokenizer = transformers.RobertaTokenizer(str(directory / "vocab.json"),
                                              str(directory / "merges.txt"))
    extractor = transformers.ClapFeatureExtractor(
        feature_size=32, sampling_rate=SAMPLE_RATE, hop_length=512, max_length_s=4,
        fft_window_size=1024, frequency_min=50, frequency_max=8000, truncation="rand_trunc",
        padding="repeatpad")
    transformers.ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer
                               ).save_pretrained(directory)
    config = transformers.ClapConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=40,
                         pad_token_id=1, bos_token_id=0, eos_token_id=2, projection_dim=CLAP_DIM),
        audio_config=dict(num_mel_bins=32, spec_size=64, patch_size=4, patch_stride=(4, 4),
                          patch_embeds_hidden_size=32, depths=[1, 1], num_attention_heads=[2, 2],
                          hidden_size=64, window_size=4, enable_fusion=False,
                          projection_dim=CLAP_DIM),
        projection_dim=CLAP_DIM)
    torch.manual_seed(seed)
    with quiet_transformers():
        transformers.ClapModel(config).save_pretrained(directory)
    return directory


def collate_all(space: Any, modality: str, items: Sequence[Any], chunk: int = 256
                ) -> dict[str, torch.Tensor]:
    """Preprocess every item once, through the space's own preprocessor (the demo's code path)."""
    preprocessor = space.preprocessor(modality)
    parts = [preprocessor.collate([preprocessor.prepare(i) for i in items[s:s + chunk]])
             for s in range(0, len(items), chunk)]
    if modality == "text":  # pad every chunk to one common length
        width = max(p["input_ids"].shape[1] for p in parts)
        pad = preprocessor.tokenizer.pad_token_id
        for part in parts:
            extra = width - part["input_ids"].shape[1]
            part["input_ids"] = torch.nn.functional.pad(part["input_ids"], (0, extra), value=pad)
            part["attention_mask"] = torch.nn.functional.pad(part["attention_mask"], (0, extra))
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def train_toy_space(kind: str, directory: str | Path, media: Sequence[Any], captions: Sequence[str],
                    training: ToyTraining | None = None, progress: bool = True) -> dict[str, Any]:
    """Train a toy space (``kind`` "clip" or "clap") in ``directory`` on (media, caption) pairs.

    ``media`` are image or audio paths. Saves the trained weights back into ``directory`` with a
    ``training.json`` record; returns that record.
    """
    from cmcr.spaces import load_space

    training = training or ToyTraining()
    transformers = require_transformers()
    modality = "image" if kind == "clip" else "audio"
    space = load_space(f"{kind}:{directory}", device="cpu")
    media_inputs = collate_all(space, modality, list(media))
    text_inputs = collate_all(space, "text", list(captions))
    model_class = transformers.CLIPModel if kind == "clip" else transformers.ClapModel
    with quiet_transformers():
        model = model_class.from_pretrained(directory)
    losses = contrastive_training(model, media_inputs, text_inputs, training, progress,
                                  f"training toy {kind.upper()}")
    with quiet_transformers():
        model.save_pretrained(directory)
    record = {"kind": kind, "pairs": len(captions), "training": asdict(training),
              "first_epoch_loss": losses[0], "last_epoch_loss": losses[-1]}
    (Path(directory) / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def contrastive_training(model: torch.nn.Module, media: dict[str, torch.Tensor],
                         text: dict[str, torch.Tensor], training: ToyTraining, progress: bool,
                         description: str, order: EpochOrder | None = None) -> list[float]:
    """CLIP-style symmetric InfoNCE via the model's own ``return_loss``; returns epoch losses.
    ``order(count, generator)`` gives each epoch's order of the pairs (default: a random
    permutation; bench/toy_geometry.py batches same-concept pairs together with it)."""
    generator = torch.Generator().manual_seed(training.seed)
    torch.manual_seed(training.seed)
    if training.logit_scale is not None:
        fix_logit_scale(model, training.logit_scale)
    count = len(text["input_ids"])
    steps = count // training.batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr,
                                  weight_decay=training.weight_decay)
    total = steps * training.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / total)))
    model.train()
    losses = []
    bar = tqdm(total=total, desc=description, unit="step", disable=not progress)
    for _ in range(training.epochs):
        permutation = (order or _random_order)(count, generator)
        epoch_loss = 0.0
        for step in range(steps):
            index = permutation[step * training.batch_size:(step + 1) * training.batch_size]
            batch = {k: v[index] for k, v in {**media, **text}.items()}
            loss = model(**batch, return_loss=True).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            epoch_loss += float(loss.detach())
            bar.update(1)
            bar.set_postfix(loss=f"{epoch_loss / (step + 1):.3f}")
        losses.append(epoch_loss / max(1, steps))
    bar.close()
    model.eval()
    return losses


def _random_order(count: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(count, generator=generator)


def fix_logit_scale(model: torch.nn.Module, scale: float) -> None:
    """Set a CLIPModel's (or a ClapModel's two) logit scale to ``scale`` and freeze it."""
    names = [n for n in ("logit_scale", "logit_scale_a", "logit_scale_t") if hasattr(model, n)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no logit scale to fix")
    for name in names:
        parameter = getattr(model, name)
        with torch.no_grad():
            parameter.fill_(math.log(scale))
        parameter.requires_grad_(False)


def world_words(captions: Sequence[str]) -> list[str]:
    """The words of the world's captions: each becomes one token of the toy tokenizers."""
    return sorted({word for caption in captions for word in re.findall(r"[a-z]+", caption.lower())})


def train_spaces(world_dir: str | Path, out_dir: str | Path, clip: ToyTraining | None = None,
                 clap: ToyTraining | None = None, progress: bool = True) -> dict[str, Path]:
    """Build and train both toy spaces on a generated world; ``out_dir/toy-clip``, ``toy-clap``."""
    from cmcr.world.generate import load_world

    world = load_world(world_dir)
    words = world_words([r["caption"] for split in (world.clip_train, world.clap_train,
                                                    world.connect_texts) for r in split])
    out_dir = Path(out_dir)
    clip_dir = build_toy_clip(out_dir / "toy-clip", words, image_size=world.sizes.image_size)
    train_toy_space("clip", clip_dir, [str(world.path(r["image"])) for r in world.clip_train],
                    [r["caption"] for r in world.clip_train], clip, progress)
    clap_dir = build_toy_clap(out_dir / "toy-clap", words)
    train_toy_space("clap", clap_dir, [str(world.path(r["audio"])) for r in world.clap_train],
                    [r["caption"] for r in world.clap_train], clap, progress)
    return {"clip": clip_dir, "clap": clap_dir}
