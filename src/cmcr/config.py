"""Typed configuration for a C-MCR connection, with the paper's defaults.

Defaults marked *unconfirmed* come from a re-implementation that copies the paper's equations
(see NOTES.md); they are configuration, never constants. Configs never import torch.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cmcr.config_files import (apply_overrides, load_yaml, parse_override,  # noqa: F401
                                read_config_file, save_config)
from cmcr.errors import ConfigError
from cmcr.recipes import DEFAULT_RECIPE, RECIPES


@dataclass(frozen=True)
class Range:
    """The values a numeric config key accepts: ``low``/``high`` bounds, each closed or open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        return f"{'<' if self.high_open else '<='} {high}"


def _number(value: float | None) -> str:
    return str(value) if isinstance(value, (int, type(None))) else f"{value:g}"


def ranged(default: Any, low: float | None = None, high: float | None = None, *,
           low_open: bool = False, high_open: bool = False) -> Any:
    """A dataclass field whose value must lie in a range (checked when the config is built)."""
    return field(default=default, metadata={"range": Range(low, high, low_open, high_open)})


def check_ranges(cls: type, values: Mapping[str, Any], where: str) -> None:
    """Refuse non-finite numbers and values outside their field's declared range."""
    prefix = f"{where}." if where else ""
    for item in dataclasses.fields(cls):
        value = values.get(item.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"'{prefix}{item.name}' must be a finite number, got {value}")
        allowed = item.metadata.get("range")
        if allowed is not None and not allowed.allows(value):
            raise ConfigError(f"'{prefix}{item.name}' must be {allowed}, got {shown(value)}")


class Checked:
    """Mixin: a config built directly in Python is range-checked like one read from a file."""

    section = ""

    def __post_init__(self) -> None:
        check_ranges(type(self), vars(self), self.section)


@dataclass
class MethodConfig(Checked):
    """The C-MCR objective. Each ``use_*`` switch removes one part, for ablations."""

    section = "method"
    noise_var: float = ranged(0.004, 0)  # sigma^2 of the Gaussian noise (unconfirmed)
    memory_temperature: float = ranged(0.01, 0, low_open=True)  # tau_mem of the memory softmax
    memory_top_k: int | None = ranged(None, 1)  # None: softmax over the whole memory (the paper)
    temperature: float = ranged(0.01, 0, low_open=True)  # tau of the shared-modality InfoNCE
    pseudo_temperature: float | None = ranged(None, 0, low_open=True)  # pseudo pair's; None: tau
    intra_weight: float = ranged(0.1, 0)  # lambda in inter + lambda * intra, intra = 1/(2B) sum
    intra_squared: bool = True  # squared L2 distance in the intra term (unconfirmed in the paper)
    use_noise: bool = True
    use_memory: bool = True  # False: no pseudo pairs, hence no pseudo-pair and no intra term
    use_pseudo_inter: bool = True  # InfoNCE between the pseudo pair (f_a(v), f_b(a))
    use_intra: bool = True
    # Recipe options (docs/recipes.md; `recipe: cmcr+`); None keeps the paper's behaviour.
    # noise sigma^2 = (1/c^2 - 1)/d, so E cos(x, noised x) ~ c in any dim d (replaces noise_var);
    # below 0.01 a noised row keeps less of itself than two random rows share (|cos| ~ 1/sqrt(d)
    # for d up to 10^4): the model would learn from noise alone
    noise_cosine: float | None = ranged(None, 0.01, 1, high_open=True)
    # InfoNCE drops from its denominators pairs whose raw texts' cosine exceeds this in both
    # spaces: a test of "the same text"; at or below 0 it drops every pair that is not opposed,
    # i.e. all of InfoNCE's negatives, and the loss is 0
    same_text_threshold: float | None = ranged(None, 0, 1, low_open=True)
    # InfoNCE soft targets softmax(c/t), c: raw texts' cosine (the smaller of both spaces')
    soft_target_temperature: float | None = ranged(None, 0, low_open=True)
    # 2: retrieve the pseudo pairs again in round 1's joint space, then train afresh on them
    pseudo_rounds: int = ranged(1, 1, 2)
    # sigma^2 = k x each space's measured residual: the per-dimension variance of (text - its
    # pseudo partner) after removing their mean difference (replaces noise_var / noise_cosine)
    noise_calibration: float | None = ranged(None, 0, low_open=True)
    # scale pseudo rows to unit length before the noise (stored rows are weighted averages)
    normalize_pseudo: bool = False
    # C3 / TextME: subtract each modality's mean (texts: the queries'; media: the memory's),
    # re-normalise, then noise and project; the model keeps the means and applies them at inference
    center_modalities: bool = False

    def recipe_changes(self) -> dict[str, Any]:
        """The recipe options (RECIPE_METHOD_KEYS) that differ from the paper's behaviour."""
        return {key: getattr(self, key) for key in RECIPE_METHOD_KEYS
                if getattr(self, key) != _RECIPE_DEFAULTS[key]}


# MethodConfig keys added after checkpoints recorded their settings: left out of a checkpoint's
# settings while they hold their default, so older checkpoints still resume.
RECIPE_METHOD_KEYS = ("noise_cosine", "same_text_threshold", "soft_target_temperature",
                      "pseudo_rounds", "noise_calibration", "normalize_pseudo",
                      "center_modalities")
_RECIPE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(MethodConfig)
                    if f.name in RECIPE_METHOD_KEYS}


@dataclass
class TrainConfig(Checked):
    """AdamW with cosine decay, as in the paper (all values unconfirmed)."""

    section = "train"
    epochs: int = ranged(36, 1)
    batch_size: int = ranged(4096, 2)  # InfoNCE and BatchNorm need two rows
    lr: float = ranged(1.0e-3, 0, 1000, low_open=True)
    weight_decay: float = ranged(0.01, 0)  # torch's AdamW default
    warmup_steps: int = ranged(0, 0)
    min_lr_ratio: float = ranged(0.0, 0, 1)  # cosine decays to lr * min_lr_ratio
    seed: int = ranged(0, 0, 2**32 - 1)
    drop_last: bool = True  # drop a last partial batch (BatchNorm dislikes tiny batches)


PROJECTOR_PRESETS: dict[str, dict[str, Any]] = {
    # Official CLAP-CLIP heads: Linear(512,1024) BN ReLU Linear(1024,512) BN (confirmed from weights).
    "clap-clip": {"hidden": 1024, "out_dim": 512, "layers": 2, "batch_norm": True,
                  "final_norm": True, "final_activation": False, "bias_before_norm": True},
    # Official ULIP-CLIP heads: Linear(512,512) BN ReLU (confirmed from weights).
    "ulip-clip": {"hidden": 512, "out_dim": 512, "layers": 1, "batch_norm": True,
                  "final_norm": True, "final_activation": True, "bias_before_norm": True},
    # Official Ex-MCR leaf head (exmcr/exmcr_projector.py): Linear(512,512) set to the identity,
    # then two residual-free blocks Linear(512,1024) BN ReLU Linear(1024,512) BN (confirmed).
    "ex-mcr": {"kind": "exmcr", "hidden": 1024, "out_dim": 512, "layers": 2, "batch_norm": True},
}
# "mlp": C-MCR's projector; "exmcr": Ex-MCR's leaf head (a linear layer, then ``layers`` MLP
# blocks); "identity": a frozen base space in extend mode (rows are only L2-normalised).
PROJECTOR_KINDS = ("mlp", "exmcr", "identity")
MAX_WIDTH = 65536  # widest projector layer: 64x the paper's 1024 (wider: tens of GB of weights)


@dataclass
class ProjectorConfig(Checked):
    """An MLP of ``layers`` Linear blocks: Linear [BatchNorm] ReLU ... Linear [BatchNorm] [ReLU]."""

    section = "projector"
    preset: str | None = None  # a name from PROJECTOR_PRESETS; explicit keys override it
    kind: str = "mlp"  # one of PROJECTOR_KINDS; 'exmcr' uses hidden, out_dim, layers, batch_norm
    hidden: int = ranged(1024, 1, MAX_WIDTH)
    out_dim: int = ranged(512, 1, MAX_WIDTH)
    layers: int = ranged(2, 1)
    batch_norm: bool = True
    final_norm: bool = True  # BatchNorm after the last Linear
    final_activation: bool = False  # ReLU after the last block
    dropout: float = ranged(0.0, 0, 1, high_open=True)
    # A Linear bias just before BatchNorm is cancelled by it (its true gradient is 0), so it only
    # drifts on rounding noise; the authors' heads have one (their presets, and models saved
    # without this key, by earlier versions, load with it True).
    bias_before_norm: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind not in PROJECTOR_KINDS:
            raise ConfigError(f"'projector.kind' must be one of {', '.join(PROJECTOR_KINDS)}, "
                              f"got {shown(self.kind)}")


RETRIEVAL_ENGINES = ("local", "ray")


@dataclass
class RetrievalConfig(Checked):
    """Where memory retrieval runs: in this process ('local'), or as Ray tasks over query
    chunks ('ray': cmcr[ray], docs/scale.md); both give the same pseudo embeddings."""

    section = "retrieval"
    engine: str = "local"
    address: str | None = None  # 'auto', 'HOST:6379'; None: RAY_ADDRESS or a new local Ray
    timeout: float = ranged(60.0, 0, low_open=True)  # seconds a named cluster may take to answer

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.engine not in RETRIEVAL_ENGINES:
            raise ConfigError(f"'retrieval.engine' must be one of {', '.join(RETRIEVAL_ENGINES)}, "
                              f"got {shown(self.engine)}")


@dataclass
class SpaceDataConfig:
    """Where one space's embeddings live. Row i of every space's ``queries`` is the same item."""

    queries: str
    memory: str | None = None
    memory_modality: str = "image"


MODES = ("cmcr", "extend")


@dataclass
class ExtendConfig(Checked):
    """Ex-MCR's extend mode (``mode: extend``): the base space stays frozen and the leaf space
    gets a head into it. Each list can drop parts, for ablations like C-MCR's ``use_*``."""

    section = "extend"
    base: str | None = None  # the frozen base space; None: the first of 'spaces'
    # Modality-centric query sets (modality names): the shared modality, the leaf memory's and
    # the base memory's; None: all three (the paper's "various modality-centric" data).
    queries: list[str] | None = None
    # Dense alignment pairs 'LEAF-BASE' (leaf modality projected, base modality frozen), e.g.
    # text-text, audio-image, text-image, audio-text; None: all four (the paper's dense objective).
    pairs: list[str] | None = None


@dataclass
class ConnectConfig:
    """Everything ``cmcr connect`` needs: two spaces' stores and the method's settings."""

    spaces: dict[str, SpaceDataConfig]
    shared_modality: str = "text"
    mode: str = "cmcr"  # "cmcr": both spaces into a new one; "extend": the leaf into the base
    recipe: str = DEFAULT_RECIPE  # a name in cmcr.recipes.RECIPES: fills the method's defaults
    train: TrainConfig = field(default_factory=TrainConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    extend: ExtendConfig = field(default_factory=ExtendConfig)

    def __post_init__(self) -> None:
        if len(self.spaces) != 2:
            raise ConfigError(f"'spaces' must name exactly two spaces, got {len(self.spaces)}: "
                              f"{shown(sorted(self.spaces))}")
        check_space_names(self.spaces, "spaces")
        if self.mode not in MODES:
            raise ConfigError(f"'mode' must be one of {', '.join(MODES)}, got {shown(self.mode)}")
        check_recipe(self.recipe)
        if self.mode == "extend" and (self.recipe != DEFAULT_RECIPE or self.method.recipe_changes()):
            raise ConfigError(f"recipes tune C-MCR's objective; extend mode takes 'recipe: "
                              f"{DEFAULT_RECIPE}' and none of the method keys "
                              f"{', '.join(RECIPE_METHOD_KEYS)}")
        if self.mode == "extend":
            check_extend(self)
        check_method(self.method)

    @property
    def space_names(self) -> list[str]:
        return list(self.spaces)

    @property
    def base_space(self) -> str:
        """Extend mode's frozen base space (``extend.base``, else the first space)."""
        return self.extend.base or self.space_names[0]

    @property
    def leaf_space(self) -> str:
        return next(name for name in self.space_names if name != self.base_space)

    def extend_modalities(self) -> tuple[str, str, str]:
        """(shared, leaf memory, base memory) modalities of an extend-mode connection."""
        return (self.shared_modality, self.spaces[self.leaf_space].memory_modality,
                self.spaces[self.base_space].memory_modality)

    def extend_queries(self) -> list[str]:
        return list(self.extend.queries or self.extend_modalities())

    def extend_pairs(self) -> list[str]:
        return list(self.extend.pairs or extend_pair_names(*self.extend_modalities()))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConnectConfig":
        return from_dict(cls, data)


def check_recipe(name: Any) -> None:
    if not isinstance(name, str) or name not in RECIPES:
        raise ConfigError(f"unknown recipe {shown(name)} in 'recipe'; known recipes: "
                          + ", ".join(RECIPES))


SPACE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def check_space_names(names: Mapping[str, Any], where: str) -> None:
    """Space names become file names (pseudo-embedding caches) and model keys: each must be
    one safe path component of letters, digits, '_' and '-'."""
    for name in names:
        if not isinstance(name, str) or not SPACE_NAME.fullmatch(name):
            raise ConfigError(f"'{where}' names a space {shown(name)}: a space name must be "
                              "letters, digits, '_' and '-' only (e.g. clip, clap_htsat)")


# method keys that only act on pseudo pairs: with use_memory false they would be ignored
PSEUDO_PAIR_KEYS = ("pseudo_rounds", "noise_calibration", "center_modalities", "normalize_pseudo")


def check_method(method: MethodConfig) -> None:
    """Refuse method settings that cannot act together (one would be silently ignored)."""
    if not method.use_memory:
        for key in PSEUDO_PAIR_KEYS:
            if getattr(method, key) != _RECIPE_DEFAULTS[key]:
                raise ConfigError(f"'method.{key}' needs pseudo pairs, but 'method.use_memory' "
                                  f"is false: set use_memory: true, or leave {key} at its default")
    if method.same_text_threshold is not None and method.soft_target_temperature is not None:
        raise ConfigError("'method.soft_target_temperature' replaces InfoNCE's targets and so "
                          "ignores the mask of 'method.same_text_threshold': set only one")
    if method.noise_cosine is not None and method.noise_calibration is not None:
        raise ConfigError("'method.noise_cosine' and 'method.noise_calibration' both set the "
                          "noise (noise_calibration would win): set only one")


def _apply_recipe(data: dict[str, Any]) -> dict[str, Any]:
    """A connect mapping whose ``method`` is the recipe's overrides, then its own keys."""
    name = data.get("recipe", DEFAULT_RECIPE)
    check_recipe(name)
    method = data.get("method")
    if RECIPES[name] and (method is None or isinstance(method, Mapping)):
        data["method"] = {**RECIPES[name], **(method or {})}
    return data


def extend_pair_names(shared: str, leaf_memory: str, base_memory: str) -> list[str]:
    """Every dense alignment pair 'LEAF-BASE': shared-shared, memory-memory, then the crossings."""
    return [f"{shared}-{shared}", f"{leaf_memory}-{base_memory}", f"{shared}-{base_memory}",
            f"{leaf_memory}-{shared}"]


def check_extend(config: ConnectConfig) -> None:
    """Refuse an extend-mode config whose base, modalities, query sets or pairs do not fit."""
    if config.extend.base is not None and config.extend.base not in config.spaces:
        raise ConfigError(f"'extend.base' must be one of the spaces {config.space_names}, "
                          f"got {shown(config.extend.base)}")
    modalities = config.extend_modalities()
    if len(set(modalities)) != 3:
        raise ConfigError(f"extend mode needs three different modalities (shared, leaf memory, "
                          f"base memory), got {list(modalities)}: check 'memory_modality'")
    if not config.method.use_memory or config.method.memory_top_k is not None:
        raise ConfigError("extend mode retrieves over whole memories: 'method.use_memory' must be "
                          "true and 'method.memory_top_k' null (drop parts with 'extend.queries' "
                          "and 'extend.pairs')")
    for key, chosen, valid in (("queries", config.extend.queries, list(modalities)),
                               ("pairs", config.extend.pairs, extend_pair_names(*modalities))):
        if chosen is not None and (not chosen or any(item not in valid for item in chosen)):
            raise ConfigError(f"'extend.{key}' must be a non-empty list of {', '.join(valid)}; "
                              f"got {shown(chosen)}")


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 60, 60, 4, 4, 2


def shown(value: Any) -> str:
    """A value as an error message may show it: bounded in length and depth."""
    return _SHORT.repr(value)


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """Convert ``value`` to ``hint`` (dataclass, dict, Optional, scalar) or raise ConfigError."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(value, inner[0], where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{where}' must be a list, got {type(value).__name__}")
        (item_hint,) = typing.get_args(hint)
        return [_check_value(v, item_hint, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{where}' must be a mapping, got {type(value).__name__}")
        _, value_hint = typing.get_args(hint)
        return {str(k): _check_value(v, value_hint, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{where}' must be true or false, got {shown(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{where}' must be an integer, got {shown(value)}")
        if abs(value) >= 2**63:
            raise ConfigError(f"'{where}' must be an integer below 2^63, got {shown(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{where}' must be a number, got {shown(value)}")
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"'{where}' must be a number below 1e308, got {shown(value)}") from None
    if hint is str:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"'{where}' must be a string, got {shown(value)}")
        return str(value)
    return value


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys raise an error listing the valid ones."""
    if isinstance(data, cls):
        return data
    label = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"'{label}' must be a mapping, got {type(data).__name__}: {shown(data)}")
    data = dict(data)
    if cls is ProjectorConfig and data.get("preset") is not None:
        data = _apply_preset(data, label)
    if cls is ConnectConfig:
        data = _apply_recipe(data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key '{prefix}{unknown[0]}'; valid keys{' of ' + where if where else ''}: "
            + ", ".join(sorted(fields))
        )
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"missing required key '{prefix}{missing[0]}'")
    huge = {name: value for name, value in data.items()  # named with their range, if any
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63}
    check_ranges(cls, huge, where)
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _check_value(value, hints[name], key)
    check_ranges(cls, kwargs, where)
    return cls(**kwargs)


def _apply_preset(data: dict[str, Any], where: str) -> dict[str, Any]:
    name = data["preset"]
    if name not in PROJECTOR_PRESETS:
        raise ConfigError(
            f"unknown projector preset '{name}' in '{where}.preset'; valid presets: "
            + ", ".join(sorted(PROJECTOR_PRESETS))
        )
    return {**PROJECTOR_PRESETS[name], **data}


def load_connect_config(path: str | Path, overrides: list[str] | None = None) -> ConnectConfig:
    """Load a ``cmcr connect`` YAML/JSON config; relative store paths are relative to the file."""
    path = Path(path)
    data = apply_overrides(read_config_file(path), overrides or [])
    try:
        config = ConnectConfig.from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    for space in config.spaces.values():
        space.queries = str(_resolve(space.queries, path.parent))
        if space.memory is not None:
            space.memory = str(_resolve(space.memory, path.parent))
    return config


def _resolve(path: str, base: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate).resolve()


@dataclass
class SpaceSpec(Checked):
    """One frozen space as seen by a connected model."""

    section = "space"
    modalities: list[str]
    dim: int = ranged(dataclasses.MISSING, 1)
    # The frozen space the model was trained on: its spec ("kind:name_or_path") and its weights'
    # sha256 (cmcr.extend.unified checks a unified model's bases agree); None: not known (a model saved
    # by an earlier cmcr, or trained on stores that do not record their space).
    frozen: str | None = None
    weights_sha256: str | None = None


@dataclass
class ModelConfig:
    """What ``ConnectedModel.save_pretrained`` writes to ``config.json``."""

    spaces: dict[str, SpaceSpec]  # space name -> its modalities and input dim
    projectors: dict[str, ProjectorConfig]  # space name -> the projector that maps it
    shared_modality: str = "text"
    shared_modality_space: str | None = None  # which side embeds the shared modality at inference
    source: str = "cmcr"  # "cmcr" (trained here) or "official:<kind>" (imported)
    train: TrainConfig | None = None
    method: MethodConfig | None = None
    cmcr_version: str = ""

    def __post_init__(self) -> None:
        check_space_names(self.spaces, "spaces")
        if set(self.spaces) != set(self.projectors):
            raise ConfigError(f"model config: spaces {sorted(self.spaces)} and projectors "
                              f"{sorted(self.projectors)} must name the same spaces")
        out_dims = {p.out_dim for p in self.projectors.values()}
        if len(out_dims) != 1:
            raise ConfigError(f"model config: projectors disagree on out_dim: {sorted(out_dims)}")
        for name, projector in self.projectors.items():
            if projector.kind == "identity" and projector.out_dim != self.spaces[name].dim:
                raise ConfigError(f"model config: the base space '{name}' has dim "
                                  f"{self.spaces[name].dim}, but 'projectors.{name}.out_dim' is "
                                  f"{projector.out_dim}; an identity head keeps the dim")

    @property
    def out_dim(self) -> int:
        return next(iter(self.projectors.values())).out_dim
