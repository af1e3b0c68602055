"""Render concepts into pixels and samples: cluttered images with boxes, mixed audio clips.

Everything is vectorised numpy driven by the caller's ``numpy.random.Generator``, so one item's
output depends only on that generator (and generation is fast enough for thousands of items).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import signal

from cmcr.errors import CmcrError
from cmcr.world.concepts import Concept

Box = tuple[int, int, int, int]
_SUPERSAMPLE = 3  # anti-aliasing: shapes are drawn on a 3x finer grid and averaged
_MIN_OBJECT, _MAX_OBJECT = 14 / 64, 30 / 64  # object side as a fraction of the image side


# ----------------------------------------------------------------------------- images
def _shape_masks() -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Shape name -> inside(u, v) on coordinates in [-1, 1] (v grows downwards)."""

    def star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        radius, angle = np.hypot(u, v), np.arctan2(u, -v)  # angle 0 points up
        tip = np.abs(((angle * 5 / (2 * np.pi)) % 1.0) - 0.5) * 2  # 1 at tips, 0 between
        return radius <= 0.42 + 0.56 * tip ** 1.5

    return {
        "circle": lambda u, v: u * u + v * v <= 0.95 ** 2,
        "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.85,
        "triangle": lambda u, v: (v <= 0.85) & (np.abs(u) <= (v + 0.95) * 0.53),
        "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 0.98,
        "star": star,
        "ring": lambda u, v: (u * u + v * v <= 0.97 ** 2) & (u * u + v * v >= 0.5 ** 2),
        "cross": lambda u, v: ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95))
        | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95)),
        "bar": lambda u, v: (np.abs(u) <= 0.97) & (np.abs(v) <= 0.4),
        "hexagon": lambda u, v: (np.abs(v) <= 0.84) & (np.abs(u) * 0.866 + np.abs(v) * 0.5 <= 0.84),
        "crescent": lambda u, v: (u * u + v * v <= 0.95 ** 2)
        & ((u - 0.42) ** 2 + (v + 0.12) ** 2 >= 0.72 ** 2),
    }


@lru_cache(maxsize=None)
def _alpha(shape: str, side: int) -> np.ndarray:
    """(side, side) float32 coverage in [0, 1] of ``shape`` drawn in a side x side square."""
    fine = side * _SUPERSAMPLE
    axis = (np.arange(fine) + 0.5) / fine * 2 - 1
    inside = _shape_masks()[shape](axis[None, :], axis[:, None]).astype(np.float32)
    return inside.reshape(side, _SUPERSAMPLE, side, _SUPERSAMPLE).mean(axis=(1, 3))


def _texture(texture: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """(side, side) bool: True where the texture's second colour shows."""
    period = max(3, round(side / 4))
    y, x = np.mgrid[0:side, 0:side] + rng.integers(0, period, size=2)[:, None, None]
    if texture == "striped":
        return ((x + y) % period) < period / 2
    if texture == "dotted":
        centre = (period - 1) / 2
        return (x % period - centre) ** 2 + (y % period - centre) ** 2 <= (period / 3.2) ** 2
    if texture == "checkered":
        return ((x // period) + (y // period)) % 2 == 1
    return np.zeros((side, side), dtype=bool)


def _second_colour(colour: np.ndarray) -> np.ndarray:
    """Texture colour: a dark shade of a light colour, a light tint of a dark one (same hue)."""
    if colour.mean() > 90:
        return colour * 0.45
    return colour + (255 - colour) * 0.45


def _object_pixels(concept: Concept, side: int, rng: np.random.Generator) -> np.ndarray:
    """(side, side, 3) float32 RGB of the concept's look, colour jittered slightly."""
    colour = np.clip(np.array(concept.colour, np.float32) + rng.uniform(-10, 10, 3), 0, 255)
    pattern = _texture(concept.texture, side, rng)
    return np.where(pattern[..., None], _second_colour(colour), colour).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 clutter: desaturated mid-grey blobs, lines and noise, low contrast.

    Saturation stays low and luminance mid-range, so clutter never matches a concept's colour.
    """
    base = rng.uniform(95, 165) + rng.uniform(-10, 10, 3)
    image = Image.new("RGB", (size, size), tuple(int(c) for c in base))
    draw = ImageDraw.Draw(image)

    def tone() -> tuple[int, ...]:
        return tuple(int(c) for c in base + rng.uniform(-24, 24) + rng.uniform(-5, 5, 3))

    for _ in range(int(rng.integers(3, 8))):
        x, y = rng.uniform(-0.2, 1.0, 2) * size
        w, h = rng.uniform(0.1, 0.5, 2) * size
        draw.ellipse((x, y, x + w, y + h), fill=tone())
    for _ in range(int(rng.integers(2, 6))):
        x0, y0, x1, y1 = rng.uniform(0, 1, 4) * size
        draw.line((x0, y0, x1, y1), fill=tone(), width=int(rng.integers(1, 3)))
    pixels = np.asarray(image, dtype=np.float32)
    coarse = Image.fromarray(rng.normal(0, 8, (4, 4)).astype(np.float32), "F")
    shading = np.asarray(coarse.resize((size, size), Image.Resampling.BILINEAR))[..., None]
    return pixels + shading + rng.normal(0, 4, (size, size, 1)).astype(np.float32)


def _place(rng: np.random.Generator, sides: list[int], size: int) -> list[tuple[int, int]] | None:
    """Top-left corners for squares of ``sides`` that do not overlap (one 1-px gap), or None."""
    corners: list[tuple[int, int]] = []
    for side in sides:
        for _ in range(30):
            x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
            if all(x + side < cx or cx + cs < x or y + side < cy or cy + cs < y
                   for (cx, cy), cs in zip(corners, sides)):
                corners.append((x, y))
                break
        else:
            return None
    return corners


def render_image(objects: Sequence[Concept], rng: np.random.Generator,
                 size: int = 64) -> tuple[Image.Image, list[Box]]:
    """A cluttered RGB image of ``objects`` (1-3 concepts) at random places and scales.

    Returns the image and one tight box per object, in order: (x0, y0, x1, y1) pixels, x1 and y1
    exclusive. Objects never overlap, so each box covers its own object's pixels only.
    """
    pixels = _background(rng, size)
    low, high = max(4, round(size * _MIN_OBJECT)), max(5, round(size * _MAX_OBJECT))
    for _ in range(100):
        sides = [int(s) for s in rng.integers(low, high + 1, len(objects))]
        corners = _place(rng, sides, size)
        if corners is not None:
            break
        high = max(low, high - 2)  # crowded: shrink until the objects fit
    else:
        raise CmcrError(f"cannot fit {len(objects)} objects in a {size}x{size} image; "
                        f"use a larger image size (64 is the default)")
    boxes = []
    for concept, side, (x, y) in zip(objects, sides, corners):
        alpha = _alpha(concept.shape, side)[..., None]
        region = pixels[y:y + side, x:x + side]
        region[:] = alpha * _object_pixels(concept, side, rng) + (1 - alpha) * region
        rows, cols = np.nonzero(alpha[..., 0] >= 0.5)
        boxes.append((x + int(cols.min()), y + int(rows.min()),
                      x + int(cols.max()) + 1, y + int(rows.max()) + 1))
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB"), boxes


# ----------------------------------------------------------------------------- audio
_GLIDE_PERIOD = 0.6  # seconds per up (rising) or down (falling) glide
_PULSE_RATE, _TREMOLO_RATE, _TICK_RATE = 4.0, 7.0, 5.0  # Hz


def _frequency(concept: Concept, pitch: float, t: np.ndarray) -> np.ndarray:
    """Instantaneous frequency (Hz) over time ``t``: rhythm glides and chirp sweeps."""
    octaves = np.zeros_like(t)
    if concept.rhythm == "rising":
        octaves += (t / _GLIDE_PERIOD) % 1.0 - 0.5
    elif concept.rhythm == "falling":
        octaves += 0.5 - (t / _GLIDE_PERIOD) % 1.0
    if concept.timbre == "chirp":
        octaves += 0.6 * ((t * 12.0) % 1.0)  # fast upward sweeps, 12 per second
    return pitch * np.exp2(octaves)


def _tone(timbre: str, phase: np.ndarray) -> np.ndarray:
    """Waveform in [-1, 1] of a periodic timbre at ``phase`` (cycles)."""
    cycle = (phase % 1.0).astype(np.float32)
    angle = np.float32(2 * np.pi) * cycle
    if timbre == "square":
        return np.tanh(4 * np.sin(angle))
    if timbre == "saw":
        return 2 * cycle - 1
    if timbre == "triangle":
        return 2 * np.abs(2 * cycle - 1) - 1
    if timbre == "harmonic":  # partials 1..5 at 1/k, by sin(kx) = 2cos(x)sin((k-1)x) - sin((k-2)x)
        twice_cos, previous, current = 2 * np.cos(angle), np.zeros_like(angle), np.sin(angle)
        total = current.copy()
        for k in range(2, 6):
            previous, current = current, twice_cos * current - previous
            total += current / k
        return total / 1.8
    if timbre == "bell":  # inharmonic partials, as a struck bell has
        partials = [np.sin(np.float32(2 * np.pi) * ((phase * ratio) % 1.0).astype(np.float32))
                    for ratio in (2.76, 5.4)]
        return (np.sin(angle) + 0.6 * partials[0] + 0.4 * partials[1]) / 2.0
    return np.sin(angle)  # sine, chirp


@lru_cache(maxsize=None)
def _band_filter(low: float, high: float, sample_rate: int) -> np.ndarray:
    """Second-order sections of a 4th-order Butterworth band-pass, kept below Nyquist."""
    nyquist = sample_rate / 2
    high = min(high, 0.9 * nyquist)
    low = min(low, 0.5 * high)
    return signal.butter(4, [low / nyquist, high / nyquist], btype="band", output="sos")


def _envelope(rhythm: str, t: np.ndarray, noisy: bool) -> np.ndarray:
    """Amplitude envelope in [0, 1] of a rhythm (noise has no pitch, so it glides in loudness)."""
    if rhythm == "pulsed":
        return np.clip(np.sin(2 * np.pi * _PULSE_RATE * t) * 4 + 0.5, 0, 1)
    if rhythm == "tremolo":
        return 0.55 + 0.45 * np.sin(2 * np.pi * _TREMOLO_RATE * t)
    if rhythm == "ticking":
        return np.exp(-((t * _TICK_RATE) % 1.0) / _TICK_RATE / 0.05)
    if noisy and rhythm in ("rising", "falling"):
        ramp = (t / _GLIDE_PERIOD) % 1.0
        return 0.15 + 0.85 * (ramp if rhythm == "rising" else 1 - ramp)
    return np.ones_like(t)


_POOL_SECONDS = 20  # noise is cut from fixed 20 s recordings at random offsets (fast)


@lru_cache(maxsize=None)
def _noise_pool(kind: str | tuple[float, float], sample_rate: int) -> np.ndarray:
    """A fixed, unit-peak float32 noise recording: "pink", "brown" or a (low, high) Hz band.

    Cached pure function of its arguments (its generator has a constant seed), so clips that
    slice it stay deterministic in their own generator.
    """
    n = _POOL_SECONDS * sample_rate
    white = np.random.default_rng(list(str(kind).encode())).standard_normal(n)
    if kind == "brown":  # leaky integrator
        noise = signal.lfilter([1.0], [1.0, -0.995], white)
    elif kind == "pink":  # 3-pole approximation of a 1/f spectrum
        noise = signal.lfilter([0.049922, -0.095993, 0.050612, -0.004409],
                               [1.0, -2.494956, 2.017265, -0.522189], white)
    else:
        noise = signal.sosfilt(_band_filter(*kind, sample_rate), white)
    noise -= noise.mean()
    return (noise / np.abs(noise).max()).astype(np.float32)


def _noise(kind: str | tuple[float, float], rng: np.random.Generator, n: int,
           sample_rate: int) -> np.ndarray:
    """(n,) float32 noise of ``kind`` from a random offset (and sign) of its pool."""
    pool = _noise_pool(kind, sample_rate)
    if n > len(pool):
        pool = np.tile(pool, -(-n // len(pool)))
    start = int(rng.integers(0, len(pool) - n + 1))
    return pool[start:start + n] * np.float32(rng.choice((-1.0, 1.0)))


def synthesize(concept: Concept, rng: np.random.Generator, n: int,
               sample_rate: int) -> np.ndarray:
    """(n,) float32 of one source with peak ~1: the concept's sound with a small pitch jitter."""
    t = np.arange(n, dtype=np.float32) / np.float32(sample_rate)
    if concept.timbre == "noise":
        wave = _noise(tuple(concept.noise_band), rng, n, sample_rate)
    else:
        pitch = concept.pitch * float(np.exp2(rng.uniform(-0.04, 0.04)))
        phase = np.cumsum(_frequency(concept, pitch, t), dtype=np.float64) / sample_rate
        wave = _tone(concept.timbre, phase + rng.uniform())
    fade = np.minimum(np.float32(1), np.minimum(t, t[::-1]) / np.float32(0.01))
    envelope = _envelope(concept.rhythm, t, concept.timbre == "noise")
    return (wave * envelope * fade).astype(np.float32)


def render_audio(sources: Sequence[Concept], rng: np.random.Generator, seconds: float,
                 sample_rate: int = 16000) -> tuple[np.ndarray, list[dict]]:
    """A (round(seconds * sample_rate),) float32 mono clip mixing ``sources`` over noise.

    Each source sounds for 50-100% of the clip at a random gain; the returned dicts give its
    ``concept`` name, ``start``/``end`` seconds and ``gain``. The mix is peak-normalised to <= 0.9.
    """
    n = max(1, round(seconds * sample_rate))
    mix = np.zeros(n, np.float32)
    records = []
    for index, concept in enumerate(sources):
        length = max(1, round(n * rng.uniform(0.5, 1.0)))
        start = int(rng.integers(0, n - length + 1))
        gain = float(rng.uniform(0.6, 1.0) if index == 0 else rng.uniform(0.35, 0.8))
        mix[start:start + length] += gain * synthesize(concept, rng, length, sample_rate)
        records.append({"concept": concept.name, "start": round(start / sample_rate, 4),
                        "end": round((start + length) / sample_rate, 4), "gain": round(gain, 4)})
    background = "pink" if rng.uniform() < 0.5 else "brown"
    mix += np.float32(rng.uniform(0.02, 0.08)) * _noise(background, rng, n, sample_rate)
    peak = max(float(np.abs(mix).max()), 1e-6)
    return (mix * (float(rng.uniform(0.5, 0.9)) / peak)).astype(np.float32), records
