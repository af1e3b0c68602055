"""Zero-shot prompt templates: fixed data, chosen by protocol (docs/eval.md names each source)."""

from __future__ import annotations

from cmcr.errors import ConfigError
from cmcr.eval.protocols import PROTOCOLS, resolve_protocol
from cmcr.eval.shipped import shipped

# template set name -> where its templates come from
TEMPLATE_SOURCES: dict[str, str] = {
    "esc50-laion": "LAION-AI/CLAP experiment_scripts/esc50_api.py: 'This is a sound of ' + class",
    "esc50": "cmcr's single ESC-50 prompt",
    "modelnet40-ulip": "salesforce/ULIP data/templates.json 'modelnet40_64' (shipped)",
    "modelnet40": "ULIP's single-prompt form, the first of modelnet40_64",
    "imagenet-7": "openai/CLIP Prompt_Engineering_for_ImageNet.ipynb, the 7-template subset (shipped)",
    "imagenet-80": "openai/CLIP Prompt_Engineering_for_ImageNet.ipynb, all 80 templates (shipped)",
    "default": "CLIP's single default prompt",
}


def template_set(name: str) -> tuple[str, ...]:
    """The templates of set ``name`` (a key of :data:`TEMPLATE_SOURCES`)."""
    fixed = {"esc50-laion": ("This is a sound of {}",), "esc50": ("this is a sound of {}.",),
             "modelnet40": ("a point cloud model of {}.",), "default": ("a photo of a {}.",)}
    if name in fixed:
        return fixed[name]
    if name == "modelnet40-ulip":
        return tuple(shipped("modelnet40_ulip")["templates_64"])
    if name in ("imagenet-7", "imagenet-80"):
        return tuple(shipped("imagenet_clip")["templates_" + name.split("-")[1]])
    raise ConfigError(f"unknown template set '{name}'; known: {', '.join(TEMPLATE_SOURCES)}")


def templates_for(dataset: str, protocol: str | None = None) -> tuple[str, ...]:
    """The prompt templates of ``dataset`` under ``protocol`` (its default protocol when None;
    CLIP's single default prompt for a dataset without a template set)."""
    if dataset not in PROTOCOLS:
        return template_set("default")
    chosen = resolve_protocol(dataset, protocol)
    return template_set(chosen.templates or "default")


def class_prompts(class_names: list[str], templates: tuple[str, ...]) -> list[str]:
    """Prompts class-major: every template of class 0, then of class 1, ..."""
    return [template.format(name) for name in class_names for template in templates]
