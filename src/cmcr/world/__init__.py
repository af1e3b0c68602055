"""The built-in generated world: concepts with a look and a sound, rendered offline.

``generate_world(dir)`` writes images, audio clips and captions for every C-MCR split (toy CLIP
and CLAP training, the shared text modality, unpaired memories and held-out audio-visual tests);
``load_world(dir)`` reads them back.
"""

from cmcr.world.captions import look_caption, sound_caption
from cmcr.world.concepts import CONCEPTS, Concept, concept_by_name
from cmcr.world.generate import (SPLIT_NAMES, WorldManifest, WorldSizes, generate_world,
                                 load_world)
from cmcr.world.render import render_audio, render_image

__all__ = [
    "CONCEPTS",
    "Concept",
    "concept_by_name",
    "look_caption",
    "sound_caption",
    "render_image",
    "render_audio",
    "SPLIT_NAMES",
    "WorldSizes",
    "WorldManifest",
    "generate_world",
    "load_world",
]
