"""Device, seeds and the run record: the small runtime facts every job needs (threads.py: how
many CPU threads). torch is imported inside the functions, so the command line starts fast."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cmcr.version import __version__

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None picks CUDA when present, else CPU; anything else is passed to torch."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed numpy and torch globally, and return a CPU generator for this run's own draws."""
    import torch

    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def git_sha() -> str | None:
    """The commit of the cmcr checkout, when cmcr runs from one."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def environment_record() -> dict[str, Any]:
    """The versions and the thread count a number was measured with (results are the same at
    any thread count, but a record that says so lets anyone check)."""
    import torch

    return {"cmcr_version": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads()}


def run_record(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What produced a result: resolved config, versions, threads, git sha, command line, time."""
    return {
        **environment_record(),
        "git_sha": git_sha(),
        "argv": sys.argv,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        **extra,
    }


def write_json(path: str | Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
