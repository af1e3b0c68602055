"""The concepts of the generated world: each one has a look (for images) and a sound (for audio).

Concepts are data, not code: one frozen row each. Every pair of concepts differs in shape or
colour (the rows follow shape = i mod 10, colour = i mod 11) and in timbre, rhythm or pitch, so a
toy CLIP and a toy CLAP can tell them all apart; captions name them by name or synonym.
"""

from __future__ import annotations

from dataclasses import dataclass

from cmcr.errors import CmcrError

SHAPES = ("circle", "square", "triangle", "diamond", "star",
          "ring", "cross", "bar", "hexagon", "crescent")
TEXTURES = ("solid", "striped", "dotted", "checkered")
TIMBRES = ("sine", "square", "saw", "triangle", "harmonic", "bell", "chirp", "noise")
RHYTHMS = ("steady", "pulsed", "tremolo", "rising", "falling", "ticking")

# Saturated colours at least ~80 apart in RGB, so they survive downscaling and never match the
# desaturated mid-grey background clutter.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (250, 140, 20),
    "yellow": (240, 225, 40),
    "green": (40, 170, 60),
    "cyan": (40, 205, 215),
    "blue": (40, 80, 225),
    "purple": (140, 50, 190),
    "pink": (250, 125, 200),
    "brown": (120, 70, 30),
    "white": (248, 248, 248),
    "black": (18, 18, 18),
}

SHAPE_WORDS = {
    "circle": "round", "square": "square", "triangle": "triangular", "diamond": "diamond-shaped",
    "star": "star-shaped", "ring": "ring-shaped", "cross": "cross-shaped", "bar": "long",
    "hexagon": "hexagonal", "crescent": "crescent-shaped",
}
TEXTURE_WORDS = {"solid": "plain", "striped": "striped", "dotted": "dotted",
                 "checkered": "checkered"}


@dataclass(frozen=True)
class Concept:
    """One thing in the world: how it looks, how it sounds and how captions talk about it."""

    name: str
    synonyms: tuple[str, ...]
    shape: str
    colour_name: str
    texture: str
    pitch: float  # Hz; for noise sources the band's geometric centre
    timbre: str
    rhythm: str
    sound_verb: str  # third person, "rings"
    sound_gerund: str  # "ringing"
    noise_band: tuple[float, float] | None = None  # (low, high) Hz for noisy sources
    article: str = "a"  # "a", "an", "the" or "" (mass nouns such as rain)

    @property
    def colour(self) -> tuple[int, int, int]:
        """RGB of the concept's main colour."""
        return COLOURS[self.colour_name]

    @property
    def look_words(self) -> tuple[str, str, str]:
        """(colour word, texture word, shape word) used by look captions."""
        return self.colour_name, TEXTURE_WORDS[self.texture], SHAPE_WORDS[self.shape]

    @property
    def names(self) -> tuple[str, ...]:
        """The name followed by its synonyms: every word a caption may use for the concept."""
        return (self.name, *self.synonyms)

    @property
    def look_signature(self) -> tuple[str, str, str]:
        return self.shape, self.colour_name, self.texture

    @property
    def sound_signature(self) -> tuple[float, str, str]:
        return self.pitch, self.timbre, self.rhythm


C = Concept
CONCEPTS: tuple[Concept, ...] = (
    C("bell", ("chime", "handbell"), "circle", "red", "solid",
      1320, "bell", "ticking", "rings", "ringing"),
    C("dog", ("puppy", "hound"), "square", "orange", "striped",
      420, "harmonic", "pulsed", "barks", "barking"),
    C("drum", ("tom-tom", "snare"), "triangle", "yellow", "dotted",
      122, "noise", "ticking", "booms", "booming", (60, 250)),
    C("bird", ("sparrow", "songbird"), "diamond", "green", "checkered",
      2600, "chirp", "pulsed", "chirps", "chirping"),
    C("car", ("automobile", "sedan"), "star", "cyan", "solid",
      520, "square", "steady", "honks", "honking"),
    C("clock", ("timepiece", "watch"), "ring", "blue", "striped",
      2000, "sine", "ticking", "ticks", "ticking"),
    C("cat", ("kitten", "kitty"), "cross", "purple", "dotted",
      700, "harmonic", "rising", "meows", "meowing"),
    C("cow", ("cattle", "calf"), "bar", "pink", "checkered",
      150, "harmonic", "steady", "moos", "mooing"),
    C("trumpet", ("bugle", "horn"), "hexagon", "brown", "solid",
      600, "saw", "steady", "blares", "blaring"),
    C("phone", ("telephone", "cellphone"), "crescent", "white", "striped",
      1000, "square", "pulsed", "beeps", "beeping"),
    C("siren", ("alarm", "klaxon"), "circle", "black", "dotted",
      1100, "sine", "rising", "wails", "wailing"),
    C("guitar", ("ukulele", "lute"), "square", "red", "checkered",
      330, "harmonic", "ticking", "strums", "strumming"),
    C("piano", ("pianoforte", "keyboard"), "triangle", "orange", "solid",
      520, "triangle", "ticking", "tinkles", "tinkling"),
    C("flute", ("recorder", "piccolo"), "diamond", "yellow", "striped",
      1600, "sine", "tremolo", "toots", "tooting"),
    C("frog", ("toad", "bullfrog"), "star", "green", "dotted",
      250, "square", "pulsed", "croaks", "croaking"),
    C("bee", ("wasp", "hornet"), "ring", "cyan", "checkered",
      220, "saw", "tremolo", "buzzes", "buzzing"),
    C("owl", ("hooter", "tawny"), "cross", "blue", "solid",
      380, "sine", "pulsed", "hoots", "hooting", None, "an"),
    C("duck", ("mallard", "duckling"), "bar", "purple", "striped",
      480, "saw", "pulsed", "quacks", "quacking"),
    C("sheep", ("lamb", "ewe"), "hexagon", "pink", "dotted",
      300, "harmonic", "tremolo", "bleats", "bleating"),
    C("train", ("locomotive", "railcar"), "crescent", "brown", "checkered",
      300, "noise", "pulsed", "chugs", "chugging", (150, 600)),
    C("kettle", ("teapot", "boiler"), "circle", "white", "solid",
      2200, "sine", "steady", "whistles", "whistling"),
    C("hammer", ("mallet", "gavel"), "square", "black", "striped",
      1095, "noise", "pulsed", "bangs", "banging", (600, 2000)),
    C("drill", ("borer", "screwdriver"), "triangle", "red", "dotted",
      1200, "square", "tremolo", "whines", "whining"),
    C("fan", ("ventilator", "blower"), "diamond", "orange", "checkered",
      224, "noise", "steady", "hums", "humming", (100, 500)),
    C("rain", ("drizzle", "downpour"), "star", "yellow", "solid",
      3742, "noise", "steady", "patters", "pattering", (2000, 7000), ""),
    C("wind", ("gale", "breeze"), "ring", "green", "striped",
      424, "noise", "tremolo", "howls", "howling", (200, 900), "the"),
    C("fire", ("flame", "bonfire"), "cross", "cyan", "dotted",
      1549, "noise", "ticking", "crackles", "crackling", (800, 3000)),
    C("horse", ("pony", "stallion"), "bar", "blue", "checkered",
      500, "harmonic", "falling", "neighs", "neighing"),
    C("rooster", ("cockerel", "chicken"), "hexagon", "purple", "solid",
      800, "saw", "falling", "crows", "crowing"),
    C("helicopter", ("chopper", "copter"), "crescent", "pink", "striped",
      75, "harmonic", "pulsed", "whirs", "whirring"),
    C("cricket", ("grasshopper", "cicada"), "circle", "brown", "dotted",
      3500, "chirp", "tremolo", "trills", "trilling"),
    C("sea", ("ocean", "surf"), "square", "white", "checkered",
      346, "noise", "rising", "roars", "roaring", (100, 1200), "the"),
)
del C


def concept_by_name(name: str) -> Concept:
    """The concept called ``name`` (its name, not a synonym)."""
    for concept in CONCEPTS:
        if concept.name == name:
            return concept
    known = ", ".join(c.name for c in CONCEPTS)
    raise CmcrError(f"unknown world concept {name!r}; known concepts: {known}")
