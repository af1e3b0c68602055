"""Shared test settings: no test may reach the network; tiny problems only."""

import os

import pytest

pytest_plugins = ["tiny_models", "search_fixtures"]  # tiny CLIP/CLAP checkpoints and the reference assets, as fixtures

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Threads chosen as the command line chooses them (cores that no other process keeps busy), so
# the suite does not slow down tenfold on a shared machine.
from cmcr.runtime.threads import configure_threads  # noqa: E402

configure_threads()
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _no_progress_noise(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
