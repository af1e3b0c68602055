"""Shared test settings: no test may reach the network; tiny problems only."""

import os

import pytest

pytest_plugins = ["tiny_models", "search_fixtures"]  # tiny CLIP/CLAP checkpoints and the reference assets, as fixtures

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _no_progress_noise(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
