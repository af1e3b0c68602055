"""argparse value types that refuse out-of-range numbers with the option's allowed range."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer option in [low, high]; argparse reports the option, the value and the range."""
    allowed = f">= {low}" if high is None else f"in [{low}, {high}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number {allowed}, got {text!r}")
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def number(low: float, high: float | None = None, *, low_open: bool = False) -> Callable[[str], float]:
    """A finite float option in [low, high] ((low, high] with ``low_open``)."""
    allowed = (f"{'>' if low_open else '>='} {low:g}" if high is None
               else f"in {'(' if low_open else '['}{low:g}, {high:g}]")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {allowed}, got {text!r}")
        below = value <= low if low_open else value < low
        if not math.isfinite(value) or below or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


SEED = whole(0, 2**32 - 1)
POSITIVE = whole(1)
COUNT = whole(0)
WORLD_SCALE = number(0.1, 10.0)  # below 0.1 the test split has too few pairs to rank
