"""Benchmark: how much slower cmcr gets when another CPU-bound process shares the machine.

Two workloads, each timed in a fresh process (OpenMP reads its settings when torch loads):

* ``connect`` -- the demo's connection stage: ``cmcr.connect`` with the demo's settings for C-MCR
  and its three ablations, on the stores of a finished ``cmcr demo`` run (``--demo``; the
  cached pseudo pairs are reused, so this is training);
* ``step``    -- ``cmcr.method.train._train_step`` with the paper's CLAP-CLIP projectors (512-1024-512,
  batch ``--batch``) on batches already in RAM.

Each runs quiet, then with one competing process spinning on a core (``python -c 'while True:
pass'``), under three settings: cmcr's defaults (threads = the usable cores that no other process
keeps busy when the run starts: see cmcr.runtime.threads), torch's defaults as before (one thread per
core, whatever else runs), and ``--threads 1``. The printed ratio is busy / quiet; with one
competitor on 2 cores the fair share is about 2x. Quiet and busy runs of a setting are timed
back to back, so slow drift of the machine affects both alike; one untimed run first warms the
file cache.

    python bench/bench_contention.py --demo runs/demo       # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {  # name -> --threads (None: cmcr's choice; 0: one per usable core, torch's default)
    "cmcr defaults": None,
    "torch defaults": 0,
    "--threads 1": 1,
}


def child_connect(demo: Path, out: Path) -> None:
    from cmcr.pipeline import connect
    from cmcr.world.demo import ABLATIONS, DemoSettings, _connect_config
    from cmcr.world.stages import EMBEDDINGS

    stores = {name: demo / "emb" / name for name in EMBEDDINGS}
    settings = DemoSettings()
    for name, method in {"cmcr": {}, **ABLATIONS}.items():
        connect(_connect_config(stores, settings, method), out / name, device="cpu",
                cache_dir=demo / "cache", progress=False)


def child_step(batch: int, steps: int) -> None:
    import torch

    from cmcr.config import MethodConfig
    from cmcr.method.train import _train_step, cmcr_batch_loss

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_train import build_model, synthetic_data

    model = build_model(512, "clap-clip").train()
    data = [rows[:batch] for rows in synthetic_data(batch, 512)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    generator = torch.Generator().manual_seed(0)
    loss = cmcr_batch_loss(("clip", "clap"), MethodConfig())
    for _ in range(steps):
        _train_step(model, data, loss, generator, optimizer, scheduler)


def timed_child(args: argparse.Namespace, workload: str, threads: int | None, out: Path) -> float:
    """Seconds a fresh process takes for ``workload`` (start-up excluded: it times itself)."""
    command = [sys.executable, __file__, "--child", workload, "--demo", str(args.demo),
               "--batch", str(args.batch), "--steps", str(args.steps), "--out", str(out)]
    if threads is not None:
        from cmcr.runtime.threads import usable_cores

        command += ["--threads", str(threads or usable_cores())]
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def run_child(args: argparse.Namespace) -> None:
    from cmcr.runtime.threads import configure_threads

    configure_threads(args.threads)
    began = time.perf_counter()
    if args.child == "connect":
        child_connect(Path(args.demo), Path(args.out))
    else:
        child_step(args.batch, args.steps)
    print(time.perf_counter() - began)


def measure(args: argparse.Namespace, workload: str, out: Path) -> dict[str, tuple[float, float]]:
    timed_child(args, workload, None, out / "warm-up")  # file caches, lazy first-time work
    results = {}
    for number, (name, threads) in enumerate(SETTINGS.items()):
        quiet = timed_child(args, workload, threads, out / f"{number}-quiet")
        competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            busy = timed_child(args, workload, threads, out / f"{number}-busy")
        finally:
            competitor.kill()
            competitor.wait()
        results[name] = (quiet, busy)
        print(f"  {workload:<8} {name:<18} quiet {quiet:6.1f} s  busy {busy:6.1f} s  "
              f"ratio {busy / quiet:4.1f}x", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", default="runs/demo",
                        help="a finished 'cmcr demo' output folder (default: runs/demo)")
    parser.add_argument("--batch", type=int, default=1024,
                        help="training-step batch size (default: 1024)")
    parser.add_argument("--steps", type=int, default=6, help="training steps timed (default: 6)")
    parser.add_argument("--out", default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(args)
    if not (Path(args.demo) / "emb" / "clip_text" / "store.json").is_file():
        sys.exit(f"no demo stores in {args.demo}: run 'cmcr demo --out {args.demo}' first")
    import tempfile

    with tempfile.TemporaryDirectory(dir=args.out, prefix="bench-contention-") as scratch:
        print(f"one competing process on {os.cpu_count()} cores; ratio = busy / quiet "
              "(fair share with one competitor on 2 cores: about 2x)")
        for workload in ("connect", "step"):
            measure(args, workload, Path(scratch) / workload)


if __name__ == "__main__":
    main()
