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
