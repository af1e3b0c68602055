"""Encoder sub-commands: embed (files -> store), similarity (files -> joint-space table),
convert (an encoder's original checkpoint -> a folder a space loads)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cmcr.cli.args import COUNT, POSITIVE, number

FORMATTER = argparse.RawDescriptionHelpFormatter


def register(subparsers) -> None:
    _register_embed(subparsers)
    _register_similarity(subparsers)
    _register_convert(subparsers)


# -- convert -------------------------------------------------------------------------------------
CONVERT_HELP = """\
Convert LAION-CLAP's own checkpoint (630k-fusion-best.pt, 630k-audioset-best.pt, ...; HTSAT
audio tower, RoBERTa text tower, fused or not) into a transformers ClapModel folder that
'--space clap:OUT' loads. The .pt file is read with torch.load(weights_only=True): tensors only,
no code in it runs. Every key is mapped or refused by name; the embeddings equal the laion_clap
package's (docs/encoders.md). The tokenizer is roberta-base's (cached, reachable, or a folder).

example:
  cmcr convert laion-clap 630k-fusion-best.pt models/laion-clap-630k-fusion
  cmcr embed --space clap:models/laion-clap-630k-fusion --modality audio --input audioset/ --out emb/clap_audio
"""


def _register_convert(subparsers) -> None:
    parser = subparsers.add_parser("convert", help="an original encoder checkpoint -> a space folder",
                                   description=CONVERT_HELP, formatter_class=FORMATTER)
    parser.add_argument("source_format", choices=["laion-clap"], help="what CHECKPOINT is")
    parser.add_argument("checkpoint", help="the original .pt file")
    parser.add_argument("out", help="the folder to write")
    parser.add_argument("--tokenizer", default="roberta-base",
                        help="RoBERTa tokenizer: hub id or folder (default: roberta-base)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    parser.set_defaults(run=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from cmcr.spaces.laion_clap import convert_laion_clap

    out = convert_laion_clap(args.checkpoint, args.out, tokenizer=args.tokenizer,
                             overwrite=args.overwrite)
    print(f"wrote {out}: use it as --space clap:{out}")
    return 0


# -- embed ---------------------------------------------------------------------------------------
EMBED_HELP = """\
Embed files (or texts) with a frozen space into an embedding store, for 'cmcr connect'.

INPUT is a directory (searched recursively, sorted, filtered by extension), a .txt list of
paths (relative to the list), one file, or for --modality text a .txt (one text per line; id =
line number), .csv, .jsonl or .parquet (--column; id = row number or --id-column). Store ids are
paths relative to INPUT, so they are stable across machines.

Files are decoded in --workers processes while the model runs; CUDA and float16 are used when
present. An interrupted run resumes where it stopped when re-run with the same arguments, and
gives exactly the store an uninterrupted run gives. Files that cannot be read are listed in
STORE/errors.jsonl (path and reason) and in the summary; the others go on.

Spaces: clip:NAME_OR_DIR (image, text), clap:NAME_OR_DIR (audio, text),
open_clip:ARCH:TAG_OR_PATH (image, text; pip install 'cmcr[open-clip]'), precomputed:DIR.

examples:
  cmcr embed --space clip:openai/clip-vit-base-patch32 --modality image --input imagenet/ --out emb/clip_image
  cmcr embed --space clap:laion/clap-htsat-fused --modality audio --input audioset/ --out emb/clap_audio
  cmcr embed --space open_clip:ViT-H-14:laion2b_s32b_b79k --modality image --input coco/ --out emb/clip_image
  cmcr embed --space clip:openai/clip-vit-base-patch32 --modality text --input captions.csv --column caption --out emb/clip_text
  cmcr embed --space clip:openai/clip-vit-base-patch32 --modality image --input s3_images.parquet --out emb/clip_image --ray auto
"""


def _register_embed(subparsers) -> None:
    parser = subparsers.add_parser("embed", help="embed files with CLIP/CLAP into a store",
                                   description=EMBED_HELP, formatter_class=FORMATTER)
    parser.add_argument("--space", required=True, help="KIND:NAME_OR_PATH, e.g. clip:openai/clip-vit-base-patch32")
    parser.add_argument("--modality", required=True, choices=["image", "audio", "text"],
                        help="what INPUT holds (a video gives its middle frame or its audio track)")
    parser.add_argument("--input", required=True, help="directory, file list, file, or text table")
    parser.add_argument("--out", required=True, help="output store directory")
    parser.add_argument("--batch-size", type=POSITIVE, default=64, help="items a batch (default: 64)")
    parser.add_argument("--workers", type=COUNT, default=None,
                        help="decoding processes (default: CPU cores - 1, at most 8; 0: none)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:1")
    parser.add_argument("--dtype", default="auto", help="auto (float16 on CUDA), float32, float16, bfloat16")
    parser.add_argument("--store-dtype", default="float32", choices=["float32", "float16"],
                        help="dtype of the stored rows; float16 halves the disk (default: float32)")
    parser.add_argument("--shard-rows", type=POSITIVE, default=65536, help="rows per store shard")
    parser.add_argument("--column", default=None, help="text column of a .csv/.jsonl/.parquet")
    parser.add_argument("--id-column", default=None, help="id column of a .csv/.jsonl/.parquet")
    parser.add_argument("--ext", action="append", default=None, metavar="EXT",
                        help="only files with this extension (repeatable), e.g. --ext jpg")
    parser.add_argument("--frame-time", type=number(0), default=None,
                        help="seconds into a video for its frame (default: the middle)")
    parser.add_argument("--overwrite", action="store_true", help="replace a complete store")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="decode and encode on Ray (pip install 'cmcr[ray]'; docs/scale.md): "
                             "the cluster at ADDRESS, else RAY_ADDRESS, else a new local Ray; the "
                             "same store, byte for byte. INPUT may then also be a .csv/.jsonl/"
                             ".parquet file list (--column, default 'path') and list URIs (s3://)")
    parser.add_argument("--ray-timeout", type=number(0, low_open=True), default=60.0,
                        metavar="SECONDS", help="with --ray ADDRESS: how long the cluster may take "
                        "to answer before the run stops with an error (default: 60)")
    parser.add_argument("--actors", type=POSITIVE, default=None,
                        help="with --ray: encoding actors (default: one per GPU, else one per CPU "
                             "for 3/4 of the CPUs)")
    parser.add_argument("--gpus-per-actor", type=number(0), default=None,
                        help="with --ray: GPUs each actor holds, e.g. 0.5 for two a GPU "
                             "(default: 1 when the cluster has GPUs, else 0)")
    parser.set_defaults(run=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    from cmcr.embed import ERRORS_FILE, collect_inputs, embed_items
    from cmcr.spaces import load_space

    options: dict[str, Any] = {"device": args.device, "dtype": args.dtype}
    if args.frame_time is not None:
        options["frame_time"] = args.frame_time
    if args.ray is None and (args.actors is not None or args.gpus_per_actor is not None):
        from cmcr.errors import ConfigError

        raise ConfigError("--actors and --gpus-per-actor place Ray actors: add --ray")
    space = load_space(args.space, **options)
    if args.ray is not None:
        summary = _embed_on_ray(args, options)
    else:
        items = collect_inputs(args.input, args.modality, column=args.column,
                               id_column=args.id_column, extensions=args.ext)
        summary = embed_items(space, args.modality, items, args.out, batch_size=args.batch_size,
                              workers=args.workers, shard_rows=args.shard_rows,
                              store_dtype=args.store_dtype, overwrite=args.overwrite,
                              progress=not args.quiet)
    resumed = f" (resumed at item {summary.resumed_at})" if summary.resumed_at else ""
    print(f"stored {summary.rows} of {summary.items} {args.modality} embeddings ({space.dim}-d, "
          f"{space.name}) in {summary.store}{resumed}; {summary.items_per_second:.1f} items/s")
    if summary.errors:
        print(f"{len(summary.errors)} could not be read (all listed in {summary.store / ERRORS_FILE}):")
        for error in summary.errors[:20]:
            print(f"  {error['id']}: {error['reason']}")
        if len(summary.errors) > 20:
            print(f"  ... and {len(summary.errors) - 20} more")
    return 0


def _embed_on_ray(args: argparse.Namespace, options: dict[str, Any]) -> Any:
    from cmcr.distributed import embed_on_ray, list_inputs

    items = list_inputs(args.input, args.modality, column=args.column, id_column=args.id_column,
                        extensions=args.ext)
    return embed_on_ray(args.space, args.modality, items, args.out, address=args.ray or None,
                        space_options=options, batch_size=args.batch_size, actors=args.actors,
                        gpus_per_actor=args.gpus_per_actor, shard_rows=args.shard_rows,
                        store_dtype=args.store_dtype, overwrite=args.overwrite,
                        progress=not args.quiet, ray_timeout=args.ray_timeout)


# -- similarity ----------------------------------------------------------------------------------
SIMILARITY_HELP = """\
Embed images, audio and texts into a connected model's joint space and print their similarities:
softmax(10 * cos) over each row's columns (as the official C-MCR demo prints) and the raw cosine.
Images go through the image space, audio through the audio space, texts through the side the
model names for its shared modality (--text-space to choose).

example (the official demo, with the real weights):
  cmcr import-official clap_clip.pt --kind clap-clip --out models/cmcr-clap-clip
  cmcr similarity --model models/cmcr-clap-clip \\
      --space clip=clip:openai/clip-vit-base-patch32 --space clap=clap:laion/clap-htsat-fused \\
      --image toilet.jpeg BBQ.jpeg train.jpeg --audio toilet.wav BBQ.wav train.wav \\
      --text "a toilet" "BBQ" "a train"
"""


def _register_similarity(subparsers) -> None:
    parser = subparsers.add_parser("similarity", help="similarity table in a connected model's space",
                                   description=SIMILARITY_HELP, formatter_class=FORMATTER)
    parser.add_argument("--model", required=True, help="connected model directory")
    parser.add_argument("--space", action="append", default=[], metavar="NAME=KIND:NAME_OR_PATH",
                        help="the frozen space behind each of the model's spaces (repeatable)")
    parser.add_argument("--image", nargs="+", default=[], help="image (or video) files")
    parser.add_argument("--audio", nargs="+", default=[], help="audio (or video) files")
    parser.add_argument("--text", nargs="+", default=[], help="texts")
    parser.add_argument("--text-space", default=None, help="which of the model's spaces embeds texts")
    parser.add_argument("--scale", type=number(0, low_open=True), default=10.0, help="the softmax's scale, as the official demo prints it (default: 10)")
    parser.add_argument("--device", default="auto",
                        help="where the encoders run: auto (CUDA if present), cpu, cuda:1 (default: auto)")
    parser.add_argument("--dtype", default="auto",
                        help="encoder dtype: auto (float16 on CUDA, else float32), float32, float16, "
                             "bfloat16 (default: auto)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(run=run_similarity)


def parse_space_options(values: list[str]) -> dict[str, str]:
    from cmcr.errors import ConfigError

    spaces = {}
    for value in values:
        name, sep, spec = value.partition("=")
        if not sep or not name or not spec:
            raise ConfigError(f"--space '{value}' must be NAME=KIND:NAME_OR_PATH, "
                              "e.g. clip=clip:openai/clip-vit-base-patch32")
        spaces[name] = spec
    return spaces


PAIRS = (("image", "text"), ("audio", "text"), ("audio", "image"))


def run_similarity(args: argparse.Namespace) -> int:
    from cmcr.encoders import JointEmbedder, similarity
    from cmcr.errors import ConfigError
    from cmcr.method.model import ConnectedModel
    from cmcr.spaces import load_space

    given = {"image": args.image, "audio": args.audio, "text": args.text}
    if sum(bool(v) for v in given.values()) < 2:
        raise ConfigError("give at least two of --image, --audio, --text")
    model = ConnectedModel.from_pretrained(args.model)
    spaces = {name: load_space(spec, device=args.device, dtype=args.dtype)
              for name, spec in parse_space_options(args.space).items()}
    embedder = JointEmbedder(model, spaces, text_space=args.text_space)
    joint = embedder(images=args.image, audio=args.audio, texts=args.text)
    labels = {"image": [Path(p).name for p in args.image], "audio": [Path(p).name for p in args.audio],
              "text": list(args.text)}
    tables = []
    for rows, columns in PAIRS:
        if rows in joint and columns in joint:
            cosine, soft = similarity(joint[rows], joint[columns], args.scale)
            tables.append({"rows": rows, "columns": columns, "row_labels": labels[rows],
                           "column_labels": labels[columns], "softmax": soft.tolist(),
                           "cosine": cosine.tolist()})
    if args.json:
        print(json.dumps({"scale": args.scale, "tables": tables}, indent=2))
        return 0
    for table in tables:
        title = f"{table['rows']} x {table['columns']}"
        print(format_matrix(f"{title}: softmax({args.scale:g} * cos) over each row", table, "softmax"))
        print(format_matrix(f"{title}: cosine", table, "cosine"))
    return 0


COLUMN_LABEL_LIMIT = 40  # longer column labels end in "…"


def format_matrix(title: str, table: dict[str, Any], key: str) -> str:
    """A labelled matrix as aligned text: each column as wide as its whole label."""
    rows = table["row_labels"]
    columns = [c if len(c) <= COLUMN_LABEL_LIMIT else c[:COLUMN_LABEL_LIMIT - 1] + "…"
               for c in table["column_labels"]]
    widths = [max(6, len(c)) for c in columns]
    width = max([len(r) for r in rows] + [4])
    lines = [title, " " * width + "".join(f"  {c:>{w}}" for c, w in zip(columns, widths))]
    for label, values in zip(rows, table[key]):
        lines.append(f"{label:<{width}}" + "".join(f"  {v:>{w}.3f}" for v, w in zip(values, widths)))
    return "\n".join(lines) + "\n"
