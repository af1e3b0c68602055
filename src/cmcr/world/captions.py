"""Captions in two styles: how things look (for the toy CLIP) and how they sound (toy CLAP).

Every caption names each concept it describes by its name or a synonym; the rest is varied
wording and distractor words, all chosen by the caller's ``numpy.random.Generator``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cmcr.world.concepts import Concept

Box = tuple[int, int, int, int]

LOOK_PREFIXES = ("", "", "a photo of ", "a picture of ", "an image of ", "there is ",
                 "a drawing of ")
LOOK_SUFFIXES = ("", "", "", " in the picture", " on a grey background", " in the scene")
LOOK_DISTRACTORS = ("small", "big", "old", "little", "shiny", "new")
SOUND_PREFIXES = ("", "", "", "in this recording ", "outside, ")
SOUND_HEADS = ("the sound of ", "sound of ", "recording of ", "audio of ", "we hear ",
               "you can hear ")
SOUND_ADVERBS = ("", "", "", " loudly", " softly", " in the distance", " nearby", " outside",
                 " repeatedly")


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _word(concept: Concept, rng: np.random.Generator) -> str:
    """The concept's name (half the time) or one of its synonyms."""
    if rng.uniform() < 0.5:
        return concept.name
    return _pick(rng, concept.synonyms)


def _with_article(article: str, phrase: str) -> str:
    if article in ("a", "an"):
        article = "an" if phrase[0] in "aeiou" else "a"
    return f"{article} {phrase}".strip()


def _look_phrase(concept: Concept, rng: np.random.Generator) -> str:
    """'a small red striped bell': some look words, maybe a distractor, then the noun."""
    colour, texture, shape = concept.look_words
    words = [w for w, p in ((_pick(rng, LOOK_DISTRACTORS), 0.2), (colour, 0.75),
                            (texture, 0.5 if concept.texture != "solid" else 0.15),
                            (shape, 0.35)) if rng.uniform() < p]
    return _with_article("a", " ".join([*words, _word(concept, rng)]))


def _relation(first: Box | None, second: Box | None, rng: np.random.Generator) -> str:
    """A spatial word true for the two boxes (or a neutral one without boxes)."""
    if first is None or second is None or rng.uniform() < 0.4:
        return _pick(rng, ("next to", "and", "with", "near"))
    dx = (first[0] + first[2]) - (second[0] + second[2])
    dy = (first[1] + first[3]) - (second[1] + second[3])
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def look_caption(concepts: Sequence[Concept], rng: np.random.Generator,
                 boxes: Sequence[Box] | None = None) -> str:
    """Describe how ``concepts`` look, e.g. 'a photo of a red striped bell next to a small dog'.

    With ``boxes`` (one per concept), spatial words such as 'to the left of' are true.
    """
    phrases = [_look_phrase(c, rng) for c in concepts]
    text = phrases[0]
    for index in range(1, len(phrases)):
        first = boxes[index - 1] if boxes is not None else None
        second = boxes[index] if boxes is not None else None
        text += f" {_relation(first, second, rng)} {phrases[index]}"
    return f"{_pick(rng, LOOK_PREFIXES)}{text}{_pick(rng, LOOK_SUFFIXES)}"


def _subject(concept: Concept, rng: np.random.Generator) -> str:
    return _with_article(concept.article, _word(concept, rng))


def sound_caption(concepts: Sequence[Concept], rng: np.random.Generator) -> str:
    """Describe how ``concepts`` sound, e.g. 'a bell rings while a dog barks'."""
    if rng.uniform() < 0.5:  # verb style: "a dog barks loudly"
        clauses = [f"{_subject(c, rng)} {c.sound_verb}{_pick(rng, SOUND_ADVERBS)}"
                   for c in concepts]
        joiner = _pick(rng, (" while ", " and ", " as "))
        return _pick(rng, SOUND_PREFIXES) + joiner.join(clauses)
    clauses = [f"{_subject(c, rng)} {c.sound_gerund}{_pick(rng, SOUND_ADVERBS)}"
               for c in concepts]  # noun style: "the sound of a puppy barking"
    head = _pick(rng, SOUND_HEADS)
    return head + " and ".join(clauses)
