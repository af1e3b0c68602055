"""Benchmark: does ``cmcr serve`` keep answering text queries while clients upload hostile files?

Starts ``cmcr serve`` as its own process on a small index (the tiny CLIP/CLAP stack the tests
build: 8 pictures, 8 tones, 8 captions), then for ``--duration`` seconds ``--clients`` threads
each loop over the hostile requests of issue 20:

  wav-1hz     a 40 KB PCM WAV whose header says 1 Hz (20,000 samples = 5.5 hours)
  flac-6h     a 3.5 MB FLAC of 6 hours of 48 kHz silence
  png-12000   a 140 KB 12000 x 12000 PNG (144 megapixels)
  png-5Mx1    a 5 KB 5,000,000 x 1 PNG
  media-5000  GET /media/ followed by 5,000 digits
  thumb-0     GET /media/0?thumb=0
  png-6000    (unless --no-allowed) a 35 KB 6000 x 6000 PNG: within the limits, so it really
              decodes (about 2 s of CPU), outside the encoder's lock

while one more thread sends text queries one after another. Printed: each request kind's status
codes and latency, the text queries' p50/p99 latency before and under the load, and the server's
resident memory (VmRSS from /proc) at its steady level, its peak during the load, and after.

    python bench/bench_serve_hostile.py                    # about 2 minutes on 2 cores
    python bench/bench_serve_hostile.py --duration 15      # a quick run
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

TESTS = Path(__file__).resolve().parents[1] / "tests"
TEXTS = ["a dog barking", "a red square", "rain on a roof", "a bell ringing", "a blue sky"]
MIB = 2**20


# -- the index and the hostile files ---------------------------------------------------------------
def build_index(root: Path) -> Path:
    """The tests' search world: tiny CLIP/CLAP, embedded media, a connected model, an index."""
    from search_fixtures import CAPTIONS, build_joint_model, write_media

    from cmcr.cli import main
    from cmcr.spaces.tiny import build_tiny_clap, build_tiny_clip

    clip, clap = build_tiny_clip(root / "tiny-clip"), build_tiny_clap(root / "tiny-clap")
    images, sounds = write_media(root)
    (root / "captions.txt").write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
    stores = []
    for modality, space, source, name in [("image", f"clip:{clip}", images, "clip_image"),
                                          ("audio", f"clap:{clap}", sounds, "clap_audio"),
                                          ("text", f"clap:{clap}", root / "captions.txt", "text")]:
        stores += ["--store", str(root / name)]
        assert main(["embed", "--space", space, "--modality", modality, "--input", str(source),
                     "--out", str(root / name), "--device", "cpu", "--workers", "0",
                     "--quiet"]) == 0
    model = build_joint_model(root / "model")
    assert main(["index", "build", "--model", str(model), "--out", str(root / "index"),
                 "--quiet", *stores]) == 0
    return root / "index"


def png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def audio(seconds: float, rate: int, file_format: str, frames: int | None = None) -> bytes:
    """Silence, written a minute at a time (6 hours of FLAC take ~20 s to encode)."""
    import soundfile

    buffer = io.BytesIO()
    total = frames if frames is not None else int(seconds * rate)
    with soundfile.SoundFile(buffer, "w", rate, 1, format=file_format) as sound:
        block = np.zeros(min(total, 60 * rate), dtype=np.float32)
        for start in range(0, total, len(block)):
            sound.write(block[:total - start])
    return buffer.getvalue()


def hostile_uploads(work: Path, allowed: bool) -> dict[str, tuple[str, bytes]]:
    """name -> (file name, bytes); made once and kept in ``work``."""
    makers: dict[str, tuple[str, Callable[[], bytes]]] = {
        "wav-1hz": ("slow.wav", lambda: audio(0, 1, "WAV", frames=20_000)),
        "flac-6h": ("long.flac", lambda: audio(6 * 3600, 48_000, "FLAC")),
        "png-12000": ("huge.png", lambda: png(12_000, 12_000)),
        "png-5Mx1": ("wide.png", lambda: png(5_000_000, 1)),
    }
    if allowed:
        makers["png-6000"] = ("large.png", lambda: png(6_000, 6_000))
    files = {}
    for name, (filename, make) in makers.items():
        path = work / filename
        if not path.is_file():
            path.write_bytes(make())
        files[name] = (filename, path.read_bytes())
    return files


# -- the server and its memory -----------------------------------------------------------------------
def start_server(index: Path, port: int) -> subprocess.Popen:
    from search_fixtures import wait_until_serving

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen([sys.executable, "-m", "cmcr", "serve", str(index), "--port",
                                str(port), "--device", "cpu"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wait_until_serving(f"http://127.0.0.1:{port}", process)
    return process


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` (psutil when installed, else /proc/PID/status)."""
    try:
        import psutil
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for process {pid}") from None
    return psutil.Process(pid).memory_info().rss / MIB


class PeakSampler(threading.Thread):
    """Samples a process's RSS every 50 ms until stopped; keeps the peak."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, rss_mib(self.pid))


# -- clients ---------------------------------------------------------------------------------------
def requests_of(url: str, uploads: dict[str, tuple[str, bytes]]) -> dict[str, Callable[[], int]]:
    """name -> a function sending that request and returning its HTTP status."""
    from test_serve import call, multipart

    def upload(filename: str, data: bytes) -> Callable[[], int]:
        body, headers = multipart({"k": "3"}, filename, data)
        return lambda: call(url, "POST", "/api/search", body, headers)[0]

    sent = {name: upload(*file) for name, file in uploads.items()}
    sent["media-5000"] = lambda: call(url, "GET", "/media/" + "7" * 5000)[0]
    sent["thumb-0"] = lambda: call(url, "GET", "/media/0?thumb=0")[0]
    return sent


def text_latencies(url: str, until: Callable[[], bool]) -> list[float]:
    """Text queries one after another until ``until()``; each one's seconds."""
    from test_serve import call

    seconds, count = [], 0
    while not until():
        began = time.perf_counter()
        query = TEXTS[count % len(TEXTS)].replace(" ", "+")
        status, _, _ = call(url, "GET", f"/api/search?q={query}")
        seconds.append(time.perf_counter() - began)
        if status != 200:
            raise RuntimeError(f"a text query got HTTP {status}")
        count += 1
    return seconds


def hostile_client(requests: dict[str, Callable[[], int]], offset: int, deadline: float,
                   log: dict[str, list]) -> None:
    names = list(requests)
    turn = offset
    while time.monotonic() < deadline:
        name = names[turn % len(names)]
        began = time.perf_counter()
        try:
            status = requests[name]()
        except OSError as err:
            status = type(err).__name__
        log[name].append((status, time.perf_counter() - began))
        turn += 1


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# -- the run ---------------------------------------------------------------------------------------
def settle(url: str, uploads: dict[str, tuple[str, bytes]]) -> None:
    """Bring the server to its steady state: every tower and allocator path used once."""
    from search_fixtures import write_media
    from test_serve import post_file

    with tempfile.TemporaryDirectory() as folder:
        images, sounds = write_media(Path(folder))
        for path in (images / "picture-1.png", sounds / "sound-1.wav"):
            status, _ = post_file(url, path.name, path.read_bytes())
            assert status == 200, status
    if "png-6000" in uploads:
        assert post_file(url, uploads["png-6000"][0], uploads["png-6000"][1])[0] == 200
    text_latencies(url, until=_after(20))


def _after(count: int) -> Callable[[], bool]:
    calls = iter(range(count + 1))
    return lambda: next(calls) >= count


def run(args: argparse.Namespace) -> None:
    work = Path(args.work or tempfile.mkdtemp(prefix="cmcr-hostile-"))
    work.mkdir(parents=True, exist_ok=True)
    index = work / "index" if (work / "index" / "index.json").is_file() else build_index(work)
    uploads = hostile_uploads(work, allowed=not args.no_allowed)
    server = start_server(index, args.port)
    url = f"http://127.0.0.1:{args.port}"
    try:
        settle(url, uploads)
        quiet = text_latencies(url, until=_after(50))
        before = rss_mib(server.pid)
        sampler = PeakSampler(server.pid)
        sampler.start()
        log: dict[str, list] = collections.defaultdict(list)
        deadline = time.monotonic() + args.duration
        requests = requests_of(url, uploads)
        clients = [threading.Thread(target=hostile_client, args=(requests, i, deadline, log))
                   for i in range(args.clients)]
        for client in clients:
            client.start()
        loaded = text_latencies(url, until=lambda: time.monotonic() >= deadline)
        for client in clients:
            client.join()
        sampler.done.set()
        sampler.join()
        time.sleep(args.settle)
        text_latencies(url, until=_after(20))
        after = rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    report(args, log, quiet, loaded, before, max(sampler.peak, before), after)


def report(args: argparse.Namespace, log: dict[str, list], quiet: list[float],
           loaded: list[float], before: float, peak: float, after: float) -> None:
    print(f"cmcr serve under {args.clients} hostile clients for {args.duration:g} s")
    print(f"{'request':<12} {'sent':>6}  {'statuses':<28} {'p50 s':>7} {'p99 s':>7}")
    for name, entries in sorted(log.items()):
        statuses = collections.Counter(str(status) for status, _ in entries)
        shown = ", ".join(f"{code} x{count}" for code, count in sorted(statuses.items()))
        seconds = [s for _, s in entries]
        print(f"{name:<12} {len(entries):>6}  {shown:<28} {percentile(seconds, 50):>7.3f} "
              f"{percentile(seconds, 99):>7.3f}")
    p99 = percentile(loaded, 99)
    print(f"text queries, quiet:      {len(quiet):>5}  p50 {percentile(quiet, 50):.3f} s  "
          f"p99 {percentile(quiet, 99):.3f} s")
    print(f"text queries, under load: {len(loaded):>5}  p50 {percentile(loaded, 50):.3f} s  "
          f"p99 {p99:.3f} s  max {max(loaded):.3f} s  ({'within' if p99 <= 1 else 'OVER'} 1 s)")
    change = (after - before) / before
    print(f"server RSS: before {before:.0f} MiB, peak {peak:.0f} MiB, after {after:.0f} MiB "
          f"({change:+.1%} of before: {'within' if abs(change) <= 0.2 else 'OVER'} 20%)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    parser.add_argument("--clients", type=int, default=8, help="hostile clients (8)")
    parser.add_argument("--port", type=int, default=8766, help="port to serve on (8766)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="idle seconds after the load before 'after' is read (3)")
    parser.add_argument("--no-allowed", action="store_true",
                        help="leave out the large-but-allowed 6000 x 6000 PNG")
    parser.add_argument("--work", default=None,
                        help="folder for the index and files, reused when run again")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(TESTS))  # the tests' search world and HTTP helpers
    run(args)


if __name__ == "__main__":
    main()
