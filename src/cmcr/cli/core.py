"""Core sub-commands: connect, store, import-official, unify, example."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cmcr.cli.args import POSITIVE, SEED, number

FORMATTER = argparse.RawDescriptionHelpFormatter


def register(subparsers) -> None:
    _register_connect(subparsers)
    _register_store(subparsers)
    _register_import_official(subparsers)
    _register_unify(subparsers)
    _register_example(subparsers)


# -- connect -------------------------------------------------------------------------------------
CONNECT_HELP = """\
Learn C-MCR's two projectors from stored embeddings and save a connected model.

CONFIG is YAML or JSON; store paths in it are relative to the file. Row i of both spaces'
'queries' must be the same item (e.g. the same caption embedded by CLIP and by CLAP); the
memories are unpaired embeddings of the other modalities.

  shared_modality: text
  spaces:
    clip: {queries: emb/clip_text, memory: emb/clip_image, memory_modality: image}
    clap: {queries: emb/clap_text, memory: emb/clap_audio, memory_modality: audio}
  train:  {epochs: 36, batch_size: 4096, lr: 1.0e-3, seed: 0}
  method: {noise_var: 0.004, memory_temperature: 0.01, temperature: 0.01, intra_weight: 0.1}
  projector: {hidden: 1024, out_dim: 512, layers: 2}   # or {preset: clap-clip}

Ablations switch parts off: --set method.use_noise=false, method.use_memory=false,
method.use_intra=false, method.use_pseudo_inter=false.
Recipes: 'recipe: cmcr+' (or --set recipe=cmcr+) fills the method's defaults (docs/recipes.md).

Extend mode (Ex-MCR): 'mode: extend' keeps the base space (extend.base; default: the first
space) frozen and trains a head for the other (leaf) space into it, on queries from the shared
modality and both memories, with the dense alignment objective (configs/ex-clap-clip.yaml).
Its ablations: --set extend.queries=[text], extend.pairs=[text-text,audio-image], and the
method switches above (use_noise, use_intra). Several extensions into one base space chain into
one model with 'cmcr unify'.

OUT receives config.json + model.safetensors (load with cmcr.ConnectedModel.from_pretrained),
connect_config.yaml, run.json, training/metrics.jsonl and training/checkpoint.pt (every epoch).
Pseudo embeddings are retrieved once and cached (OUT/cache unless --cache-dir).

example:
  cmcr connect connect.yaml --out runs/clip-clap --set train.epochs=10 --set train.seed=1
  cmcr connect connect.yaml --out runs/clip-clap --resume     # after an interruption
  cmcr connect connect.yaml --out runs/clip-clap --ray        # memory retrieval on Ray
  cmcr connect configs/ex-clap-clip.yaml --out runs/clap-into-clip   # extend CLAP into CLIP
"""


def _register_connect(subparsers) -> None:
    parser = subparsers.add_parser("connect", help="learn a connection from stored embeddings",
                                   description=CONNECT_HELP, formatter_class=FORMATTER)
    parser.add_argument("config", help="YAML/JSON connect config")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. train.epochs=10 (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/training/checkpoint.pt (same config required)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1")
    parser.add_argument("--cache-dir", default=None, help="where pseudo embeddings are cached")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="train on stores an interrupted 'cmcr embed' left unfinished "
                             "(refused by default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="memory retrieval on Ray (retrieval.engine: ray; pip install "
                             "'cmcr[ray]'): the cluster at ADDRESS, else RAY_ADDRESS, else a new "
                             "local Ray; same results (docs/scale.md)")
    parser.add_argument("--ray-timeout", type=number(0, low_open=True), default=None,
                        metavar="SECONDS", help="with --ray ADDRESS: how long the cluster may take "
                        "to answer before connect stops (retrieval.timeout; default 60)")
    parser.set_defaults(run=run_connect)


def run_connect(args: argparse.Namespace) -> int:
    from cmcr.config import RetrievalConfig, load_connect_config
    from cmcr.errors import ConfigError
    from cmcr.pipeline import connect

    config = load_connect_config(args.config, args.overrides)
    if args.ray is not None:
        config.retrieval = RetrievalConfig(engine="ray",
                                           address=args.ray or config.retrieval.address,
                                           timeout=config.retrieval.timeout)
    elif args.ray_timeout is not None and config.retrieval.engine != "ray":
        raise ConfigError("--ray-timeout is how long a Ray cluster may take to answer: add --ray")
    if args.ray_timeout is not None:
        config.retrieval.timeout = args.ray_timeout
    connect(config, args.out, resume=args.resume, device=args.device, cache_dir=args.cache_dir,
            progress=not args.quiet, allow_incomplete=args.allow_incomplete)
    print(f"saved connected model to {args.out} (load with cmcr.ConnectedModel.from_pretrained)")
    return 0


# -- store ---------------------------------------------------------------------------------------
def _register_store(subparsers) -> None:
    parser = subparsers.add_parser(
        "store", help="inspect embedding stores",
        description="Inspect embedding stores (a store directory or a plain .npy matrix).\n\n"
                    "example:\n  cmcr store info emb/clip_text\n  cmcr store info texts.npy --json",
        formatter_class=FORMATTER)
    actions = parser.add_subparsers(dest="store_command", metavar="ACTION")
    info = actions.add_parser("info", help="print a store's space, modality, rows, dim, dtype",
                              description="Print what a store records and a sample row norm.")
    info.add_argument("path", help="store directory or .npy file")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(run=run_store_info)
    parser.set_defaults(run=lambda args: parser.print_help() or 2)


def run_store_info(args: argparse.Namespace) -> int:
    from cmcr.data.store import open_store

    summary = open_store(args.path).describe()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        width = max(len(key) for key in summary)
        for key, value in summary.items():
            print(f"{key:<{width}}  {value}")
    return 0


# -- import-official -----------------------------------------------------------------------------
IMPORT_HELP = """\
Convert the authors' released projector checkpoints into a cmcr model directory.

C-MCR (one file, two heads, a new joint space):
  clap-clip: clap_clip.pt (Head_A = CLAP side, Head_B = CLIP side) -> spaces 'clap', 'clip'
  ulip-clip: ulip_clip.pt (Head_A = CLIP side, Head_B = ULIP side) -> spaces 'clip', 'ulip'
Ex-MCR (one head per file, each a leaf extended into CLIP, which stays frozen):
  ex-clap:   ex_clap.pt (Head1.*, Head2.mlp1.net1.* ...) -> spaces 'clip' (base), 'clap'
  ex-ulip:   ex_ulip.pt (same layout)                     -> spaces 'clip' (base), 'ulip'
Several Ex-MCR files (one --kind each, in the same order) give one unified model: audio, 3D,
images and texts in CLIP's space.

Files are read with torch.load(weights_only=True): no code in them runs.

example:
  cmcr import-official clap_clip.pt --kind clap-clip --out models/cmcr-clap-clip
  cmcr import-official ex_clap.pt ex_ulip.pt --kind ex-clap --kind ex-ulip --out models/ex-mcr
"""
C_MCR_KINDS = ("clap-clip", "ulip-clip")
EX_MCR_KINDS = ("ex-clap", "ex-ulip")  # the keys of cmcr.extend.official.EXMCR_KINDS


def _register_import_official(subparsers) -> None:
    parser = subparsers.add_parser("import-official", help="convert official C-MCR / Ex-MCR "
                                   "checkpoints", description=IMPORT_HELP, formatter_class=FORMATTER)
    parser.add_argument("checkpoint", nargs="+", help="official .pt file(s)")
    parser.add_argument("--kind", required=True, action="append", choices=C_MCR_KINDS + EX_MCR_KINDS,
                        help="which released checkpoint, once per file: clap-clip, ulip-clip "
                             "(C-MCR), ex-clap, ex-ulip (Ex-MCR heads)")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.set_defaults(run=run_import_official)


def run_import_official(args: argparse.Namespace) -> int:
    from cmcr.errors import ConfigError

    if len(args.kind) != len(args.checkpoint):
        raise ConfigError(f"give one --kind per checkpoint: {len(args.checkpoint)} file(s), "
                          f"{len(args.kind)} --kind")
    if any(kind in C_MCR_KINDS for kind in args.kind) and len(args.kind) > 1:
        raise ConfigError("C-MCR checkpoints (clap-clip, ulip-clip) are imported one at a time; "
                          "only Ex-MCR heads (ex-clap, ex-ulip) combine into one model")
    if len(set(args.kind)) != len(args.kind):
        raise ConfigError(f"each --kind may appear once, got {args.kind}")
    if args.kind[0] in C_MCR_KINDS:
        from cmcr.method.official import import_official

        model = import_official(args.checkpoint[0], args.kind[0])
    else:
        from cmcr.extend.official import import_exmcr

        model = import_exmcr(dict(zip(args.kind, args.checkpoint)))
    model.save_pretrained(args.out)
    print(f"imported {', '.join(args.kind)} ({', '.join(model.space_names)}) into {args.out}")
    return 0


# -- unify ---------------------------------------------------------------------------------------
UNIFY_HELP = """\
Chain extended models (trained with 'mode: extend', or imported Ex-MCR heads) that share one
frozen base space into one unified model: every leaf's modalities land in the base space.

example:
  cmcr unify runs/clap-into-clip runs/ulip-into-clip --out models/unified
  cmcr similarity --model models/unified --space clip=... --space clap=... --audio a.wav --text "a dog"
"""


def _register_unify(subparsers) -> None:
    parser = subparsers.add_parser("unify", help="chain extended models into one unified model",
                                   description=UNIFY_HELP, formatter_class=FORMATTER)
    parser.add_argument("models", nargs="+", help="model directories (same base space)")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.set_defaults(run=run_unify)


def run_unify(args: argparse.Namespace) -> int:
    from cmcr.method.model import ConnectedModel
    from cmcr.extend.unified import leaves, unify

    model = unify([ConnectedModel.from_pretrained(path) for path in args.models])
    model.save_pretrained(args.out)
    print(f"unified {', '.join(leaves(model))} into base space '{model.base_space}': {args.out}")
    return 0


# -- example -------------------------------------------------------------------------------------
EXAMPLE_HELP = """\
Run C-MCR end to end on generated embeddings, offline, in about a minute on 2 CPU cores.

Two generated "spaces" (a CLIP-like text/image one and a CLAP-like text/audio one, each its own
nonlinear map of a shared meaning, with its own modality gap) are connected through texts
alone, then judged on held-out audio-image pairs that the connection never saw, against a
linear map fitted through the texts and against chance.

example:
  cmcr example --out runs/example --seed 1
"""


def _register_example(subparsers) -> None:
    parser = subparsers.add_parser("example", help="end-to-end run on generated embeddings",
                                   description=EXAMPLE_HELP, formatter_class=FORMATTER)
    parser.add_argument("--out", default="runs/example", help="output directory")
    parser.add_argument("--seed", type=SEED, default=0,
                        help="seed of the generated spaces and of training (default: 0)")
    parser.add_argument("--epochs", type=POSITIVE, default=20, help="training epochs (default: 20)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a connect config key")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run_example_command)


def run_example_command(args: argparse.Namespace) -> int:
    from cmcr.world.example import format_table, run_example

    metrics = run_example(args.out, seed=args.seed, epochs=args.epochs, overrides=args.overrides,
                          progress=not args.quiet)
    print(format_table(metrics["audio_to_image"],
                       f"audio -> image retrieval on {metrics['test_pairs']} held-out pairs "
                       "never seen in training (percent)"))
    print(f"\nwrote {Path(args.out) / 'metrics.json'} and the model in {Path(args.out) / 'model'}")
    return 0
