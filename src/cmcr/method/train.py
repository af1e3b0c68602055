"""The training loop: AdamW + cosine, deterministic per seed, checkpointed every epoch, resumable.

Read top to bottom: batches of shared-modality rows and their pseudo partners are drawn from the
stores, noised, projected by each space's projector and scored by ``cmcr.method.objective.cmcr_loss``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cmcr.config import RECIPE_METHOD_KEYS, MethodConfig, TrainConfig
from cmcr.data.atomic import atomic_file, atomic_write_text, read_json_records
from cmcr.errors import CheckpointError, TrainingError
from cmcr.method.objective import add_noise, cmcr_loss, noise_variance, text_agreement
from cmcr.method.model import ConnectedModel
from cmcr.data.store import EmbeddingStore

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
IN_RAM_LIMIT_BYTES = 2 * 2**30  # training data smaller than this is loaded into RAM once


@dataclass
class TrainingData:
    """Row i of every store is the same shared-modality item; pseudo stores may be None."""

    space_names: tuple[str, str]
    queries: tuple[EmbeddingStore, EmbeddingStore]
    pseudo: tuple[EmbeddingStore, EmbeddingStore] | None

    def __len__(self) -> int:
        return len(self.queries[0])

    def _stores(self) -> list[EmbeddingStore]:
        return list(self.queries) + (list(self.pseudo) if self.pseudo else [])

    def batch_loader(self, device: torch.device):
        """A function indices -> list of (batch, dim) tensors (queries a, b, then pseudo a, b)."""
        stores = self._stores()
        total_bytes = sum(len(s) * s.dim * 4 for s in stores)
        if total_bytes <= IN_RAM_LIMIT_BYTES:
            resident = [torch.from_numpy(s.to_numpy()).to(device) for s in stores]
            return lambda index: [t[torch.from_numpy(index).to(device)] for t in resident]
        return lambda index: [torch.from_numpy(s.take(index)).to(device) for s in stores]


def cosine_lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay from 1 to ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def steps_per_epoch(num_rows: int, batch_size: int, drop_last: bool) -> int:
    if num_rows < 2:
        raise ValueError(f"training needs at least 2 rows, got {num_rows}")
    if drop_last and num_rows >= batch_size:
        return num_rows // batch_size
    return math.ceil(num_rows / batch_size)


def warn_if_short_epochs(rows: int, batch_size: int, per_epoch: int) -> None:
    """An epoch of one step (batch_size >= the rows) trains far less than its settings suggest."""
    if per_epoch < 2:
        print(f"cmcr: warning: {rows} training rows and batch_size {batch_size}: an epoch is "
              f"{per_epoch} step; lower train.batch_size (e.g. {max(2, rows // 8)}) or add rows",
              file=sys.stderr)


RANDOM_STREAMS = ("shuffle", "noise")


def epoch_generator(seed: int, epoch: int, stream: str = "shuffle",
                    device: torch.device | str = "cpu") -> torch.Generator:
    """Each epoch draws its shuffle and its noise from their own seeds, so a resumed run repeats
    them (noise is drawn on the training device: a GPU run does not copy it from the CPU)."""
    offset = RANDOM_STREAMS.index(stream)
    return torch.Generator(device=device).manual_seed((seed * 100_003 + epoch) * 2 + offset)


class Batches(Protocol):
    """What the loop trains on: rows, and a loader of a batch's tensors by row indices
    (:class:`TrainingData` for C-MCR, ``cmcr.extend.train.ExtendData`` for extend mode)."""

    space_names: tuple[str, ...]

    def __len__(self) -> int: ...

    def batch_loader(self, device: torch.device) -> Callable[[Any], list[torch.Tensor]]: ...


# A batch's tensors and the noise generator -> the loss terms (``total`` is minimised, every
# term has ``as_floats``): how one mode scores a batch.
BatchLoss = Callable[[ConnectedModel, list[torch.Tensor], torch.Generator], Any]


def cmcr_batch_loss(names: tuple[str, ...], method: MethodConfig,
                    residuals: dict[str, float] | None = None) -> BatchLoss:
    """C-MCR's batch loss: noise, both projectors, :func:`cmcr.method.objective.cmcr_loss` (fed the raw
    texts' agreement when the recipe's InfoNCE targets need it). ``residuals``: each space's
    measured text-pseudo residual variance, for ``noise_calibration``."""
    uses_agreement = (method.same_text_threshold is not None
                      or method.soft_target_temperature is not None)
    residuals = residuals or {}

    def loss(model: ConnectedModel, batch: list[torch.Tensor], generator: torch.Generator) -> Any:
        if method.normalize_pseudo and len(batch) == 4:
            batch = batch[:2] + [F.normalize(rows, dim=-1) for rows in batch[2:]]
        if model.centred:
            batch = [centred_rows(model, names[index % 2], index >= 2, rows)
                     for index, rows in enumerate(batch)]
        noisy = [add_noise(rows, noise_variance(method, rows.shape[-1],
                                                residuals.get(names[index % 2])), generator)
                 for index, rows in enumerate(batch)]
        projected = []
        for side, name in enumerate(names):
            rows = [noisy[side]] + ([noisy[2 + side]] if len(noisy) == 4 else [])
            # Queries and pseudo partners go through one forward pass, so BatchNorm sees the
            # same mixture of modalities in training as its running statistics describe at
            # inference.
            output = model.projectors[name](torch.cat(rows))
            projected.append(output.split(len(noisy[side])))
        pseudo_a = projected[0][1] if len(projected[0]) > 1 else None
        pseudo_b = projected[1][1] if len(projected[1]) > 1 else None
        agreement = text_agreement(batch[0], batch[1]) if uses_agreement else None
        return cmcr_loss(projected[0][0], projected[1][0], pseudo_a, pseudo_b, method, agreement)
    return loss


def centred_rows(model: ConnectedModel, space_name: str, pseudo: bool, rows: torch.Tensor
                 ) -> torch.Tensor:
    """A batch's query (or pseudo) rows centred on the shared (or memory) modality's mean."""
    modality = (model.memory_modality(space_name) if pseudo
                else model.config.shared_modality)
    return model.centre_rows(space_name, modality, F.normalize(rows, dim=-1))


def _settings(train: TrainConfig, method: MethodConfig, model: ConnectedModel) -> dict[str, Any]:
    # recipe keys at their default are left out, so checkpoints made before them still resume
    changed = method.recipe_changes()
    recorded = {key: value for key, value in dataclasses.asdict(method).items()
                if key not in RECIPE_METHOD_KEYS or key in changed}
    return {"train": dataclasses.asdict(train), "method": recorded,
            "projectors": {k: dataclasses.asdict(v) for k, v in model.config.projectors.items()}}


def optimizer_and_schedule(model: torch.nn.Module, train: TrainConfig, total_steps: int
                           ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and its warm-up + cosine schedule over ``total_steps``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_lr_factor(
        step, total_steps, train.warmup_steps, train.min_lr_ratio))
    return optimizer, scheduler


def train_projectors(model: ConnectedModel, data: Batches, train: TrainConfig,
                     method: MethodConfig, out_dir: str | Path, *, resume: bool = False,
                     device: torch.device = torch.device("cpu"), progress: bool = True,
                     label: str = "training", batch_loss: BatchLoss | None = None,
                     extra_settings: dict[str, Any] | None = None,
                     residuals: dict[str, float] | None = None,
                     on_epoch: Callable[[int, ConnectedModel], None] | None = None
                     ) -> ConnectedModel:
    """Train ``model``'s projectors on ``data``; checkpoint and log under ``out_dir``.
    ``batch_loss`` scores a batch (default: C-MCR's); ``extra_settings`` join what a resumed
    run must share with the checkpoint (extend mode's settings); ``residuals``: each space's
    text-pseudo residual variance, which ``method.noise_calibration`` scales into its noise;
    ``on_epoch(epoch, model)`` runs after each epoch is saved (the model in eval mode)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(train.seed)
    model.to(device)
    per_epoch = steps_per_epoch(len(data), train.batch_size, train.drop_last)
    warn_if_short_epochs(len(data), train.batch_size, per_epoch)
    total_steps = per_epoch * train.epochs
    optimizer, scheduler = optimizer_and_schedule(model, train, total_steps)
    settings = {**_settings(train, method, model), "rows": len(data), **(extra_settings or {}),
                **({"residuals": residuals} if residuals else {})}
    batch_loss = batch_loss or cmcr_batch_loss(tuple(data.space_names), method, residuals)
    start_epoch = 0
    if resume:
        start_epoch = _load_checkpoint(out_dir, settings, model, optimizer, scheduler)
    _truncate_metrics(out_dir / METRICS_NAME, start_epoch)
    load_batch = data.batch_loader(device)
    bar = tqdm(total=total_steps, initial=start_epoch * per_epoch, desc=label,
               unit="step", disable=not progress)
    for epoch in range(start_epoch, train.epochs):
        order = torch.randperm(len(data), generator=epoch_generator(train.seed, epoch)).numpy()
        noise_generator = epoch_generator(train.seed, epoch, "noise", device)
        model.train()
        sums: dict[str, float] = {}
        started = time.perf_counter()
        for step in range(per_epoch):
            index = order[step * train.batch_size:(step + 1) * train.batch_size]
            try:
                terms = _train_step(model, load_batch(index), batch_loss, noise_generator,
                                    optimizer, scheduler)
            except TrainingError as err:
                bar.close()
                raise TrainingError(f"epoch {epoch + 1}, step {step + 1}: {err}; nothing of this "
                                    f"epoch was saved") from None
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{sums['total'] / (step + 1):.4f}")
        record = {"epoch": epoch + 1, "steps": (epoch + 1) * per_epoch,
                  "lr": scheduler.get_last_lr()[0],
                  "seconds": round(time.perf_counter() - started, 3),
                  **{k: v / per_epoch for k, v in sums.items()}}
        _append_jsonl(out_dir / METRICS_NAME, record)
        _save_checkpoint(out_dir, settings, epoch + 1, model, optimizer, scheduler)
        if on_epoch is not None:
            on_epoch(epoch + 1, model.eval())
    bar.close()
    return model.eval()


def _train_step(model: ConnectedModel, batch: list[torch.Tensor], batch_loss: BatchLoss,
                generator: torch.Generator, optimizer, scheduler) -> dict[str, float]:
    """One optimisation step; returns the loss terms as floats."""
    terms = batch_loss(model, batch, generator)
    values = terms.as_floats()
    if not all(math.isfinite(value) for value in values.values()):
        bad = ", ".join(f"{name} = {value}" for name, value in values.items()
                        if not math.isfinite(value))
        raise TrainingError(f"the loss is not finite ({bad}): the learning rate may be too high "
                            "or a temperature too low for these embeddings")
    optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    optimizer.step()
    scheduler.step()
    return values


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, keep_epochs: int) -> None:
    """Drop log lines of epochs that will be trained (again); a last line cut short by a kill
    or a full disk is dropped too (its epoch has no checkpoint, so it is trained again)."""
    if not path.exists():
        return
    records = [] if keep_epochs == 0 else read_json_records(
        path, CheckpointError, "delete that line (it is only a log), or train afresh in a new "
        "--out folder")
    for record in records:
        if isinstance(record.get("epoch"), bool) or not isinstance(record.get("epoch"), int):
            raise CheckpointError(f"{path}: a record without a whole-number 'epoch' "
                                  f"({str(record)[:80]}); delete that line (it is only a log)")
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in records
                                    if record["epoch"] <= keep_epochs))


def _save_checkpoint(out_dir: Path, settings: dict, epoch: int, model, optimizer, scheduler) -> None:
    state = {"epoch": epoch, "settings": json.dumps(settings, sort_keys=True),
             "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict()}
    with atomic_file(out_dir / CHECKPOINT_NAME) as tmp:  # a full disk keeps the last epoch's
        torch.save(state, tmp)


def _load_checkpoint(out_dir: Path, settings: dict, model, optimizer, scheduler) -> int:
    """Restore the last finished epoch; returns the epoch to start from (0 if none)."""
    path = out_dir / CHECKPOINT_NAME
    if not path.exists():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged file
        raise CheckpointError(f"{path}: cannot read the training checkpoint: {err}") from None
    if state.get("settings") != json.dumps(settings, sort_keys=True):
        raise CheckpointError(f"{path}: this checkpoint was made with different settings; "
                              "resume with the same config, or use a new --out directory")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"])
