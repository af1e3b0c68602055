"""The demo's stages on disk: the world's files embedded into stores by the toy spaces."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmcr.embed import InputItem, embed_items
from cmcr.errors import CmcrError
from cmcr.spaces.base import Space
from cmcr.data.store import EmbeddingStore, open_store
from cmcr.world.generate import WorldManifest, restore_media

# store name -> (space, modality, split, record field); texts take the caption itself
EMBEDDINGS: dict[str, tuple[str, str, str, str]] = {
    "clip_text": ("clip", "text", "connect_texts", "caption"),
    "clap_text": ("clap", "text", "connect_texts", "caption"),
    "clip_image_memory": ("clip", "image", "image_memory", "image"),
    "clap_audio_memory": ("clap", "audio", "audio_memory", "audio"),
    "test_image": ("clip", "image", "test_pairs", "image"),
    "test_audio": ("clap", "audio", "test_pairs", "audio"),
    "localisation_audio": ("clap", "audio", "localisation", "audio"),
    "counterfactual_image": ("clip", "image", "counterfactual", "image"),
    "counterfactual_audio": ("clap", "audio", "counterfactual", "audio"),
    "paired_image": ("clip", "image", "paired_train", "image"),
    "paired_audio": ("clap", "audio", "paired_train", "audio"),
    # the paired split's own captions, under the same ids: the spaces' geometry (cmcr inspect)
    "paired_look_text": ("clip", "text", "paired_train", "look_caption"),
    "paired_sound_text": ("clap", "text", "paired_train", "sound_caption"),
}


@dataclass
class FrozenEmbeddings:
    """Every store the demo needs, as in-RAM arrays (the world is small)."""

    stores: dict[str, Path]

    def __getitem__(self, name: str) -> np.ndarray:
        return open_store(self.stores[name]).to_numpy()


def _items(world: WorldManifest, split: str, field: str) -> list[InputItem]:
    records = getattr(world, split)
    if field.endswith("caption"):
        return [InputItem(r["id"], r[field]) for r in records]
    return [InputItem(r["id"], str(world.path(r[field])), row_labels(r, field)) for r in records]


def row_labels(record: dict, field: str) -> dict[str, Any]:
    """What a search result shows for a world image or clip: the concepts it holds and the
    caption of its own kind (a look caption for an image, a sound caption for a clip)."""
    kind = "image" if field == "image" else "audio"
    concepts = record.get(f"{kind}_concepts") or record.get("concepts") or (
        [record["concept"]] if "concept" in record else [])
    caption = record.get("look_caption" if kind == "image" else "sound_caption") or record.get("caption")
    return {key: value for key, value in (("concepts", concepts), ("caption", caption)) if value}


def spaces_fingerprint(spaces: dict[str, Space]) -> dict[str, str]:
    """A digest of each space's weights, so embeddings made by other weights are not reused."""
    from cmcr.spaces.registry import weights_sha256

    digests = {name: weights_sha256(space.name) for name, space in spaces.items()}
    return {name: digest[:16] if digest else spaces[name].name for name, digest in digests.items()}


def embed_world(world: WorldManifest, spaces: dict[str, Space], out_dir: Path,
                progress: bool = True, workers: int = 0) -> FrozenEmbeddings:
    """Embed every split the demo uses through ``cmcr embed``'s own pipeline; an interrupted
    run resumes, and stores made by other space weights are redone."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record = out_dir / "spaces.json"
    fingerprint = spaces_fingerprint(spaces)
    stale = record.exists() and json.loads(record.read_text(encoding="utf-8")) != fingerprint
    record.write_text(json.dumps(fingerprint, indent=2) + "\n", encoding="utf-8")
    stores = {}
    for name, (space_name, modality, split, field) in EMBEDDINGS.items():
        path = out_dir / name
        stores[name] = path
        existing = open_store(path) if (path / "store.json").exists() else None
        labelled = existing is not None and _has_labels(existing, field)
        if not stale and labelled and existing.info.complete:
            continue
        redo = stale or (existing is not None and not labelled)  # made before rows had labels
        restore_media(world, split, progress)
        summary = embed_items(spaces[space_name], modality, _items(world, split, field), path,
                              batch_size=128, workers=workers, progress=progress, overwrite=redo,
                              label=f"embed {name} (toy {space_name.upper()})")
        if summary.errors:
            raise CmcrError(f"{path}: {len(summary.errors)} world files could not be embedded, "
                            f"first: {summary.errors[0]}")
    return FrozenEmbeddings(stores)


def _has_labels(store: EmbeddingStore, field: str) -> bool:
    """Whether a store's rows carry what this version writes (texts need only their text)."""
    if not store.info.has_metadata:
        return False
    if field.endswith("caption"):
        return True
    first = (store.metadata() or [{}])[0]
    return "concepts" in first or "caption" in first


IMAGE_PROMPT = "a photo of a {}"  # zero-shot prompts of the retention measurements
AUDIO_PROMPT = "the sound of a {}"


def zero_shot_top1(rows: np.ndarray, prompts: np.ndarray, names: list[str],
                   present: list[list[str]]) -> float:
    """Share (percent) of items whose best prompt (row j names ``names[j]``) names a concept
    present in the item."""
    predicted = np.argmax(rows @ prompts.T, axis=1)
    return float(100.0 * np.mean([names[p] in concepts for p, concepts in zip(predicted, present)]))


def prompt_embeddings(space: Space, names: list[str], template: str) -> np.ndarray:
    """Zero-shot prompts ("a photo of a {}") of every concept: (concepts, d) unit rows."""
    return space.embed("text", [template.format(name) for name in names]).numpy()


def records_field(world: WorldManifest, split: str, field: str) -> list[Any]:
    return [record[field] for record in getattr(world, split)]
