"""``cmcr inspect`` (the geometry of your stores) and ``cmcr study regimes`` (the regime map)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cmcr.cli.args import POSITIVE, SEED, number, whole
from cmcr.cli.world import seed_list

FORMATTER = argparse.RawDescriptionHelpFormatter

INSPECT_HELP = """\
Measure the geometry of your own embedding stores, beside real CLIP's, and say which C-MCR
recipe the regime map recommends for it.

Give two stores of one space (e.g. CLIP image rows, then CLIP caption rows): they give the
modality gap (distance between the two modalities' centroids), its stability (cosine between
the gaps of two random halves), each modality's participation ratio (how many directions the
rows use) and mean within-modality cosine. When both stores hold the same ids (an image and
its caption under one id), they are paired: the matched cosine and the paired residual (the
per-dimension variance of image - caption after removing the gap) follow. More stores are
taken two by two. Stores over --sample rows are measured on a uniform sample.

The recommendation comes from the nearest cell of the regime map ('cmcr study regimes',
docs/regimes.md): generated data of that geometry, not your encoders. It is evidence, not a
guarantee; the paper's recipe stays the default.

example:
  cmcr inspect emb/clip_image emb/clip_text emb/clap_audio emb/clap_text
  cmcr inspect emb/clip_image emb/clip_text --json > geometry.json
  cmcr inspect images.npy captions.npy --noise-var 0.001
"""

STUDY_HELP = """\
The regime map: which recipe wins at which geometry. Two spaces of chosen participation ratio,
modality gap and matched cosine are generated directly as embeddings (no encoders); every
recipe (the paper's, its four ablations, mean-centring, calibrated noise, both together =
cmcr+, normalised pseudo rows, the previous cmcr+) connects them through 'cmcr connect''s own
code and is judged on held-out audio -> image pairs, over several data seeds. Writes OUT/regimes.json, regimes.md (tables with
95% intervals) and regimes.png (the map). Finished datasets are reused, so an interrupted run
resumes. The default grid (12 cells x 3 seeds x 10 recipes) takes about an hour on one core.

example:
  cmcr study regimes --out runs/regimes
  cmcr study regimes --out runs/regimes-quick --quick      # 2 cells, 1 seed, 3 recipes
  cmcr study regimes --out runs/mine --cells 40:0.85:0.31,80:0.8:0.35 \
      --recipes no_noise,centred_calibrated      # your encoders' geometry (cmcr inspect)
"""


def register(subparsers: Any) -> None:
    inspect = subparsers.add_parser("inspect", help="measure your stores' geometry (gap, "
                                    "participation ratio, ...) and get a recipe recommendation",
                                    description=INSPECT_HELP, formatter_class=FORMATTER)
    inspect.add_argument("stores", nargs="+", metavar="STORE",
                         help="store directories or .npy matrices, two per space")
    inspect.add_argument("--noise-var", type=number(0.0), default=0.004,
                         help="the sigma^2 whose noise cosine to report (default: 0.004, the paper's)")
    inspect.add_argument("--noise-cosine", type=number(0.0, 0.9999, low_open=True), default=None,
                         metavar="C", help="also say which sigma^2 leaves cosine C at the stores' dim")
    inspect.add_argument("--sample", type=whole(100), default=20_000, metavar="ROWS",
                         help="measure at most ROWS rows of each store (default: 20000)")
    inspect.add_argument("--seed", type=SEED, default=0, help="the sample's seed (default: 0)")
    inspect.add_argument("--map", default=None, metavar="REGIMES_JSON",
                         help="a 'cmcr study regimes' result to recommend from (default: the "
                              "map shipped with cmcr)")
    inspect.add_argument("--json", action="store_true", help="print the measurements as JSON")
    inspect.set_defaults(run=run_inspect)
    _register_study(subparsers)


def cell_list(text: str) -> list[tuple[float, float, float]]:
    """``--cells 40:0.85:0.31,10:0.2:0.87`` -> [(PR, gap, matched cosine), ...]."""
    cells = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            values = tuple(float(v) for v in part.split(":"))
        except ValueError:
            values = ()
        if len(values) != 3:
            raise argparse.ArgumentTypeError(f"--cells takes PR:GAP:MATCHED triples such as "
                                             f"40:0.85:0.31; got {part!r}")
        cells.append(values)
    if not cells:
        raise argparse.ArgumentTypeError("--cells needs at least one PR:GAP:MATCHED triple")
    return cells


def _register_study(subparsers: Any) -> None:
    study = subparsers.add_parser("study", help="studies on generated data (the regime map)",
                                  description=STUDY_HELP, formatter_class=FORMATTER)
    actions = study.add_subparsers(dest="study_command", metavar="STUDY")
    regimes = actions.add_parser("regimes", help="which recipe wins at which geometry",
                                 description=STUDY_HELP, formatter_class=FORMATTER)
    regimes.add_argument("--out", required=True, help="folder for the datasets' scores and the map")
    regimes.add_argument("--seeds", type=seed_list, default=[0, 1, 2], metavar="S1,S2,...",
                         help="data seeds (default: 0,1,2)")
    regimes.add_argument("--epochs", type=POSITIVE, default=None, help="training epochs (default: 16)")
    regimes.add_argument("--cells", type=cell_list, default=None, metavar="PR:GAP:MATCHED,...",
                         help="your own grid, e.g. 40:0.85:0.31,80:0.6:0.4 (participation "
                              "ratio, modality gap, matched cosine; default: the 12 cells)")
    regimes.add_argument("--recipes", default=None, metavar="NAME,...",
                         help="a subset of the recipes (cmcr, the paper's, is always in: every "
                              "effect is measured against it)")
    regimes.add_argument("--quick", action="store_true",
                         help="a small check: 2 cells, the first seed, 3 recipes, 4 epochs, "
                              "a quarter of the data (under a minute: a smoke check, not evidence)")
    regimes.add_argument("--quiet", action="store_true", help="no progress bars")
    regimes.set_defaults(run=run_study_regimes)
    study.set_defaults(run=lambda args: study.print_help() or 2)


def run_inspect(args: argparse.Namespace) -> int:
    from cmcr.study.inspect import inspect_stores

    result = inspect_stores(args.stores, noise_var=args.noise_var, limit=args.sample,
                            seed=args.seed, regime_map=args.map)
    result["noise_cosine"] = args.noise_cosine
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from cmcr.study.explain import inspect_text

        print(inspect_text(result))
    return 0


def run_study_regimes(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from cmcr.study.geometry_data import Sizes
    from cmcr.study.regimes import StudySettings, default_cells, run_study

    seeds = tuple(args.seeds)
    settings = StudySettings(seeds=seeds)
    if args.cells:
        settings = replace(settings, cells=[checked_geometry(*cell) for cell in args.cells])
    if args.recipes:
        settings = replace(settings, recipes=checked_recipes(args.recipes))
    if args.quick:
        cells = default_cells()
        settings = replace(settings, cells=[cells[1], cells[-2]], seeds=seeds[:1],
                           recipes=("cmcr", "no_noise", "calibrated_noise"), epochs=4,
                           sizes=Sizes(texts=1024, memory=512, test_pairs=200))
    if args.epochs:
        settings = replace(settings, epochs=args.epochs)
    summary = run_study(args.out, settings, progress=not args.quiet)
    print(_study_lines(summary))
    print(f"wrote {args.out}/regimes.json, regimes.md and regimes.png")
    return 0


def checked_geometry(effective_dim: float, gap: float, matched: float) -> Any:
    """A map cell, or a one-line error saying why no rows have that geometry."""
    from cmcr.errors import ConfigError
    from cmcr.study.geometry_data import Geometry

    geometry = Geometry(effective_dim=effective_dim, modality_gap=gap, matched_cosine=matched)
    try:
        geometry.shares()
        if not 1 <= effective_dim <= geometry.dim:
            raise ValueError(f"a participation ratio must lie in [1, {geometry.dim}]")
    except ValueError as err:
        raise ConfigError(f"--cells {effective_dim:g}:{gap:g}:{matched:g}: {err}") from None
    return geometry


def checked_recipes(text: str) -> tuple[str, ...]:
    """``--recipes`` names, known to the map, with the paper's first."""
    from cmcr.errors import ConfigError
    from cmcr.study.regimes import MAP_RECIPES, PAPER

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MAP_RECIPES]
    if unknown:
        raise ConfigError(f"--recipes: unknown {', '.join(unknown)}; known: "
                          f"{', '.join(MAP_RECIPES)}")
    return (PAPER, *dict.fromkeys(n for n in names if n != PAPER))


def _study_lines(summary: dict[str, Any]) -> str:
    from cmcr.study.report import cell_label

    return "\n".join(f"{cell_label(c)}: {c['recommended']} (cmcr R@1 "
                     f"{c['recipes']['cmcr']['R@1']['mean']:.1f}, "
                     f"{c['recommended']} {c['recipes'][c['recommended']]['R@1']['mean']:.1f})"
                     for c in summary["cells"])
