"""The built-in world: ``cmcr demo`` and ``cmcr world generate|train-spaces|preview``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cmcr.cli.args import POSITIVE, SEED, WORLD_SCALE, number

FORMATTER = argparse.RawDescriptionHelpFormatter

DEMO_HELP = """\
Run the whole C-MCR story offline in the built-in generated world (about four and a half
minutes and 490 MB of disk on an idle 2-core machine, 10-12 minutes when other jobs share
it; re-running reuses the world and the embeddings already in OUT). --paper trains with the
paper's own head, batch and epochs instead (about 30 minutes on 2 cores).

A toy CLIP (a transformers CLIPModel trained on images and look captions) and a toy CLAP (a
ClapModel trained on audio and sound captions, on different data) ship inside cmcr. The demo
generates the world, embeds it with both, connects them through texts plus unpaired image and
audio memories only, and judges audio<->image retrieval on held-out pairs no stage ever saw,
against chance, a text pivot, a linear map fitted through texts, C-MCR with each part removed,
the cmcr+ recipe (and it without each of its additions), and a paired upper bound (the same
projectors on true pairs, early-stopped on held-out pairs); plus retention, sound-source
localisation, counterfactual recognition and Ex-MCR's extend mode. It also measures both toy
spaces' geometry beside real CLIP's (the same numbers 'cmcr inspect' gives for your stores).

OUT receives metrics.json (schema in the README), report.md, figures (retrieval_grid.png,
similarity_matrix.png, localisation.png, localisation_values.png, joint_space.png), and index/:
a search index of the test images and clips, to open with 'cmcr serve OUT'.

Every retrieval number comes with a 95% bootstrap interval over the test queries, and each
paper component (noise, memory, pseudo-pair InfoNCE, intra) with its measured effect (C-MCR minus
the ablation without it) and a paired interval. --seeds runs the demo on several world seeds
(OUT/seed-N, reused when finished) and reports the mean and spread over them.

example:
  cmcr demo --out runs/demo
  cmcr serve runs/demo          # then open http://127.0.0.1:8000 and drop a world clip
  cmcr demo --out runs/demo-seed3 --seed 3 --scale 0.5
  cmcr demo --out runs/seeds --seeds 0,1,2,3,4
  cmcr demo --out runs/paper --paper
"""


def seed_list(text: str) -> list[int]:
    """``--seeds 0,1,2`` -> [0, 1, 2]: distinct world seeds, in the order given."""
    try:
        seeds = [SEED(part.strip()) for part in text.split(",") if part.strip()]
    except (argparse.ArgumentTypeError, ValueError):
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated whole numbers such as "
                                         f"0,1,2; got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds needs distinct seeds such as 0,1,2; got {text!r}")
    return seeds


def register(subparsers) -> None:
    demo = subparsers.add_parser("demo", help="run C-MCR end to end in the built-in world",
                                 description=DEMO_HELP, formatter_class=FORMATTER)
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    chosen = demo.add_mutually_exclusive_group()
    chosen.add_argument("--seed", type=SEED, default=0, help="world and training seed (default: 0)")
    chosen.add_argument("--seeds", type=seed_list, default=None, metavar="S1,S2,...",
                        help="run every listed world seed into OUT/seed-N (finished ones are "
                             "reused) and report the mean and spread over them")
    demo.add_argument("--scale", type=WORLD_SCALE, default=1.0,
                      help="multiply every world split's size (e.g. 0.25 for a quick run)")
    demo.add_argument("--paper", action="store_true",
                      help="train as the paper does: the 512-1024-512 head, batch 4096, 36 epochs "
                           "(tau 0.01, sigma^2 0.004 and lambda 0.1 are the default's too); "
                           "C-MCR, cmcr+ and their paired upper bounds, about 30 minutes on 2 cores")
    demo.add_argument("--extend-ablations", action="store_true",
                      help="also train extend mode's two ablations (README section 3a)")
    demo.add_argument("--epochs", type=POSITIVE, default=None,
                      help="connection epochs (default: 12; 36 with --paper)")
    demo.add_argument("--spaces", default=None,
                      help="directory with toy-clip/ and toy-clap/ (default: the shipped ones)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=run_demo_command)
    _register_world(subparsers)


def _register_world(subparsers) -> None:
    parser = subparsers.add_parser(
        "world", help="generate the built-in world, or retrain its toy spaces",
        description="The built-in generated world.\n\nexample:\n"
                    "  cmcr world generate --out runs/world --seed 0\n"
                    "  cmcr world preview runs/world --out preview.png\n"
                    "  cmcr --threads 1 world train-spaces --out runs/spaces   # the shipped weights",
        formatter_class=FORMATTER)
    actions = parser.add_subparsers(dest="world_command", metavar="ACTION")
    generate = actions.add_parser("generate", help="write the world's images, audio and captions",
                                  description="example:\n  cmcr world generate --out runs/world",
                                  formatter_class=FORMATTER)
    generate.add_argument("--out", required=True, help="folder to write the world into")
    generate.add_argument("--seed", type=SEED, default=0,
                          help="what the world's scenes, clips and captions are drawn from (default: 0)")
    generate.add_argument("--scale", type=WORLD_SCALE, default=1.0,
                          help="multiply every split's size, e.g. 0.25 for a quick world (default: 1)")
    generate.set_defaults(run=run_world_generate)
    preview = actions.add_parser("preview", help="a PNG grid of images and spectrograms",
                                 description="example:\n  cmcr world preview runs/world --out p.png",
                                 formatter_class=FORMATTER)
    preview.add_argument("world")
    preview.add_argument("--out", required=True, help="PNG file to write (a grid of scenes and spectrograms)")
    preview.set_defaults(run=run_world_preview)
    train = actions.add_parser(
        "train-spaces", help="train the toy CLIP and CLAP from scratch",
        description="Generate the seed-0 world and train the toy CLIP and CLAP on their disjoint "
                    "splits: this is how the weights shipped in cmcr were made (one thread, "
                    "13-20 minutes on a 2-core CPU; the same bytes with --threads 1 on the same "
                    "kind of CPU).\n\nexample:\n  cmcr --threads 1 world train-spaces --out runs/spaces\n"
                    "  cmcr demo --spaces runs/spaces --out runs/demo",
        formatter_class=FORMATTER)
    train.add_argument("--out", required=True, help="receives toy-clip/ and toy-clap/")
    train.add_argument("--world", default=None, help="an existing world (default: OUT/world)")
    train.add_argument("--epochs", type=POSITIVE, default=25,
                       help="training epochs of each toy space (default: 25, as shipped)")
    train.add_argument("--logit-scale", type=number(1.0, 1000.0), default=None, metavar="S",
                       help="train both spaces at this fixed, frozen logit scale (e.g. 100, "
                            "CLIP's cap); default: learned, as the shipped spaces were")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(run=run_train_spaces)
    parser.set_defaults(run=lambda args: parser.print_help() or 2)


def _sizes(scale: float):
    from dataclasses import fields

    from cmcr.world.generate import WorldSizes

    default = WorldSizes()
    fixed = {"image_size", "sample_rate"}
    return WorldSizes(**{f.name: (getattr(default, f.name) if f.name in fixed
                                  else max(8, int(round(getattr(default, f.name) * scale))))
                         for f in fields(default)})


def run_demo_command(args: argparse.Namespace) -> int:
    from cmcr.world.demo import DemoSettings, paper_settings, run_demo
    from cmcr.world.report import summary_text

    settings = DemoSettings(seed=args.seed, sizes=_sizes(args.scale), spaces_dir=args.spaces)
    settings.extend_ablations = args.extend_ablations
    if args.paper:
        settings = paper_settings(settings)
    if args.epochs is not None:
        settings.epochs = args.epochs
    if args.seeds is not None:
        return run_seeds_command(args, settings)
    if not args.quiet:
        from cmcr.runtime.threads import cores_note

        print(f"cmcr demo: {cores_note()}; about 5 minutes from scratch on 2 free cores, "
              "10-12 when four other jobs share them", file=sys.stderr, flush=True)
    results = run_demo(args.out, settings, progress=not args.quiet)
    print(summary_text(results))
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in results["seconds"].items())
    print(f"\ntime per stage: {stages} (total {sum(results['seconds'].values()):.0f} s)")
    print(f"\nwrote {Path(args.out) / 'report.md'}, metrics.json and figures in {args.out}")
    print(f"search it in a browser: cmcr serve {args.out}   (then open http://127.0.0.1:8000)")
    return 0


def run_seeds_command(args: argparse.Namespace, settings) -> int:
    import time

    from cmcr.world.report import seeds_summary_text
    from cmcr.world.seeds import run_seeds

    start = time.perf_counter()
    summary = run_seeds(args.out, settings, args.seeds, progress=not args.quiet)
    print(seeds_summary_text(summary))
    print(f"\ntotal {time.perf_counter() - start:.0f} s; wrote {Path(args.out) / 'report.md'} and "
          f"metrics.json (each seed's run in {Path(args.out) / 'seed-N'})")
    return 0


def run_world_generate(args: argparse.Namespace) -> int:
    from cmcr.world.generate import generate_world

    world = generate_world(args.out, seed=args.seed, sizes=_sizes(args.scale))
    print(", ".join(f"{name}: {len(records)}" for name, records in world.splits.items()))
    return 0


def run_world_preview(args: argparse.Namespace) -> int:
    from cmcr.world.preview import save_preview

    print(f"wrote {save_preview(args.world, args.out)}")
    return 0


def run_train_spaces(args: argparse.Namespace) -> int:
    from cmcr.world.generate import generate_world
    from cmcr.world.toy_spaces import ToyTraining, train_spaces

    world = args.world or str(Path(args.out) / "world")
    if args.world is None:
        generate_world(world, seed=0, progress=not args.quiet)
    training = ToyTraining(epochs=args.epochs, logit_scale=args.logit_scale)
    dirs = train_spaces(world, args.out, training, training, progress=not args.quiet)
    print(f"trained toy spaces: {dirs['clip']}, {dirs['clap']}")
    return 0
