"""The eval sub-command: a connected model (or one frozen space) on a published benchmark."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cmcr.cli.args import POSITIVE

FORMATTER = argparse.RawDescriptionHelpFormatter
# The keys of cmcr.eval.tasks.TASKS, listed here so that building the parser imports no torch.
TASK_NAMES = ("retrieval", "localization", "counterfactual", "zero-shot", "text-retrieval")

EVAL_HELP = """\
Evaluate a connected model, or one frozen space, on a benchmark in its published layout.

TASK          datasets
  retrieval       ave, flickr-soundnet, vggss, music-solo     (audio <-> image, R@1/5/10, mAP)
  localization    flickr-soundnet, vggss, music-solo          (cIoU@0.5, mean cIoU, AUC)
  counterfactual  flickr-soundnet-extended, vggss-extended    (AP, max-F1, precision/accuracy)
  zero-shot       esc50, imagenet, modelnet40                 (top-1, top-5)
  text-retrieval  audiocaps, clotho, coco                     (text <-> item, R@1/5/10, mAP)

--protocol picks how a dataset is scored when its benchmark has more than one reference (each
protocol follows a public file, named in docs/eval.md; the default is listed first); every
table and JSON says which ran:
{protocols}

--model is a cmcr model directory (from 'cmcr connect', 'cmcr unify' or 'cmcr
import-official'), or space:NAME to evaluate the frozen space given as --space NAME=... without
any projection (e.g. CLIP's own image-text retrieval, to measure how much the joint space
retains). A unified model (extend mode) needs --space for its base and for the leaves the
task's modalities go through (audio: clap, point clouds: ulip).
Each --root layout is documented in the reader (src/cmcr/eval/datasets/) and docs/eval.md.

With --out, results go to OUT/TASK-DATASET.json (localisation adds a PNG of heat maps) and
frozen embeddings are cached under OUT/cache, so re-runs and other models reuse them.

examples:
  cmcr eval retrieval --model models/cmcr-clap-clip --dataset vggss --root data/VGGSS \\
      --space clip=clip:openai/clip-vit-base-patch32 --space clap=clap:laion/clap-htsat-fused \\
      --out runs/eval
  cmcr eval localization --model models/cmcr-clap-clip --dataset flickr-soundnet \\
      --root data/Flickr-SoundNet --space clip=clip-vit-b32 --space clap=clap-htsat-fused --out runs/eval
  cmcr eval zero-shot --model space:clap --space clap=clap:laion/clap-htsat-fused \\
      --dataset esc50 --root data/ESC-50 --out runs/eval
  cmcr eval zero-shot --model models/cmcr-ulip-clip --dataset modelnet40 \\
      --root data/modelnet40_normal_resampled --space clip=clip-vit-b32 \\
      --space ulip=precomputed:emb/ulip_modelnet40 --out runs/eval
"""


def protocol_help() -> str:
    """One line per dataset: its protocols, the default first (cmcr.eval.protocols, no torch)."""
    from cmcr.eval.protocols import PROTOCOLS

    return "\n".join(f"  {name:<25} {', '.join(p.name for p in known)}"
                     for name, known in PROTOCOLS.items())


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("eval", help="evaluate on the paper's benchmarks",
                                   description=EVAL_HELP.format(protocols=protocol_help()),
                                   formatter_class=FORMATTER)
    parser.add_argument("task", choices=TASK_NAMES, help="what to measure")
    parser.add_argument("--model", required=True, help="model directory, or space:NAME")
    parser.add_argument("--dataset", required=True, help="benchmark name (see the table above)")
    parser.add_argument("--root", required=True, help="the dataset's folder, in its published layout")
    parser.add_argument("--space", action="append", default=[], metavar="NAME=KIND:NAME_OR_PATH",
                        help="the frozen space behind each of the model's spaces (repeatable); "
                             "KIND:NAME_OR_PATH, or a short name: clip-vit-b32, clap-htsat-fused, "
                             "clap-htsat-unfused, clip:toy, clap:toy")
    parser.add_argument("--text-space", default=None,
                        help="which of the model's spaces embeds texts (default: the model's choice)")
    parser.add_argument("--out", default=None, help="folder for JSON results, figures and the cache")
    parser.add_argument("--batch-size", type=POSITIVE, default=32,
                        help="items a batch when the frozen spaces embed the data (default: 32)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:1")
    parser.add_argument("--dtype", default="auto", help="auto (float16 on CUDA), float32, ...")
    parser.add_argument("--protocol", default=None, metavar="NAME",
                        help="the dataset's scoring protocol (default: the dataset's default; "
                             "names above and in docs/eval.md)")
    parser.add_argument("--limit", type=POSITIVE, default=None,
                        help="only N items: a deterministic subset stratified by class (or by "
                             "sounding/non-sounding), else evenly spaced through the list")
    parser.add_argument("--patches", choices=["tokens", "values"], default="tokens",
                        help="localisation: CLIP patch tokens (default) or the last layer's value "
                             "path (MaskCLIP), which usually gives sharper heat maps")
    parser.add_argument("--no-cache", action="store_true", help="re-encode even when cached")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run_eval)


def build_embedder(args: argparse.Namespace, dataset_name: str, cache_dir: Path | None) -> Any:
    from cmcr.cli.encoders import parse_space_options
    from cmcr.errors import ConfigError
    from cmcr.eval.embedding import EvalEmbedder
    from cmcr.method.model import ConnectedModel
    from cmcr.spaces import load_space

    specs = parse_space_options(args.space)
    options = {"device": args.device, "dtype": args.dtype}
    common = {"cache_dir": cache_dir, "dataset": dataset_name, "batch_size": args.batch_size,
              "progress": not args.quiet, "patch_mode": args.patches}
    if args.model.startswith("space:"):
        name = args.model[len("space:"):]
        spec = specs.get(name, name)
        if name not in specs and ":" not in name:
            raise ConfigError(f"--model space:{name} needs --space {name}=KIND:NAME_OR_PATH "
                              f"(given: {', '.join(specs) or 'none'})")
        return EvalEmbedder({name: load_space(spec, **options)}, None, **common)
    model = ConnectedModel.from_pretrained(args.model, device="cpu")
    spaces = {name: load_space(spec, **options) for name, spec in specs.items()}
    return EvalEmbedder(spaces, model, text_space=args.text_space, **common)


def run_eval(args: argparse.Namespace) -> int:
    from cmcr.eval.datasets import load_dataset
    from cmcr.eval.tasks import run_task

    dataset = load_dataset(args.dataset, args.root, args.protocol)
    if args.limit is not None:
        dataset = dataset.subset(args.limit)
    out = Path(args.out).expanduser() if args.out else None
    cache_dir = out / "cache" if out is not None and not args.no_cache else None
    embedder = build_embedder(args, dataset.name, cache_dir)
    result = run_task(args.task, dataset, embedder)
    print(format_table(f"{args.task} on {dataset.name}, protocol {result.protocol} ({result.count} "
                       "items" + (f", {len(dataset.skipped)} listed items absent" if dataset.skipped
                                  else "") + "; percent)", result.rows))
    for note in result.notes:
        print(f"note: {note}")
    if out is not None:
        written = write_results(out, args, dataset, result)
        print("\n".join(f"wrote {path}" for path in written))
    return 0


def write_results(out: Path, args: argparse.Namespace, dataset: Any, result: Any) -> list[Path]:
    """OUT/TASK-DATASET.json (and .png for localisation)."""
    from cmcr.eval.protocols import resolve_protocol
    from cmcr.version import __version__

    out.mkdir(parents=True, exist_ok=True)
    stem = f"{result.task}-{result.dataset}"
    protocol = resolve_protocol(result.dataset, result.protocol)
    record = {"task": result.task, "dataset": result.dataset, "root": str(dataset.root),
              "protocol": {"name": protocol.name, "reference": protocol.reference,
                           "summary": protocol.summary},
              "model": args.model, "spaces": args.space, "text_space": args.text_space,
              "items": result.count, "skipped": dataset.skipped, "notes": result.notes,
              "limit": args.limit, "metrics": result.rows, "cmcr_version": __version__}
    if "templates" in result.figure:
        record["templates"] = result.figure["templates"]
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    written = [json_path]
    if result.task == "localization":
        from cmcr.eval.figures import plot_heatmaps

        figure = result.figure
        titles = [f"{i[:14]} cIoU {c:.2f}" for i, c in zip(figure["ids"], figure["cious"])]
        written.append(plot_heatmaps(figure["images"], figure["heatmaps"], figure["boxes"], titles,
                                     out / f"{stem}.png",
                                     suptitle=f"{result.dataset}, protocol {result.protocol}"))
    return written


def format_table(title: str, rows: dict[str, dict[str, float]]) -> str:
    """Metric rows as an aligned text table."""
    columns = list(dict.fromkeys(key for metrics in rows.values() for key in metrics))
    width = max([len(name) for name in rows] + [6])
    lines = [title, f"{'':<{width}}" + "".join(f"  {c:>9}" for c in columns)]
    for name, metrics in rows.items():
        cells = "".join(f"  {metrics[c]:>9.2f}" if c in metrics else f"  {'':>9}" for c in columns)
        lines.append(f"{name:<{width}}" + cells)
    return "\n".join(lines)
