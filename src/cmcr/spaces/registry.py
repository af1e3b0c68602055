"""Space names -> space objects. ``kind:name_or_path``, e.g. ``clip:openai/clip-vit-base-patch32``.

Adding a kind is one entry in :data:`SPACE_KINDS` (or :func:`register_space_kind`); short names for
well-known checkpoints are entries in :data:`SPACE_ALIASES`. Nothing heavy is imported until a
space is loaded, and a space loads its towers only when a call needs them. A kind whose target
is more than one path (open_clip's ``ARCH:WEIGHTS``) says what stores record and which file its
weights are through the classmethods ``portable_target`` and ``local_weights``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from cmcr.data.atomic import file_sha256
from cmcr.errors import ConfigError
from cmcr.spaces.base import Space

# kind -> "module:Class"
SPACE_KINDS: dict[str, str] = {
    "clip": "cmcr.spaces.clip:ClipSpace",
    "clap": "cmcr.spaces.clap:ClapSpace",
    "open_clip": "cmcr.spaces.openclip:OpenClipSpace",
    "precomputed": "cmcr.spaces.stored:StoredSpace",
}

# short name -> full spec: the encoders the released C-MCR checkpoints were trained on (see docs),
# and the built-in world's toy spaces, shipped inside cmcr ("{package}": the installed package)
SPACE_ALIASES: dict[str, str] = {
    "clip-vit-b32": "clip:openai/clip-vit-base-patch32",
    "clap-htsat-fused": "clap:laion/clap-htsat-fused",
    "clap-htsat-unfused": "clap:laion/clap-htsat-unfused",
    "clip:toy": "clip:{package}/world/weights/toy-clip",
    "clap:toy": "clap:{package}/world/weights/toy-clap",
}
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def register_space_kind(kind: str, target: str | type[Space]) -> None:
    """Add a kind: ``target`` is a Space subclass or "module:Class" (imported when first used)."""
    SPACE_KINDS[kind] = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


def parse_space_spec(spec: str) -> tuple[str, str]:
    """``"kind:name_or_path"`` (or an alias) -> (kind, name_or_path)."""
    spec = SPACE_ALIASES.get(spec, spec).replace("{package}", str(PACKAGE_DIR))
    kind, sep, target = spec.partition(":")
    if not sep or not target or kind not in SPACE_KINDS:
        raise ConfigError(f"space '{spec}' must be KIND:NAME_OR_PATH with KIND one of "
                          f"{', '.join(SPACE_KINDS)} (e.g. clip:openai/clip-vit-base-patch32), "
                          f"or an alias: {', '.join(SPACE_ALIASES)}")
    return kind, target


def space_class(kind: str) -> type[Space]:
    module_name, _, class_name = SPACE_KINDS[kind].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def load_space(spec: str, **options: Any) -> Space:
    """A space from its spec; ``options`` (device, dtype, ...) go to the space's constructor.

    Cheap: weights are read only when a modality is first embedded. Its ``name`` is the spec
    as given (``clip:toy``, ``clip:openai/clip-vit-base-patch32``), a local folder made
    absolute: what stores record, so they move with a project and load anywhere cmcr does.
    """
    from cmcr.runtime.threads import apply_thread_policy

    apply_thread_policy()  # cmcr's thread choice unless the caller made one (cmcr.runtime.threads)
    kind, target = parse_space_spec(spec)
    return space_class(kind)(target, name=portable_name(spec, kind, target), **options)


def portable_name(spec: str, kind: str, target: str) -> str:
    """An alias or a hub name as given; a local folder or file as its absolute path."""
    if spec in SPACE_ALIASES:
        return spec
    portable_target = getattr(space_class(kind), "portable_target", None)
    if portable_target is not None:  # a kind whose target is more than a path (open_clip)
        return f"{kind}:{portable_target(target)}"
    local = Path(target).expanduser()
    return f"{kind}:{local.resolve()}" if local.exists() else f"{kind}:{target}"


WEIGHTS_FILE = "model.safetensors"


def weights_sha256(spec: str) -> str | None:
    """The sha256 of a space's weights when they are on this machine (a folder with
    model.safetensors, a weights file, or the Hugging Face cache; never downloaded), else None."""
    try:
        kind, target = parse_space_spec(spec)
    except ConfigError:
        return None
    local_weights = getattr(space_class(kind), "local_weights", None)
    if local_weights is not None:  # a kind whose target is more than a path (open_clip)
        return _sha256_or_none(local_weights(target))
    local = Path(target).expanduser()
    if local.is_dir():
        return _sha256_or_none(local / WEIGHTS_FILE)
    if local.is_file():
        return _sha256_or_none(local)
    return _sha256_or_none(_hub_cached_weights(target))


def _hub_cached_weights(repo: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, WEIGHTS_FILE)
    except Exception:  # not installed, or not a repo id: the sha256 stays unknown
        return None
    return Path(found) if isinstance(found, str) else None


def _sha256_or_none(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return file_sha256(path)
    except OSError:
        return None
