"""A real search stack for the index, API and browser tests: generated images, sounds and
captions embedded by `cmcr embed` with the tiny CLIP/CLAP, a connected model, `cmcr index build`,
and `cmcr serve` running as its own process on 127.0.0.1. Registered as a pytest plugin."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from cmcr.cli import main
from cmcr.config import ModelConfig, ProjectorConfig, SpaceSpec
from cmcr.model import ConnectedModel

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"cmcr serve exited with {process.returncode}: "
                               f"{process.stderr.read().decode(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/info", timeout=2) as answer:
                json.load(answer)
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.3)
    raise RuntimeError(f"cmcr serve did not answer at {url} within {timeout:.0f} s")


@pytest.fixture(scope="session")
def live_server(search_world) -> str:
    """`cmcr serve` in its own process (uploads limited to 1 MB); yields its base URL."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(
        [sys.executable, "-m", "cmcr", "serve", str(search_world["index"]), "--port", str(port),
         "--device", "cpu", "--max-upload-mb", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
