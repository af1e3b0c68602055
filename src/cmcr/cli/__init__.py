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
  cmcr inspect emb/clip_image emb/clip_text   # your space's geometry beside real CLIP's, a recipe
  cmcr study regimes --out runs/regimes      # which recipe wins at which geometry (generated data)
  cmcr demo --threads 1                      # leave the other cores to other jobs
  cmcr index build --model runs/clip-clap --store emb/clip_image --store emb/clap_audio --out idx
  cmcr search idx --audio dog.wav --modality image      # sounds -> pictures, no pairs needed
  cmcr serve runs/demo                                  # the search page on the demo's world
  cmcr import-official clap_clip.pt --kind clap-clip --out models/clap-clip
  cmcr connect configs/ex-clap-clip.yaml --out runs/clap-into-clip   # Ex-MCR: extend CLAP into CLIP
  cmcr unify runs/clap-into-clip runs/ulip-into-clip --out models/unified

Run 'cmcr COMMAND --help' for each command's options."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmcr",
        description="Connect multi-modal contrastive representations (C-MCR): learn a joint space "
                    "for two pretrained spaces that share a modality, without paired data.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cmcr {__version__}")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for the work (default: OMP_NUM_THREADS if set, else the "
                             "cores this process may use); accepted before or after COMMAND")
    parser.add_argument("--debug", action="store_true",
                        help="show Python's traceback when a command fails (normally one line); "
                             "accepted before or after COMMAND")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_GROUPS:
        importlib.import_module(module_name).register(subparsers)
    return parser


# Groups of sub-commands; each module has register(subparsers) and imports its heavy
# dependencies only when one of its commands runs.
COMMAND_GROUPS: list[str] = ["cmcr.cli.world", "cmcr.cli.core", "cmcr.cli.encoders",
                             "cmcr.cli.evaluate", "cmcr.cli.search", "cmcr.cli.study"]


def pop_threads_option(argv: list[str]) -> tuple[int | None, list[str]]:
    """``--threads N`` / ``--threads=N`` anywhere in ``argv`` -> (N, the other arguments)."""
    rest, threads, index = [], None, 0
    while index < len(argv):
        item = argv[index]
        if item == "--threads" or item.startswith("--threads="):
            value = item.partition("=")[2] if "=" in item else (
                argv[index + 1] if index + 1 < len(argv) else "")
            index += 1 if "=" in item else 2
            if not value.isdigit() or int(value) < 1:
                raise CmcrError(f"--threads takes a positive whole number, got {value!r}")
            threads = int(value)
            continue
        rest.append(item)
        index += 1
    return threads, rest


def pop_debug_flag(argv: list[str]) -> tuple[bool, list[str]]:
    """``--debug`` anywhere in ``argv`` (before a ``--``) -> (True, the other arguments)."""
    end = argv.index("--") if "--" in argv else len(argv)
    rest = [item for item in argv[:end] if item != "--debug"] + argv[end:]
    return len(rest) != len(argv), rest


def report_failure(err: BaseException) -> int:
    """One line on stderr instead of a traceback; returns the exit code."""
    if isinstance(err, CmcrError):
        print(f"cmcr: error: {err}", file=sys.stderr)
        return 2
    if isinstance(err, KeyboardInterrupt):
        print("cmcr: interrupted; long jobs resume where they stopped when re-run "
              "(cmcr connect: add --resume)", file=sys.stderr)
        return 130
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        print(f"cmcr: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    if isinstance(err, MemoryError):
        print("cmcr: error: out of memory; try a smaller --batch-size or fewer --workers",
              file=sys.stderr)
        return 2
    print(f"cmcr: internal error: {type(err).__name__}: {str(err)[:500]}\n"
          "This is a bug in cmcr, not in your input: re-run with --debug for the traceback and "
          "report it.", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    from cmcr.runtime.threads import configure_threads

    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 must print too
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    debug, rest = pop_debug_flag(list(sys.argv[1:] if argv is None else argv))
    try:
        threads, rest = pop_threads_option(rest)
    except CmcrError as err:
        parser.error(str(err))
    args = parser.parse_args(rest)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        configure_threads(threads)
        return int(args.run(args) or 0)
    except (Exception, KeyboardInterrupt) as err:
        if debug and not isinstance(err, KeyboardInterrupt):
            raise
        return report_failure(err)


if __name__ == "__main__":
    sys.exit(main())
