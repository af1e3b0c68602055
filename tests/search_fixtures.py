"""A real search stack for the index, API and browser tests: generated images, sounds and
captions embedded by `cmcr embed` with the tiny CLIP/CLAP, a connected model, `cmcr index build`,
and `cmcr serve` running as its own process on 127.0.0.1. Registered as a pytest plugin."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from cmcr.cli import main
from cmcr.config import ModelConfig, ProjectorConfig, SpaceSpec
from cmcr.method.model import ConnectedModel

COLOURS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (240, 200, 30), (150, 60, 190),
           (30, 190, 200), (250, 130, 20), (90, 90, 90)]
CAPTIONS = ["a red square", "a green field", "a blue sky", "a yellow sun", "a dog barking",
            "a bell ringing", "rain on a roof", "a siren passing"]


def write_media(root: Path) -> tuple[Path, Path]:
    """Eight PNG/JPEG pictures and eight WAV tones (16 kHz, 1 s)."""
    images, sounds = root / "images", root / "sounds"
    images.mkdir(parents=True)
    sounds.mkdir(parents=True)
    for number, colour in enumerate(COLOURS):
        pixels = np.zeros((48, 48, 3), dtype=np.uint8)
        pixels[:, :] = colour
        pixels[8 + number * 4:20 + number * 4, 10:30] = 255 - np.array(colour)
        suffix = "png" if number % 2 else "jpg"
        Image.fromarray(pixels).save(images / f"picture-{number}.{suffix}")
        seconds = np.arange(16000) / 16000
        tone = 0.3 * np.sin(2 * np.pi * (220 + 110 * number) * seconds)
        soundfile.write(sounds / f"sound-{number}.wav", tone.astype(np.float32), 16000)
    return images, sounds


def build_joint_model(directory: Path, dim: int = 16, out_dim: int = 8) -> Path:
    torch.manual_seed(0)
    projector = ProjectorConfig(hidden=32, out_dim=out_dim, layers=2)
    config = ModelConfig(spaces={"clip": SpaceSpec(["image", "text"], dim),
                                 "clap": SpaceSpec(["audio", "text"], dim)},
                         projectors={"clip": projector, "clap": projector},
                         shared_modality="text", shared_modality_space="clip")
    return ConnectedModel(config).save_pretrained(directory)


@pytest.fixture(scope="session")
def search_world(tmp_path_factory, tiny_clip_dir, tiny_clap_dir) -> dict[str, Path]:
    """Media, stores, a model and an index built through the real CLI."""
    root = tmp_path_factory.mktemp("search-world")
    images, sounds = write_media(root)
    (root / "captions.txt").write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
    embeds = [("image", f"clip:{tiny_clip_dir}", images, "clip_image"),
              ("audio", f"clap:{tiny_clap_dir}", sounds, "clap_audio"),
              ("text", f"clap:{tiny_clap_dir}", root / "captions.txt", "clap_text")]
    for modality, space, source, name in embeds:
        assert main(["embed", "--space", space, "--modality", modality, "--input", str(source),
                     "--out", str(root / name), "--device", "cpu", "--workers", "0",
                     "--quiet"]) == 0
    model = build_joint_model(root / "model")
    assert main(["index", "build", "--model", str(model), "--out", str(root / "index"), "--quiet",
                 "--store", str(root / "clip_image"), "--store", str(root / "clap_audio"),
                 "--store", str(root / "clap_text")]) == 0
    return {"root": root, "images": images, "sounds": sounds, "model": model,
            "index": root / "index", **{name: root / name for *_, name in embeds}}


GAP_CONCEPTS = ["dog", "bell", "rain", "siren"]
GAP_ITEMS = 24  # per modality: more than a page of 20, so "everything" has to choose


def gap_model(directory: Path, gap: float = 3.0) -> Path:
    """A joint model with a modality gap as in the real demo: each projector's output is pushed
    along its own axis, so rows of one side meet at cosine ~0.95 and across sides at ~0.05."""
    model = ConnectedModel.from_pretrained(build_joint_model(directory))
    with torch.no_grad():
        for axis, name in enumerate(("clip", "clap")):
            model.projectors[name].net[-1].bias[axis] += gap
    return model.save_pretrained(directory)


def write_gap_media(root: Path) -> tuple[list[Path], list[Path], list[str]]:
    """GAP_ITEMS pictures, sounds and captions, in turn of each of GAP_CONCEPTS."""
    root.mkdir(parents=True)
    pictures, sounds, captions = [], [], []
    seconds = np.arange(8000) / 16000
    for number in range(GAP_ITEMS):
        concept = GAP_CONCEPTS[number % len(GAP_CONCEPTS)]
        pixels = np.full((40, 40, 3), COLOURS[number % len(COLOURS)], dtype=np.uint8)
        pixels[number:number + 8, 4:20] = 255
        pictures.append(root / f"{concept}-{number}.png")
        Image.fromarray(pixels).save(pictures[-1])
        tone = 0.3 * np.sin(2 * np.pi * (200 + 60 * number) * seconds)
        sounds.append(root / f"{concept}-{number}.wav")
        soundfile.write(sounds[-1], tone.astype(np.float32), 16000)
        captions.append(f"{CAPTIONS[number % len(CAPTIONS)]} near a {concept} ({number})")
    return pictures, sounds, captions


@pytest.fixture(scope="session")
def gap_world(tmp_path_factory, tiny_clip_dir, tiny_clap_dir) -> dict[str, Path]:
    """Images, sounds and texts of several concepts (stores whose metadata give each row's
    concept as its label) indexed with a model that keeps a modality gap."""
    from cmcr.spaces import load_space
    from cmcr.data.store import write_store

    root = tmp_path_factory.mktemp("gap-world")
    pictures, sounds, captions = write_gap_media(root / "media")
    clip, clap = load_space(f"clip:{tiny_clip_dir}"), load_space(f"clap:{tiny_clap_dir}")
    labels = [GAP_CONCEPTS[n % len(GAP_CONCEPTS)] for n in range(GAP_ITEMS)]
    for name, space, spec, modality, items in [
            ("images", clip, f"clip:{tiny_clip_dir}", "image", pictures),
            ("sounds", clap, f"clap:{tiny_clap_dir}", "audio", sounds),
            ("texts", clip, f"clip:{tiny_clip_dir}", "text", captions)]:
        rows = space.embed(modality, [str(item) for item in items]).numpy()
        metadata = ([{"text": text} for text in captions] if modality == "text" else
                    [{"source": str(path), "label": label} for path, label in zip(items, labels)])
        ids = [Path(str(item)).name if modality != "text" else str(n) for n, item in
               enumerate(items)]
        write_store(root / name, rows, ids, space=spec, modality=modality, metadata=metadata)
    model = gap_model(root / "model")
    assert main(["index", "build", "--model", str(model), "--out", str(root / "index"), "--quiet",
                 *[arg for name in ("images", "sounds", "texts")
                   for arg in ("--store", str(root / name))]]) == 0
    return {"root": root, "media": root / "media", "model": model, "index": root / "index"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, token: str | None = None,
                       timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"cmcr serve exited with {process.returncode}: "
                               f"{process.stderr.read().decode(errors='replace')[-2000:]}")
        try:
            info = urllib.request.Request(f"{url}/api/info", headers=headers)
            with urllib.request.urlopen(info, timeout=2) as answer:
                json.load(answer)
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.3)
    raise RuntimeError(f"cmcr serve did not answer at {url} within {timeout:.0f} s")


@contextlib.contextmanager
def running_server(index: Path, *options: str, token: str | None = None) -> Iterator[str]:
    """`cmcr serve INDEX OPTIONS` in its own process on a free port; yields its base URL."""
    with serving_process(index, *options, token=token) as (url, _):
        yield url


@contextlib.contextmanager
def serving_process(index: Path, *options: str, token: str | None = None
                    ) -> Iterator[tuple[str, subprocess.Popen]]:
    """As :func:`running_server`, yielding (base URL, the server's process)."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if token is not None:
        env["CMCR_TOKEN"] = token
    process = subprocess.Popen(
        [sys.executable, "-m", "cmcr", "serve", str(index), "--port", str(port), "--device", "cpu",
         *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process, token)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def live_server(search_world) -> str:
    """`cmcr serve` in its own process (uploads limited to 1 MB); yields its base URL."""
    with running_server(search_world["index"], "--max-upload-mb", "1") as url:
        yield url


@pytest.fixture(scope="session")
def gap_server(gap_world) -> str:
    """`cmcr serve` over the gap world's index; yields its base URL."""
    with running_server(gap_world["index"]) as url:
        yield url
