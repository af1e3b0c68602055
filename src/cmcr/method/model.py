"""Projectors and the connected model: save_pretrained / from_pretrained / project."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmcr.config import ModelConfig, ProjectorConfig, from_dict
from cmcr.errors import CheckpointError, ConfigError
from cmcr.version import __version__
from cmcr.data.weights import (check_finite, check_state_fits, read_safetensors,
                               save_safetensors)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class ThreadStableBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose training statistics are column means (one reduction per column):
    torch's fused CPU kernel splits its sums by thread, so training with 1 and 2 threads drifted
    apart by up to 2e-3 in the weights. Same parameters, buffers and eval behaviour."""

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        if not self.training or rows.dim() != 2:
            return super().forward(rows)
        mean = rows.mean(0)
        centred = rows - mean
        variance = (centred * centred).mean(0)
        if self.track_running_stats and self.running_mean is not None:
            self._update_running_stats(mean.detach(), variance.detach(), len(rows))
        normalised = centred * torch.rsqrt(variance + self.eps)
        return normalised * self.weight + self.bias if self.affine else normalised

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, variance: torch.Tensor, count: int) -> None:
        """torch's rule: the running variance takes the unbiased batch variance."""
        self.num_batches_tracked += 1
        momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                    else self.momentum)
        unbiased = variance * (count / max(1, count - 1))
        self.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)


class Projector(nn.Module):
    """MLP from one frozen space into the joint space: (n, in_dim) -> (n, out_dim) unit rows."""

    def __init__(self, in_dim: int, config: ProjectorConfig):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_dim
        for index in range(config.layers):
            last = index == config.layers - 1
            out = config.out_dim if last else config.hidden
            normed = config.batch_norm and (not last or config.final_norm)
            blocks.append(nn.Linear(width, out, bias=config.bias_before_norm or not normed))
            if normed:
                blocks.append(ThreadStableBatchNorm1d(out))
            if not last or config.final_activation:
                blocks.append(nn.ReLU())
                if config.dropout > 0 and not last:
                    blocks.append(nn.Dropout(config.dropout))
            width = out
        self.net = nn.Sequential(*blocks)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights, as the authors' ``init_weights('xav')`` sets every parameter
        with more than one dimension; biases keep torch's default init, as theirs do."""
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(embeddings), dim=-1)


class ModalityCentres(nn.Module):
    """The mean unit row of each (space, modality) a centred model subtracts: buffers named
    ``SPACE__MODALITY``, saved with the projectors."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        for name, spec in config.spaces.items():
            for modality in spec.modalities:
                self.register_buffer(f"{name}__{modality}", torch.zeros(spec.dim))

    def mean(self, space_name: str, modality: str) -> torch.Tensor:
        return getattr(self, f"{space_name}__{modality}")

    def set_mean(self, space_name: str, modality: str, mean: Any) -> None:
        self.mean(space_name, modality).copy_(torch.as_tensor(np.asarray(mean, dtype=np.float32)))


# projector kind -> "module:Class"; Ex-MCR's heads live with Ex-MCR (cmcr.extend), which builds
# on this package, so they are named here and imported when a model of that kind is built.
PROJECTOR_CLASSES: dict[str, str] = {
    "mlp": "cmcr.method.model:Projector", "exmcr": "cmcr.extend.heads:ExMcrHead",
    "identity": "cmcr.extend.heads:IdentityHead"}


def build_projector(in_dim: int, config: ProjectorConfig) -> nn.Module:
    """The projector of ``config.kind``: (n, in_dim) -> (n, out_dim) unit rows."""
    module_name, _, class_name = PROJECTOR_CLASSES[config.kind].partition(":")
    projector_class = getattr(importlib.import_module(module_name), class_name)
    return projector_class(in_dim, config)


class ConnectedModel(nn.Module):
    """Frozen spaces' projectors into one joint space: two for C-MCR; for Ex-MCR's extend mode
    a frozen base (identity) plus one head per leaf space, which is a unified model."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.projectors = nn.ModuleDict({
            name: build_projector(config.spaces[name].dim, projector)
            for name, projector in config.projectors.items()
        })
        if config.method is not None and config.method.center_modalities:
            self.centres = ModalityCentres(config)
        self.eval()

    @property
    def centred(self) -> bool:
        """Whether each modality is centred on its own (stored) mean before its projector."""
        return hasattr(self, "centres")

    def centre_rows(self, space_name: str, modality: str | None, rows: torch.Tensor
                    ) -> torch.Tensor:
        """Unit rows -> unit rows minus the modality's stored mean, re-normalised (a no-op for
        models trained without ``method.center_modalities``)."""
        if not self.centred:
            return rows
        modalities = self.config.spaces[space_name].modalities
        if modality is None:
            raise ConfigError(f"this model centres each modality on its own mean: say which of "
                              f"{modalities} these '{space_name}' rows are (project(..., "
                              f"modality=...))")
        if modality not in modalities:
            raise ConfigError(f"space '{space_name}' of this model embeds {modalities}, not "
                              f"'{modality}'")
        return F.normalize(rows - self.centres.mean(space_name, modality).to(rows), dim=-1)

    def memory_modality(self, space_name: str) -> str:
        """The modality a C-MCR space adds beside the shared one (its memory's: image, audio)."""
        shared = self.config.shared_modality
        return next((m for m in self.config.spaces[space_name].modalities if m != shared), shared)

    @property
    def space_names(self) -> list[str]:
        return list(self.config.spaces)

    @property
    def out_dim(self) -> int:
        return self.config.out_dim

    @property
    def base_space(self) -> str | None:
        """The frozen base space of an extended (unified) model; None for C-MCR models."""
        return next((name for name, p in self.config.projectors.items() if p.kind == "identity"),
                    None)

    def space_for(self, modality: str) -> str:
        """The space that embeds ``modality`` (the shared one goes through ``shared_modality_space``;
        in a unified model, the base space for every modality it embeds)."""
        if modality == self.config.shared_modality:
            return self.config.shared_modality_space or self.space_names[0]
        base = self.base_space
        if base is not None and modality in self.config.spaces[base].modalities:
            return base
        for name, spec in self.config.spaces.items():
            if modality in spec.modalities:
                return name
        known = sorted({m for s in self.config.spaces.values() for m in s.modalities})
        raise ConfigError(f"no space of this model embeds modality '{modality}'; known: {known}")

    def project(self, space_name: str, embeddings: Any, modality: str | None = None
                ) -> torch.Tensor:
        """Map a space's embeddings (n, d) or (d,) into the joint space: (n, out_dim) unit rows.

        Inputs are L2-normalised first (as in training) and, in a model trained with
        ``method.center_modalities``, centred on ``modality``'s stored mean (then ``modality``
        is required); the projector always runs in eval mode, so a row alone gives the same
        result as inside a batch.
        """
        if space_name not in self.projectors:
            raise ConfigError(f"unknown space '{space_name}'; this model connects: "
                              + ", ".join(self.space_names))
        projector = self.projectors[space_name]
        parameter = next(iter([*projector.parameters(), *projector.buffers()]))
        rows = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor)
                               else embeddings)
        if rows.ndim == 1:
            rows = rows[None]
        expected = self.config.spaces[space_name].dim
        if rows.ndim != 2 or rows.shape[1] != expected:
            raise ConfigError(f"space '{space_name}' takes (n, {expected}) embeddings, "
                              f"got shape {tuple(rows.shape)}")
        rows = F.normalize(rows.to(device=parameter.device, dtype=parameter.dtype), dim=-1)
        rows = self.centre_rows(space_name, modality, rows)
        was_training = projector.training
        projector.eval()
        try:
            with torch.inference_mode():
                return projector(rows)
        finally:
            projector.train(was_training)

    # -- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.cmcr_version = __version__
        config = dataclasses.asdict(self.config)
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        tensors = {key: value.detach().cpu().contiguous() for key, value in self.state_dict().items()}
        save_safetensors(tensors, directory / WEIGHTS_NAME,
                         metadata={"format": "pt", "cmcr": __version__})
        return directory

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device = "cpu"
                        ) -> "ConnectedModel":
        """Load a model saved by :meth:`save_pretrained` (a local directory or a hub repo id)."""
        directory = _locate(name_or_path)
        config = load_model_config(directory / CONFIG_NAME)
        model = cls(config)
        weights_path = directory / WEIGHTS_NAME
        model.load_weights(read_safetensors(weights_path), weights_path)
        return model.to(device).eval()

    def load_weights(self, state: dict[str, torch.Tensor], source: Path | str) -> None:
        """Load a state dict, naming the file and the keys, shapes or values that do not fit."""
        check_state_fits(state, self.state_dict(), source)
        check_finite(state, source)
        self.load_state_dict(state)


def load_model_config(path: Path) -> ModelConfig:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found: is this a cmcr model directory?") from None
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable model config: {err}") from None
    try:
        return from_dict(ModelConfig, with_legacy_biases(data))
    except ConfigError as err:
        raise CheckpointError(f"{path}: {err}") from None


def with_legacy_biases(data: Any) -> Any:
    """Models saved before ``bias_before_norm`` existed have a bias before each BatchNorm."""
    projectors = data.get("projectors") if isinstance(data, dict) else None
    if isinstance(projectors, dict):
        for projector in projectors.values():
            if isinstance(projector, dict):
                projector.setdefault("bias_before_norm", True)
    return data


def _locate(name_or_path: str | Path) -> Path:
    """A local directory, or a hub repo id fetched with huggingface_hub (when it is installed)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_path)
    if path.exists() or text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise CheckpointError(f"{path}: not a cmcr model directory (expected {CONFIG_NAME} and "
                              f"{WEIGHTS_NAME} inside)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"'{text}' is not a local directory; to fetch it from the hub, "
                              "pip install huggingface_hub") from None
    try:
        return Path(snapshot_download(text, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))
    except Exception as err:  # network and hub errors come in many types
        raise CheckpointError(f"'{text}' is neither a local directory nor a reachable hub "
                              f"repository: {err}") from None
