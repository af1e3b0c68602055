"""Zero-shot prompt templates per dataset: fixed data, written down in docs/eval.md."""

from __future__ import annotations

# CLIP's 7-template ImageNet ensemble (the short list in the CLIP repository's
# "Prompt_Engineering_for_ImageNet" notebook), fixed here for every run.
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

PROMPT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "esc50": ("this is a sound of {}.",),  # LAION-CLAP's ESC-50 zero-shot prompt
    "imagenet": IMAGENET_TEMPLATES,
    "modelnet40": ("a point cloud model of {}.",),  # as in the brief and ULIP's single-prompt form
}
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


def templates_for(dataset: str) -> tuple[str, ...]:
    """The prompt templates of ``dataset`` (CLIP's single default for others)."""
    return PROMPT_TEMPLATES.get(dataset, DEFAULT_TEMPLATES)


def class_prompts(class_names: list[str], templates: tuple[str, ...]) -> list[str]:
    """Prompts class-major: every template of class 0, then of class 1, ..."""
    return [template.format(name) for name in class_names for template in templates]
