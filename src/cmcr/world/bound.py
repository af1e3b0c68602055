"""The demo's paired upper bound: the same projectors trained on true audio-image pairs (the
world's ``paired_train`` split, drawn like the test pairs), which no unpaired method gets.

To be an upper bound it is trained to convergence: up to ``EPOCH_FACTOR`` times the
connection's epochs, keeping the epoch with the best audio -> image mAP on a held-out part of
the pairs (early stopping), for each objective of ``OBJECTIVES``; the objective with the best
held-out mAP is the bound. The test pairs are never looked at.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cmcr.pipeline import build_model
from cmcr.eval.metrics import retrieval_metrics
from cmcr.method.model import ConnectedModel
from cmcr.method.retrieval import as_store
from cmcr.runtime import seed_everything, write_json
from cmcr.method.train import TrainingData, train_projectors
from cmcr.world.generate import WorldManifest
from cmcr.world.stages import FrozenEmbeddings, records_field

HOLDOUT = 0.15  # share of the paired split held out for early stopping
EPOCH_FACTOR = 3  # the bound trains up to 3x the connection's epochs
MIN_STEPS = 4  # its batch shrinks to keep this many steps an epoch (under --paper's 4096)
# the objectives tried on the pairs (no memory: the pairs are given); the best held-out one wins
OBJECTIVES: dict[str, dict[str, Any]] = {"paper": {}, "no_noise": {"use_noise": False}}


def split_pairs(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) row indices of the paired split."""
    order = np.random.default_rng(seed).permutation(count)
    held_out = max(16, int(round(count * HOLDOUT)))
    return np.sort(order[held_out:]), np.sort(order[:held_out])


def held_out_map(images: np.ndarray, audio: np.ndarray, concepts: np.ndarray
                 ) -> Callable[[ConnectedModel], float]:
    """A scorer: audio -> image mAP of a model on the held-out pairs (positives: same concept)."""
    positives = concepts[:, None] == concepts[None, :]

    def score(model: ConnectedModel) -> float:
        similarity = (model.project("clap", audio, "audio").numpy()
                      @ model.project("clip", images, "image").numpy().T)
        return float(retrieval_metrics(similarity, positives)["mAP"])
    return score


def _train_early_stopped(config: Any, train_rows: dict[str, np.ndarray], score, out_dir: Path,
                         progress: bool, label: str) -> tuple[ConnectedModel, list[float], int]:
    """Train once for the config's epochs; the model at its best held-out epoch, every
    epoch's score, and that epoch."""
    stores = {name: as_store(rows) for name, rows in train_rows.items()}
    seed_everything(config.train.seed)
    model = build_model(config, stores)
    history: list[float] = []
    best: dict[str, Any] = {}

    def on_epoch(epoch: int, current: ConnectedModel) -> None:
        history.append(score(current))
        if history[-1] >= max(history):
            best.update(state=copy.deepcopy(current.state_dict()), epoch=epoch)
    data = TrainingData(("clip", "clap"), (stores["clip"], stores["clap"]), None)
    train_projectors(model, data, config.train, config.method, out_dir, device="cpu",
                     progress=progress, label=label, on_epoch=on_epoch)
    model.load_state_dict(best["state"])
    return model.eval(), history, best["epoch"]


def train_paired_upper_bound(frozen: FrozenEmbeddings, world: WorldManifest, out_dir: Path,
                             settings: Any, make_config: Callable[..., Any], progress: bool
                             ) -> tuple[ConnectedModel, dict[str, Any]]:
    """The bound (saved in ``out_dir/models/paired_upper_bound``) and its record: each
    objective's held-out mAP per epoch, the chosen objective and epoch."""
    images, audio = frozen["paired_image"], frozen["paired_audio"]
    concepts = np.array(records_field(world, "paired_train", "concept"))
    train, held_out = split_pairs(len(images), settings.seed)
    score = held_out_map(images[held_out], audio[held_out], concepts[held_out])
    batch = min(settings.batch_size, max(2, len(train) // MIN_STEPS))
    bound_settings = replace(settings, batch_size=batch, epochs=settings.epochs * EPOCH_FACTOR)
    record: dict[str, Any] = {"train_pairs": len(train), "held_out_pairs": len(held_out),
                              "max_epochs": bound_settings.epochs, "objectives": {}}
    chosen: tuple[float, str, ConnectedModel] | None = None
    for name, method in OBJECTIVES.items():
        config = make_config(frozen.stores, bound_settings, {**method, "use_memory": False})
        config.shared_modality = "pair"
        model, history, epoch = _train_early_stopped(
            config, {"clip": images[train], "clap": audio[train]}, score,
            out_dir / "models" / f"paired_upper_bound-{name}", progress,
            f"train paired_upper_bound ({name})")
        record["objectives"][name] = {"held_out_mAP": history, "best_epoch": epoch}
        if chosen is None or max(history) > chosen[0]:
            chosen = (max(history), name, model)
    _, record["objective"], model = chosen
    record["epoch"] = record["objectives"][record["objective"]]["best_epoch"]
    model.save_pretrained(out_dir / "models" / "paired_upper_bound")
    write_json(out_dir / "models" / "paired_upper_bound" / "bound.json", record)
    return model, record
