"""Tiny CLIP and CLAP checkpoints (cmcr.spaces.tiny) and the reference assets, as pytest fixtures.

Registered as a pytest plugin in conftest.py, so its fixtures are available to every test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cmcr.spaces.tiny import build_tiny_clap, build_tiny_clip

# -- session fixtures --------------------------------------------------------------------------
# The official C-MCR demo inputs (the authors' repository's assets/): in this project's workspace
# beside the checkout, or wherever CMCR_TEST_ASSETS points.
ASSETS = Path(os.environ.get("CMCR_TEST_ASSETS") or
              Path(__file__).resolve().parents[2] / "shared" / "reference" / "assets")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_clap_dir(tmp_path_factory) -> Path:
    return build_tiny_clap(tmp_path_factory.mktemp("tiny-clap"), fused=True)


@pytest.fixture(scope="session")
def tiny_clap_unfused_dir(tmp_path_factory) -> Path:
    return build_tiny_clap(tmp_path_factory.mktemp("tiny-clap-unfused"), fused=False)


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    if not ASSETS.is_dir():
        pytest.skip(f"the official C-MCR demo inputs are not at {ASSETS}: copy the authors' "
                    "assets/ folder there, or set CMCR_TEST_ASSETS=DIR (see README, Development)")
    return ASSETS


@pytest.fixture(scope="session")
def tiny_joint_model_dir(tmp_path_factory) -> Path:
    """A connected model (random projectors) over the tiny CLIP and CLAP (16-d each)."""
    import torch

    from cmcr.config import ModelConfig, ProjectorConfig, SpaceSpec
    from cmcr.method.model import ConnectedModel

    torch.manual_seed(0)
    projector = ProjectorConfig(hidden=32, out_dim=8, layers=2)
    config = ModelConfig(spaces={"clap": SpaceSpec(["audio", "text"], 16),
                                 "clip": SpaceSpec(["image", "text"], 16)},
                         projectors={"clap": projector, "clip": projector},
                         shared_modality="text", shared_modality_space="clip")
    return ConnectedModel(config).save_pretrained(tmp_path_factory.mktemp("joint-model"))


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """11 images of odd sizes and modes (RGB, L, CMYK, RGBA) in nested folders, a broken JPEG
    an empty PNG and a non-image: what cmcr embed meets in a real folder."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index in range(11):
        folder = root / ("sub" if index % 3 == 0 else "")
        folder.mkdir(exist_ok=True)
        mode = ["RGB", "L", "CMYK", "RGBA"][index % 4]
        pixels = rng.integers(0, 255, (9 + index, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(
            folder / f"img{index:02d}.{'png' if mode == 'RGBA' else 'jpg'}")
    (root / "img03b.jpg").write_bytes(b"\xff\xd8 broken")
    (root / "sub" / "zz.png").write_bytes(b"")
    (root / "notes.md").write_text("not an image")
    return root


def randomised(module, seed: int, scale: float = 0.1, batches_tracked: int = 17):
    """``module`` with every parameter and BatchNorm statistic random, so a mix-up shows."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(batches_tracked)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * scale)
    return module.eval()
