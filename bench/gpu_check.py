"""Check cmcr on a CUDA device: embedding precision, a paper-sized training run, retrieval, search.

Three sections, each compared with a float32 or CPU reference:

* ``embed``  -- ``cmcr embed``'s code path (``load_space`` -> ``collect_inputs`` -> ``embed_items``,
  as ``cmcr.cli.encoders.run_embed`` calls them) with random-weight models built from configs and
  saved like real checkpoints: CLIP at ViT-B/32's size and CLAP at laion/clap-htsat-fused's size
  (HTSAT-tiny, fused, RoBERTa-base), on generated JPEGs, WAVs (shorter than, equal to and longer
  than CLAP's 10 s window) and texts. Every store is embedded with ``--dtype float32``, ``float16``
  (what ``--dtype auto`` picks on CUDA) and ``bfloat16``; each half-precision row must be within
  cosine 0.999 of its float32 row, and float32 on the device within 0.9999 of float32 on the CPU
  (first items). Prints items/s (model already loaded) and peak device memory.
* ``train``  -- ``cmcr connect`` on stores of random unit rows at the paper's size (batch 4,096,
  the clap-clip heads 512-1024-512): cold (memory retrieval + training), then again with the
  pseudo pairs cached (training alone); steps/s and peak memory; the loss must fall.
* ``search`` -- ``cmcr.method.retrieval``'s exact memory retrieval on the device against the CPU and a
  float64 softmax; FAISS exact search on the GPU (when this FAISS has GPU support) against FAISS on
  the CPU, and torch's exact top-k on the device against FAISS on the CPU.

    python bench/gpu_check.py                  # on a CUDA machine (a few minutes)
    python bench/gpu_check.py --quick          # same model sizes, fewer items and steps
    python bench/gpu_check.py --cpu --quick    # the same checks, small, on the CPU (the test)

Exits 1 when a check fails, else 0. Without CUDA (and without ``--cpu``) it prints
"no CUDA device: nothing checked" and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

SECTIONS = ("embed", "train", "search")
DTYPES = ("float32", "float16", "bfloat16")
HALF_MIN_COSINE = 0.999  # a half-precision row against its float32 row
DEVICE_MIN_COSINE = 0.9999  # float32 on the device against float32 on the CPU (TF32 convs pass)
RETRIEVAL_MAX_ABS = 1e-4  # pseudo rows: device against CPU, chunked against float64
SEARCH_MAX_ABS = 1e-4  # inner products of unit rows
SEARCH_MIN_RECALL = 0.999  # top-k ids: near-ties may swap the last neighbour, rarely
WORDS = ("a dog barks near the red car while rain falls on an old tin roof and birds sing "
         "in the tall green trees as children laugh by the river at night").split()


@dataclass(frozen=True)
class Sizes:
    """How big each section runs: ``models`` is "real" (ViT-B/32, HTSAT) or "tiny"."""

    models: str
    images: int
    clips: int
    texts: int
    embed_batch: int
    cpu_reference: int  # items embedded on the CPU too, to compare with the device's float32
    train_rows: int
    train_batch: int
    train_epochs: int
    memory_rows: int
    retrieval_queries: int
    retrieval_memory: int
    faiss_rows: int
    faiss_queries: int


SIZES = {  # (device type, quick) -> sizes
    ("cuda", False): Sizes("real", 512, 96, 2048, 64, 16, 40960, 4096, 30, 262144,
                           8192, 262144, 1_000_000, 1024),
    ("cuda", True): Sizes("real", 64, 16, 256, 64, 8, 8192, 4096, 25, 65536,
                          4096, 65536, 200_000, 256),
    ("cpu", False): Sizes("tiny", 64, 16, 256, 16, 0, 8192, 1024, 6, 16384,
                          2048, 16384, 100_000, 256),
    ("cpu", True): Sizes("tiny", 8, 6, 32, 8, 0, 1024, 256, 4, 4096,
                         512, 4096, 20_000, 64),
}


@dataclass
class Report:
    """Printed lines, failed checks and the numbers (for --json)."""

    failures: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    def section(self, title: str) -> None:
        print(f"\n== {title}", flush=True)

    def line(self, text: str) -> None:
        print(f"   {text}", flush=True)

    def check(self, ok: bool, what: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            self.failures.append(what)


# -- measuring -----------------------------------------------------------------------------------
def reset_peak(device: str) -> None:
    if device == "cuda":
        gc.collect()  # frees the previous run's tower before its memory is counted again
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: str) -> float:
    """Peak device memory allocated by torch since ``reset_peak`` (CUDA), else this process's
    peak resident memory so far (the CPU cannot be reset: read it as an upper bound)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def row_cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``candidate`` with the same row of ``reference``: (n,)."""
    reference, candidate = reference.astype(np.float64), candidate.astype(np.float64)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    return (reference * candidate).sum(axis=1) / np.maximum(norms, 1e-30)


def top_k_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` (ids) that the same row of ``found`` holds."""
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / len(t)
                          for f, t in zip(found, truth)]))


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


# -- models and inputs ---------------------------------------------------------------------------
def build_vit_b32_clip(directory: Path) -> Path:
    """A random-weight CLIPModel of ViT-B/32's shape (transformers' CLIPConfig defaults: vision
    768-d, 12 layers, patch 32 at 224 px; text 512-d, 12 layers; 512-d projections)."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    from cmcr.spaces.clip import clip_image_processor
    from cmcr.spaces.tokenizer import write_bpe_files

    write_bpe_files(directory, style="clip")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    CLIPProcessor(image_processor=clip_image_processor(224),
                  tokenizer=tokenizer).save_pretrained(directory)
    specials = len(tokenizer)  # the tokenizer's own start/end ids, inside the real vocabulary
    config = CLIPConfig(text_config=dict(vocab_size=49408, bos_token_id=specials - 2,
                                         eos_token_id=specials - 1, pad_token_id=specials - 1),
                        vision_config=dict(image_size=224, patch_size=32), projection_dim=512)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(directory)
    return directory


def build_htsat_clap(directory: Path) -> Path:
    """A random-weight ClapModel shaped like laion/clap-htsat-fused (HTSAT-tiny with fusion,
    RoBERTa-base text tower, 512-d) with its feature extractor (48 kHz, 10 s, 64 mel bins)."""
    from transformers import (ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor,
                              RobertaTokenizer)

    from cmcr.spaces.tokenizer import write_bpe_files

    write_bpe_files(directory, style="roberta")
    tokenizer = RobertaTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    extractor = ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=480,
                                     max_length_s=10, fft_window_size=1024, frequency_min=50,
                                     frequency_max=14000, truncation="fusion", padding="repeatpad")
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(directory)
    config = ClapConfig(text_config=dict(vocab_size=50265, max_position_embeddings=514,
                                         type_vocab_size=1, pad_token_id=1, bos_token_id=0,
                                         eos_token_id=2, projection_dim=512),
                        audio_config=dict(enable_fusion=True, projection_dim=512),
                        projection_dim=512)
    torch.manual_seed(0)
    ClapModel(config).save_pretrained(directory)
    return directory


@dataclass(frozen=True)
class Models:
    clip: Path
    clap: Path
    image_size: int  # generated images' long side
    sample_rate: int
    window_s: float  # CLAP's window: clips are generated at 0.5, 1 and 1.4 times it


def build_models(folder: Path, sizes: Sizes) -> Models:
    from cmcr.spaces.base import quiet_transformers

    with quiet_transformers():  # no "Writing model shards" bars
        return _build_models(folder, sizes)


def _build_models(folder: Path, sizes: Sizes) -> Models:
    if sizes.models == "tiny":
        from cmcr.spaces.tiny import build_tiny_clap, build_tiny_clip

        return Models(build_tiny_clip(folder / "clip"), build_tiny_clap(folder / "clap"),
                      64, 16000, 1.0)
    return Models(build_vit_b32_clip(folder / "clip"), build_htsat_clap(folder / "clap"),
                  640, 48000, 10.0)


def write_inputs(folder: Path, sizes: Sizes, models: Models) -> dict[str, Path]:
    """Generated JPEGs, WAVs and a text file; returns modality -> input path."""
    import soundfile
    from PIL import Image

    generator = np.random.default_rng(0)
    images, clips = folder / "images", folder / "audio"
    images.mkdir(parents=True, exist_ok=True)
    clips.mkdir(parents=True, exist_ok=True)
    side = models.image_size
    for index in range(sizes.images):
        coarse = generator.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        picture = Image.fromarray(coarse).resize((side, side * 3 // 4), Image.BICUBIC)
        grain = generator.integers(-20, 21, (side * 3 // 4, side, 3))
        noisy = np.asarray(picture, np.int16) + grain
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(images / f"{index:05d}.jpg",
                                                                  quality=90)
    for index in range(sizes.clips):
        seconds = models.window_s * (0.5, 1.0, 1.4)[index % 3]
        time_axis = np.arange(int(seconds * models.sample_rate)) / models.sample_rate
        tone = np.sin(2 * np.pi * generator.uniform(80, 4000) * time_axis)
        samples = 0.3 * tone + 0.05 * generator.standard_normal(len(time_axis))
        soundfile.write(clips / f"{index:05d}.wav", samples.astype(np.float32), models.sample_rate,
                        subtype="PCM_16")
    texts = folder / "texts.txt"
    lines = [" ".join(generator.choice(WORDS, generator.integers(3, 16)))
             for _ in range(sizes.texts)]
    texts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"image": images, "audio": clips, "text": texts}


# -- embed ---------------------------------------------------------------------------------------
def embed_run(spec: str, modality: str, items: list, out: Path, device: str, dtype: str,
              batch: int, workers: int | None) -> tuple[np.ndarray, float, float]:
    """One ``cmcr embed`` into ``out``: (rows, items/s, peak MiB). items/s counts from the end
    of the first batch to the end of the last (model loaded and warm, decoding workers started)."""
    from cmcr.embed import embed_items
    from cmcr.spaces import load_space
    from cmcr.data.store import open_store

    space = load_space(spec, device=device, dtype=dtype)
    space.embed(modality, [item.source for item in items[:2]])  # load and warm up the tower
    reset_peak(device)
    finished: list[float] = []
    started = time.perf_counter()
    summary = embed_items(space, modality, items, out, batch_size=batch, workers=workers,
                          overwrite=True, progress=False,
                          on_batch=lambda _: finished.append(time.perf_counter()))
    if summary.errors:
        raise RuntimeError(f"{out}: {len(summary.errors)} items failed, e.g. {summary.errors[0]}")
    peak = peak_mib(device)
    del space
    if len(finished) > 1:
        rate = (len(items) - batch) / (finished[-1] - finished[0])
    else:
        rate = len(items) / (finished[-1] - started)
    return open_store(out).to_numpy(), rate, peak


def check_embed(report: Report, sizes: Sizes, device: str, folder: Path, args: Any) -> None:
    from cmcr.embed import collect_inputs

    report.section(f"embed: `cmcr embed` code path, {sizes.models} CLIP and CLAP, {device}")
    models = build_models(folder / "models", sizes)
    inputs = write_inputs(folder / "inputs", sizes, models)
    workers = 0 if device == "cpu" else None  # None: cmcr embed's default
    memory = "peak MiB" if device == "cuda" else "RSS MiB"  # the CPU's: the process's peak
    report.line(f"{'space':<5} {'modality':<8} {'dtype':<9} {'items/s':>9} {memory:>9} "
                f"{'min cos':>9} {'mean cos':>9}")
    for kind, directory in (("clip", models.clip), ("clap", models.clap)):
        for modality in (("image", "text") if kind == "clip" else ("audio", "text")):
            items = collect_inputs(inputs[modality], modality)
            runs = [(dtype, device, items) for dtype in DTYPES]
            if device == "cuda" and sizes.cpu_reference:
                runs.append(("float32", "cpu", items[:sizes.cpu_reference]))
            reference = None
            for dtype, where, chosen in runs:
                store = folder / "stores" / f"{kind}-{modality}-{dtype}-{where}"
                rows, rate, peak = embed_run(f"{kind}:{directory}", modality, chosen, store,
                                             where, dtype, sizes.embed_batch,
                                             0 if where == "cpu" else workers)
                _report_embed_row(report, args, kind, modality, dtype, where, device, rows,
                                  reference, rate, peak)
                reference = rows if reference is None else reference


def _report_embed_row(report: Report, args: Any, kind: str, modality: str, dtype: str,
                      where: str, device: str, rows: np.ndarray, reference: np.ndarray | None,
                      rate: float, peak: float) -> None:
    label = dtype if where == device else f"{dtype} on the CPU ({len(rows)} items)"
    key = f"embed/{kind}/{modality}/{dtype}" + ("" if where == device else "/cpu")
    report.numbers[key] = {"items_per_s": round(rate, 2), "peak_mib": round(peak, 1)}
    if reference is None:
        report.line(f"{kind:<5} {modality:<8} {label:<9} {rate:>9.1f} {peak:>9.0f} "
                    f"{'(reference)':>19}")
        return
    cosines = row_cosines(reference[:len(rows)], rows)
    report.numbers[key].update(min_cosine=float(cosines.min()), mean_cosine=float(cosines.mean()))
    report.line(f"{kind:<5} {modality:<8} {label:<9} {rate:>9.1f} {peak:>9.0f} "
                f"{cosines.min():>9.6f} {cosines.mean():>9.6f}")
    bound = args.min_cosine if where == device else DEVICE_MIN_COSINE
    report.check(bool(cosines.min() >= bound),
                 f"{kind} {modality} {label}: every row within cosine {bound} of float32 on "
                 f"{device} (min {cosines.min():.6f})")


# -- train ---------------------------------------------------------------------------------------
def write_training_stores(folder: Path, sizes: Sizes) -> Path:
    """Random unit rows: CLAP's texts are a fixed rotation of CLIP's plus noise (so there is
    something to learn), memories are unrelated. Returns a connect config beside them."""
    from cmcr.data.store import write_store

    generator = np.random.default_rng(1)
    dim = 512
    clip_text = unit(generator.standard_normal((sizes.train_rows, dim), dtype=np.float32))
    rotation = np.linalg.qr(generator.standard_normal((dim, dim)))[0].astype(np.float32)
    clap_text = unit(clip_text @ rotation + generator.standard_normal(clip_text.shape, np.float32)
                     * (0.5 / math.sqrt(dim)))
    stores = {"clip_text": (clip_text, "clip", "text"), "clap_text": (clap_text, "clap", "text")}
    for name, space, modality in (("clip_image", "clip", "image"), ("clap_audio", "clap", "audio")):
        rows = unit(generator.standard_normal((sizes.memory_rows, dim), dtype=np.float32))
        stores[name] = (rows, space, modality)
    for name, (rows, space, modality) in stores.items():
        write_store(folder / name, rows, space=space, modality=modality, normalized=True)
    config = folder / "connect.yaml"
    config.write_text(
        "shared_modality: text\nspaces:\n"
        "  clip: {queries: clip_text, memory: clip_image, memory_modality: image}\n"
        "  clap: {queries: clap_text, memory: clap_audio, memory_modality: audio}\n"
        f"train: {{epochs: {sizes.train_epochs}, batch_size: {sizes.train_batch}, lr: 1.0e-3, "
        "seed: 0}\nmethod: {noise_var: 0.004, memory_temperature: 0.01, temperature: 0.01, "
        "intra_weight: 0.1}\nprojector: {preset: clap-clip}\n", encoding="utf-8")
    return config


def connect_run(config: Path, out: Path, cache: Path, device: str) -> tuple[int, float, float]:
    """``cmcr connect`` through the CLI in this process: (exit code, seconds, peak MiB)."""
    from cmcr.cli import main

    reset_peak(device)
    started = time.perf_counter()
    code = main(["connect", str(config), "--out", str(out), "--device", device, "--quiet",
                 "--cache-dir", str(cache)])
    return code, time.perf_counter() - started, peak_mib(device)


def check_train(report: Report, sizes: Sizes, device: str, folder: Path) -> None:
    steps = sizes.train_epochs * (sizes.train_rows // sizes.train_batch)
    report.section(f"train: `cmcr connect`, clap-clip heads 512-1024-512, batch "
                   f"{sizes.train_batch}, {steps} steps, memories of {sizes.memory_rows} rows, "
                   f"{device}")
    config = write_training_stores(folder, sizes)
    cache = folder / "cache"
    for label, out in (("cold: retrieval + training", "cold"), ("cached pseudo pairs", "warm")):
        code, seconds, peak = connect_run(config, folder / out, cache, device)
        report.check(code == 0, f"cmcr connect ({label}) exits 0 (got {code})")
        report.line(f"{label}: {seconds:.1f} s wall, peak {peak:.0f} MiB"
                    + ("" if device == "cuda" else " (process peak RSS)"))
        report.numbers[f"train/{out}"] = {"seconds": round(seconds, 2), "peak_mib": round(peak, 1)}
        if code != 0:
            return
    records = [json.loads(line) for line in
               (folder / "warm" / "training" / "metrics.jsonl").read_text().splitlines()]
    steady = records[1:] or records  # the first epoch also pays for warming up
    rate = records[0]["steps"] * len(steady) / sum(r["seconds"] for r in steady)
    report.line(f"training: {rate:.1f} steps/s = {rate * sizes.train_batch:,.0f} samples/s "
                f"(epochs 2-{len(records)}; epoch 1: {records[0]['seconds']:.2f} s)")
    report.numbers["train/steps_per_s"] = round(rate, 2)
    first, last = records[0]["total"], records[-1]["total"]
    report.check(bool(np.isfinite(last) and last < first),
                 f"the loss falls: epoch 1 {first:.4f} -> epoch {len(records)} {last:.4f}")


# -- search --------------------------------------------------------------------------------------
def check_retrieval(report: Report, sizes: Sizes, device: str) -> None:
    from cmcr.method.retrieval import retrieve_pseudo_embeddings

    generator = np.random.default_rng(2)
    queries = unit(generator.standard_normal((sizes.retrieval_queries, 512), dtype=np.float32))
    memory = unit(generator.standard_normal((sizes.retrieval_memory, 512), dtype=np.float32))
    retrieve_pseudo_embeddings(queries[:8], memory[:64], 0.01, device=device)  # warm-up
    timed: dict[str, tuple[np.ndarray, float]] = {}
    for where in dict.fromkeys((device, "cpu")):
        started = time.perf_counter()
        rows = retrieve_pseudo_embeddings(queries, memory, 0.01, device=where)
        timed[where] = (rows, time.perf_counter() - started)
    rows, seconds = timed[device]
    cpu_seconds = timed["cpu"][1]
    speed = f", CPU {cpu_seconds:.2f} s ({cpu_seconds / seconds:.1f}x)" if device != "cpu" else ""
    report.line(f"exact retrieval {len(queries)} x {len(memory)} x 512, temperature 0.01: "
                f"{device} {seconds:.2f} s{speed}")
    report.numbers["search/retrieval_seconds"] = {where: round(spent, 3)
                                                  for where, (_, spent) in timed.items()}
    if device != "cpu":
        gap = float(np.abs(rows - timed["cpu"][0]).max())
        report.check(gap <= RETRIEVAL_MAX_ABS, f"retrieval on {device} equals the CPU's "
                     f"(max |difference| {gap:.2e} <= {RETRIEVAL_MAX_ABS})")
    few = queries[:128].astype(np.float64)
    scores = few @ memory.astype(np.float64).T / 0.01
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    naive = (weights / weights.sum(axis=1, keepdims=True)) @ memory.astype(np.float64)
    gap = float(np.abs(rows[:128] - naive).max())
    report.check(gap <= RETRIEVAL_MAX_ABS, f"chunked retrieval on {device} equals a float64 "
                 f"full softmax (first 128 queries; max |difference| {gap:.2e})")


def torch_top_k(queries: np.ndarray, rows: np.ndarray, k: int, device: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k with torch on ``device``, in chunks of rows."""
    query = torch.from_numpy(queries).to(device)
    best_scores = torch.empty((len(queries), 0), device=device)
    best_ids = torch.empty((len(queries), 0), dtype=torch.long, device=device)
    for start in range(0, len(rows), 262144):
        block = torch.from_numpy(rows[start:start + 262144]).to(device)
        scores, ids = (query @ block.T).topk(min(k, len(block)), dim=1)
        merged = torch.cat([best_scores, scores], dim=1).topk(k, dim=1)
        best_ids = torch.cat([best_ids, ids + start], dim=1).gather(1, merged.indices)
        best_scores = merged.values
    return best_scores.cpu().numpy(), best_ids.cpu().numpy()


def check_faiss(report: Report, sizes: Sizes, device: str, k: int = 10) -> None:
    from cmcr.serve import ann

    faiss = ann.require_faiss()
    generator = np.random.default_rng(3)
    rows = unit(generator.standard_normal((sizes.faiss_rows, 512), dtype=np.float32))
    queries = ann.perturbed_queries(rows[generator.choice(len(rows), sizes.faiss_queries)], seed=4)
    index = ann.new_index("Flat", 512)
    index.add(rows)
    started = time.perf_counter()
    cpu_scores, cpu_ids = index.search(queries, k)
    cpu_seconds = time.perf_counter() - started
    searches: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
        f"torch top-k on {device}": lambda: torch_top_k(queries, rows, k, device)}
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    on_gpu = ann.to_gpu_if_present(index, "cuda") if device == "cuda" and gpus else index
    if on_gpu is not index:
        searches["FAISS Flat on the GPU"] = lambda: on_gpu.search(queries, k)
    else:
        report.line(f"FAISS {faiss.__version__} has no GPU support here (GPUs it sees: {gpus}): "
                    "FAISS GPU search not checked; FAISS searched on the CPU only")
    report.line(f"FAISS Flat on the CPU: {len(queries)} queries x {len(rows):,} rows, top-{k}: "
                f"{cpu_seconds:.3f} s")
    for label, search in searches.items():
        started = time.perf_counter()
        scores, ids = search()
        seconds = time.perf_counter() - started
        recall, gap = top_k_recall(ids, cpu_ids), float(np.abs(scores - cpu_scores).max())
        report.numbers[f"search/{label}"] = {"seconds": round(seconds, 4), "recall": recall}
        report.check(recall >= SEARCH_MIN_RECALL and gap <= SEARCH_MAX_ABS,
                     f"{label} ({seconds:.3f} s, {cpu_seconds / seconds:.1f}x FAISS CPU's speed) "
                     f"finds FAISS CPU's top-{k}: recall {recall:.4f}, max |score difference| "
                     f"{gap:.1e}")


def check_search(report: Report, sizes: Sizes, device: str, folder: Path) -> None:
    report.section(f"search: exact retrieval (cmcr.method.retrieval) and FAISS, {device} against CPU")
    check_retrieval(report, sizes, device)
    check_faiss(report, sizes, device)


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="examples:\n  python bench/gpu_check.py\n"
                                            "  python bench/gpu_check.py --cpu --quick")
    parser.add_argument("--cpu", action="store_true",
                        help="run the same checks on the CPU with tiny models and small sizes")
    parser.add_argument("--quick", action="store_true", help="fewer items, rows and steps")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--min-cosine", type=float, default=HALF_MIN_COSINE,
                        help="least cosine of a float16/bfloat16 row with its float32 row "
                             f"(default: {HALF_MIN_COSINE})")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--keep", type=Path, default=None,
                        help="work in this new folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections: unknown {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(SECTIONS)}")
    return args


def environment(device: str) -> str:
    from cmcr.version import __version__

    where = (f"{torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}" if device == "cuda"
             else f"CPU, {torch.get_num_threads()} threads")
    return f"cmcr {__version__}, torch {torch.__version__}, {where}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device: nothing checked (run with --cpu to run the same checks, small, "
              "on the CPU)")
        return 0
    device = "cpu" if args.cpu else "cuda"
    sizes = SIZES[(device, args.quick)]
    report = Report()
    print(f"gpu_check: {environment(device)}; sizes: {sizes}")
    checks = {"embed": lambda folder: check_embed(report, sizes, device, folder, args),
              "train": lambda folder: check_train(report, sizes, device, folder),
              "search": lambda folder: check_search(report, sizes, device, folder)}
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as scratch:
        root = args.keep or Path(scratch)
        for name in args.sections.split(","):
            try:
                checks[name](root / name)
            except Exception as err:  # one broken section must not hide the others' numbers
                traceback.print_exc()
                report.check(False, f"{name}: {type(err).__name__}: {err}")
    if args.json:
        args.json.write_text(json.dumps({"device": environment(device), "quick": args.quick,
                                         "numbers": report.numbers,
                                         "failures": report.failures}, indent=2) + "\n")
    print(f"\n{len(report.failures)} check(s) failed" if report.failures else "\nall checks passed")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
