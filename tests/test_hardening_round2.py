"""Hardening, second round (issue 20): a stale store lock is taken over by one process only, a cut
metrics line does not stop a resume, Ray addresses time out, tiny stores and configs that cannot
train are refused before any work, and hostile config values are one-line errors."""

from __future__ import annotations

import json
import multiprocessing
import socket
import subprocess
import time
from pathlib import Path

import pytest

from cmcr.store import LOCK_FILE, store_lock

RACERS, TRIALS = 8, 5


def _dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def _race(folders: list[str], barrier, record: str) -> None:
    """Enter store_lock on each folder as the others do; write [trial, enter, leave] for each
    trial in which this racer held the lock to ``record``."""
    from cmcr.errors import StoreError

    held = []
    for trial, folder in enumerate(folders):
        barrier.wait()
        try:
            with store_lock(folder):
                entered = time.monotonic()
                time.sleep(0.02)
                held.append([trial, entered, time.monotonic()])
        except StoreError:
            pass  # refused: another racer holds the lock
    Path(record).write_text(json.dumps(held))


def test_a_stale_lock_is_taken_over_by_one_racer_at_a_time(tmp_path):
    folders = []
    for trial in range(TRIALS):
        folder = tmp_path / f"store{trial}"
        folder.mkdir()
        (folder / LOCK_FILE).write_text(json.dumps(
            {"pid": _dead_pid(), "host": socket.gethostname(), "since": "earlier",
             "note": "x" * 2_000_000}))  # slow to read: every racer finds the holder gone
        folders.append(str(folder))
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(RACERS)
    records = [tmp_path / f"racer{number}.json" for number in range(RACERS)]
    racers = [context.Process(target=_race, args=(folders, barrier, str(record)))
              for record in records]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=120)
    assert all(racer.exitcode == 0 for racer in racers)
    held: dict[int, list[tuple[float, float]]] = {trial: [] for trial in range(TRIALS)}
    for record in records:
        for trial, entered, left in json.loads(record.read_text()):
            held[trial].append((entered, left))
    for trial, spans in held.items():
        assert spans, f"trial {trial}: nobody took over the stale lock"
        spans.sort()
        overlaps = [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]
        assert not overlaps, f"trial {trial}: {len(overlaps) + 1} racers held the lock at once"
        assert not (Path(folders[trial]) / LOCK_FILE).exists()
