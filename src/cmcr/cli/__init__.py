"""The ``cmcr`` command line: a thin layer over the library; ``main(argv)`` is what tests call.

Each group of sub-commands lives in its own module with a ``register(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from cmcr.errors import CmcrError
from cmcr.version import __version__

EPILOG = """\
examples:
  cmcr demo --out runs/demo                  # the whole C-MCR story in the built-in world (offline)
  cmcr example --out runs/example            # connect two generated spaces end to end (offline)
  cmcr connect connect.yaml --out runs/clip-clap --set train.epochs=10
  cmcr store info emb/clip_text
  cmcr index build --model runs/clip-clap --store emb/clip_image --store emb/clap_audio --out idx
  cmcr search idx --audio dog.wav --modality image      # sounds -> pictures, no pairs needed
  cmcr serve runs/demo                                  # the search page on the demo's world
  cmcr import-official clap_clip.pt --kind clap-clip --out models/clap-clip

Run 'cmcr COMMAND --help' for each command's options."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmcr",
        description="Connect multi-modal contrastive representations (C-MCR): learn a joint space "
                    "for two pretrained spaces that share a modality, without paired data.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cmcr {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_GROUPS:
        importlib.import_module(module_name).register(subparsers)
    return parser


# Groups of sub-commands; each module has register(subparsers) and imports its heavy
# dependencies only when one of its commands runs.
COMMAND_GROUPS: list[str] = ["cmcr.cli.world", "cmcr.cli.core", "cmcr.cli.encoders",
                             "cmcr.cli.evaluate", "cmcr.cli.search"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.run(args) or 0)
    except CmcrError as err:
        print(f"cmcr: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cmcr: interrupted; long jobs resume where they stopped when re-run "
              "(cmcr connect: add --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
