"""The lists shipped in ``cmcr/eval/data/`` (each with its source and licence; see its README)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from cmcr.errors import ConfigError


def shipped(name: str) -> dict[str, Any]:
    """The parsed JSON file ``cmcr/eval/data/<name>.json``."""
    path = resources.files("cmcr.eval").joinpath("data", f"{name}.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cmcr's shipped list {name}.json is missing or damaged ({err}); "
                          "reinstall cmcr") from None


def imagenet_class_names() -> dict[str, str]:
    """synset id -> CLIP's curated class name (with the two de-duplicating edits applied)."""
    data = shipped("imagenet_clip")
    names = list(data["classnames"])
    for index, name in data["edits"].items():
        names[int(index)] = name
    return dict(zip(data["wnids"], names))


def flickr_test_ids(protocol: str) -> list[str]:
    """The Flickr-SoundNet test ids of ``protocol`` ('lvs': 249, 'slavc': 250)."""
    return list(shipped("flickr_soundnet_test")[protocol]["ids"])
