"""The concepts of the generated world: each one has a look (for images) and a sound (for audio).

The first 32 are written by hand (bell, dog, drum, ...); the rest, up to ``CONCEPT_COUNT``, are
generated from a fixed seed with made-up names and one synonym each ("refa" or "rizamu") so a batch of thousands of captions
holds few same-meaning pairs, as real caption corpora do. Concept ``i`` looks like
(shape i mod 10, colour i mod 11, texture i mod 4): every look is distinct for i < 220. Sounds
differ in timbre, rhythm or pitch (same timbre and rhythm: pitches more than 1.25x apart), so a toy
CLIP and a toy CLAP can tell them apart; captions name them by name or synonym.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
HAND_MADE = len(CONCEPTS)
CONCEPT_COUNT = 128  # < 220, so every (shape, colour, texture) look stays distinct
NAME_SEED = 20231  # the made-up names and the generated sounds come from this seed alone
PITCHES = (160.0, 280.0, 490.0, 860.0, 1500.0, 2600.0)  # Hz; generated sounds pick from these
MIN_PITCH_RATIO = 1.25
ONSETS = "b d f g k l m n p r s t v z".split()
VOWELS = "a e i o u".split()


def _made_up_words(count: int, taken: set[str], rng: np.random.Generator) -> list[str]:
    """``count`` distinct pronounceable words of 2-3 syllables, none of them in ``taken``."""
    words: list[str] = []
    while len(words) < count:
        syllables = int(rng.integers(2, 4))
        word = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables))
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


def _free_pitch(timbre: str, rhythm: str, start: int, made: list[Concept]) -> float:
    """The first pitch of ``PITCHES`` (from ``start``, cycling) no concept with the same timbre
    and rhythm sits within ``MIN_PITCH_RATIO`` of."""
    used = [c.pitch for c in made if (c.timbre, c.rhythm) == (timbre, rhythm)]
    for step in range(len(PITCHES)):
        pitch = PITCHES[(start + step) % len(PITCHES)]
        if all(max(pitch, u) / min(pitch, u) > MIN_PITCH_RATIO for u in used):
            return pitch
    raise CmcrError(f"no free pitch left for a {rhythm} {timbre} sound; lower CONCEPT_COUNT")


def _generated_concept(index: int, name: str, synonyms: tuple[str, ...],
                       made: list[Concept]) -> Concept:
    """Concept ``index`` (>= HAND_MADE): look from the index, sound from the free (timbre,
    rhythm, pitch) cells, verbs borrowed from the hand-made concepts."""
    j = index - HAND_MADE
    timbre, rhythm = TIMBRES[j % len(TIMBRES)], RHYTHMS[(j // len(TIMBRES)) % len(RHYTHMS)]
    pitch = _free_pitch(timbre, rhythm, j // (len(TIMBRES) * len(RHYTHMS)), made)
    band = (round(pitch / 1.6), round(pitch * 1.6)) if timbre == "noise" else None
    verbs = made[j % HAND_MADE]
    return Concept(name, synonyms, SHAPES[index % len(SHAPES)], tuple(COLOURS)[index % len(COLOURS)],
                   TEXTURES[index % len(TEXTURES)], pitch, timbre, rhythm, verbs.sound_verb,
                   verbs.sound_gerund, band)


def _with_generated(hand_made: tuple[Concept, ...], count: int) -> tuple[Concept, ...]:
    rng = np.random.default_rng(NAME_SEED)
    taken = {word for c in hand_made for word in c.names}
    words = _made_up_words(2 * (count - len(hand_made)), taken, rng)
    made = list(hand_made)
    for index in range(len(hand_made), count):
        name, synonym = words[2 * (index - len(hand_made)):2 * (index - len(hand_made)) + 2]
        made.append(_generated_concept(index, name, (synonym,), made))
    return tuple(made)


CONCEPTS = _with_generated(CONCEPTS, CONCEPT_COUNT)


def concept_by_name(name: str) -> Concept:
    """The concept called ``name`` (its name, not a synonym)."""
    for concept in CONCEPTS:
        if concept.name == name:
            return concept
    known = ", ".join(c.name for c in CONCEPTS)
    raise CmcrError(f"unknown world concept {name!r}; known concepts: {known}")
