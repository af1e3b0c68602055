"""What every space offers: ``embed(modality, inputs) -> (n, d)`` unit rows, whatever the encoder.

A space is split the way transformers splits a model: a picklable :class:`Preprocessor` turns files
and user objects into model inputs (it runs in data-loader workers, holding no model), and the
space itself runs the model on those inputs (in the main process, on the GPU when there is one).
"""

from __future__ import annotations

import contextlib
import pickle
from abc import ABC, abstractmethod
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from cmcr.errors import CheckpointError, CmcrError, ConfigError, MissingDependencyError
from cmcr.spaces import files
from cmcr.data.weights import holds_python_objects


class Modality(str, Enum):
    """The modalities cmcr knows; a space embeds some of them."""

    IMAGE = "image"
    AUDIO = "audio"
    TEXT = "text"
    VIDEO = "video"
    POINT_CLOUD = "point_cloud"


MODALITIES: tuple[str, ...] = tuple(m.value for m in Modality)


class Preprocessor(ABC):
    """Files and user objects -> one batch of model inputs. Picklable; never holds a model."""

    @abstractmethod
    def load(self, path: Path) -> Any:
        """Decode one file into an item :meth:`collate` accepts (raises InputError)."""

    def prepare(self, item: Any) -> Any:
        """An item a user passed to ``embed`` (a path or an already decoded object) -> decoded."""
        if isinstance(item, (str, Path)):
            return self.load(Path(item))
        return item

    @abstractmethod
    def collate(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Decoded items -> a batch of model inputs (tensors on the CPU)."""


class Space(ABC):
    """A frozen pretrained embedding space (CLIP, CLAP, a precomputed store, ...).

    ``embed`` returns float32 CPU tensors of L2-normalised rows, whatever the encoder's own
    convention (CLIP's features are not unit length, CLAP's are): every adapter enforces it here.
    """

    name: str
    modalities: tuple[str, ...]

    @property
    @abstractmethod
    def dim(self) -> int:
        """Width of the embeddings."""

    def check_modality(self, modality: str) -> str:
        modality = str(getattr(modality, "value", modality))
        if modality not in self.modalities:
            raise ConfigError(f"space '{self.name}' embeds {', '.join(self.modalities)}, "
                              f"not '{modality}'")
        return modality

    @abstractmethod
    def preprocessor(self, modality: str) -> Preprocessor:
        """The picklable decoder/collator for ``modality``."""

    @abstractmethod
    def encode(self, modality: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """A collated batch -> (n, d) unit rows, float32 on the CPU."""

    def embed(self, modality: str, inputs: Sequence[Any], batch_size: int = 32) -> torch.Tensor:
        """Embed paths or decoded items (PIL images, waveforms, strings): (n, d) unit rows."""
        modality = self.check_modality(modality)
        preprocessor = self.preprocessor(modality)
        items = [preprocessor.prepare(item) for item in inputs]
        parts = [self.encode(modality, preprocessor.collate(items[start:start + batch_size]))
                 for start in range(0, len(items), max(1, batch_size))]
        if not parts:
            return torch.zeros((0, self.dim))
        return torch.cat(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, modalities={self.modalities})"


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """(n, d) features -> float32 CPU unit rows (normalised in float32, also for fp16 models)."""
    return F.normalize(features.detach().float(), dim=-1).cpu()


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None/'auto': float16 on CUDA, float32 elsewhere; else 'float32', 'float16', 'bfloat16'."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    choices = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
               "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in choices:
        raise ConfigError(f"dtype must be one of auto, {', '.join(choices)}; got {dtype!r}")
    return choices[dtype]


def require_transformers() -> Any:
    """Import transformers or say which extra to install."""
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("CLIP/CLAP spaces need transformers: "
                                     "pip install transformers") from None
    return transformers


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports (a tower loaded from a two-tower checkpoint lists the
    other tower's weights as 'unexpected', which is expected here)."""
    logging = require_transformers().logging
    previous, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(previous)
        if bars:
            logging.enable_progress_bar()


def load_pretrained(loader: Any, name_or_path: str, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained`` with a cmcr error instead of a deep traceback: ConfigError when
    nothing is found, CheckpointError when what is found cannot be used."""
    try:
        with quiet_transformers():
            return loader.from_pretrained(name_or_path, **kwargs)
    except CmcrError:
        raise
    except pickle.UnpicklingError as err:  # weights_only refused it: never load it otherwise
        fault = ("hold Python objects, which cmcr does not unpickle" if holds_python_objects(err)
                 else "are damaged or not written by torch.save")
        raise CheckpointError(f"{files.weights_label(name_or_path, '.bin')}: the .bin weights "
                              f"{fault}; use a model.safetensors checkpoint") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load {what} from '{name_or_path}': {_first_line(err)} (pass a "
                          "local directory, or a hub id that is cached or reachable)") from None
    except Exception as err:  # transformers and torch raise many types for damaged checkpoints
        raise CheckpointError(f"cannot load {what} from '{name_or_path}': "
                              f"{type(err).__name__}: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    """The first non-empty line of an error's message (at most 300 characters)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]


def features_of(output: Any, key: str) -> torch.Tensor:
    """A tower's projected features: a tensor (transformers 4.x ``get_*_features``), or the
    ``key`` / ``pooler_output`` field of an output object (5.x)."""
    if isinstance(output, torch.Tensor):
        return output
    value = getattr(output, key, None)
    return value if value is not None else output.pooler_output


def to_model(inputs: dict[str, torch.Tensor], device: torch.device,
             dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Move a batch to the model: floating tensors take the model's dtype, ids stay integers."""
    return {key: value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype,
                          non_blocking=True)
            for key, value in inputs.items()}


class TransformersSpace(Space):
    """A space backed by a transformers two-tower checkpoint (CLIP, CLAP, ...).

    Subclasses name their classes as data; the config, processor and each tower load lazily
    (``load_space`` reads nothing, ``dim`` reads the config, the first ``embed`` of a modality
    loads only that tower).
    """

    kind: str
    label: str  # "CLIP", "CLAP": used in messages
    config_class: str  # e.g. "CLIPConfig"
    processor_class: str  # e.g. "CLIPProcessor"
    tower_classes: dict[str, tuple[str, str]]  # modality -> (model class, sub-config attribute)

    def __init__(self, name_or_path: str, *, device: str | torch.device | None = "auto",
                 dtype: str | torch.dtype | None = None, name: str | None = None):
        from cmcr.runtime import resolve_device

        self.name_or_path = str(name_or_path)
        self.name = name or f"{self.kind}:{self.name_or_path}"
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self._config: Any = None
        self._processor: Any = None
        self._towers: dict[str, torch.nn.Module] = {}

    @property
    def config(self) -> Any:
        if self._config is None:
            loader = getattr(require_transformers(), self.config_class)
            directory = files.local_directory(self.name_or_path)
            if directory is not None:
                files.check_config_file(directory, [sub for _, sub in self.tower_classes.values()])
            self._config = load_pretrained(loader, self.name_or_path, f"a {self.label} config")
        return self._config

    @property
    def dim(self) -> int:
        return int(self.config.projection_dim)

    @property
    def processor(self) -> Any:
        if self._processor is None:
            loader = getattr(require_transformers(), self.processor_class)
            self._processor = load_pretrained(loader, self.name_or_path,
                                              f"a {self.label} processor")
        return self._processor

    def tower(self, modality: str) -> torch.nn.Module:
        """One tower with its projection, in eval mode on the space's device."""
        modality = self.check_modality(modality)
        if modality not in self._towers:
            class_name, sub_config = self.tower_classes[modality]
            tower_config = getattr(self.config, sub_config)
            tower_config.projection_dim = self.config.projection_dim  # sub-configs may not say it
            directory = files.local_directory(self.name_or_path)
            if directory is not None:
                files.check_weight_files(directory)
            model = load_pretrained(getattr(require_transformers(), class_name), self.name_or_path,
                                    f"the {self.label} {modality} tower", config=tower_config)
            files.check_parameters_finite(model, self.name_or_path)
            self._towers[modality] = model.to(device=self.device, dtype=self.dtype).eval()
        return self._towers[modality]

    def encode(self, modality: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """A collated batch through ``modality``'s tower -> (n, d) float32 CPU unit rows."""
        tower = self.tower(modality)
        with torch.inference_mode():
            output = tower(**to_model(inputs, self.device, self.dtype))
        return unit_rows(features_of(output, f"{modality}_embeds"))
