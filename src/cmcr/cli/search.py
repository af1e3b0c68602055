"""Search sub-commands: index (build / add / info), search, serve."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from cmcr.cli.args import COUNT, POSITIVE, number, whole

FORMATTER = argparse.RawDescriptionHelpFormatter

INDEX_HELP = """\
Build a search index of a connected model's joint space from embedding stores.

Each --store (made by 'cmcr embed', or any cmcr store) is projected by the model's projector for
its space into one segment of a FAISS index. Any modality of either space can go in: CLIP images,
CLAP audio, either space's texts. The index records per row the store's id, modality, space and
source file (or text), so search results can be shown and served.

--store takes PATH, or path=PATH,space=NAME,media=DIR,name=NAME when the store cannot tell:
  space  which of the model's spaces projects it (inferred from the store's modality and space)
  media  the folder the store's ids are file paths in (stores from 'cmcr embed' record sources)
  name   the collection's name (default: the store folder's name)

Index kind (--index-type auto): exact search up to 100,000 rows a store; above that IVF with
exact vectors when they fit --memory-budget, else IVF-PQ; the probed lists are tuned at build
time to reach --target-recall recall@10 against exact search. Any FAISS factory string overrides
it (HNSW32, IVF4096,Flat, IVF8192,PQ64). Building streams each store in chunks.

examples:
  cmcr index build --model runs/clip-clap --store emb/clip_image --store emb/clap_audio --out idx
  cmcr index add idx --store emb/more_audio
  cmcr index info idx
  cmcr index calibrate old-idx     # an index built before score calibration existed
"""

SEARCH_HELP = """\
Search an index with a text, an image or an audio file, or a stored row ("more like this").
The query goes through the frozen space the index recorded for its modality (override with
--space NAME=KIND:NAME_OR_PATH) and the model's projector, then the index. Results are best
first; --modality keeps only rows of one modality (e.g. images for an audio query).

Results of all collections are ranked as one list by a calibrated score: how many standard
deviations a row's cosine stands above a typical row of its own collection for this query
(a joint space keeps a modality gap: a text's cosine to the right sound can be 0.05 while
its cosine to any picture is higher). 'score' is the cosine, 'calib' the calibrated score;
--rank cosine ranks by cosine instead.

examples:
  cmcr search runs/demo --audio dog.wav --modality image -k 5
  cmcr search idx --text "a dog barking" --json
  cmcr search idx --like 42 --modality audio
  cmcr search idx --text "a dog" --collection photos --path-prefix dogs/ --dedup 0.98
"""

SERVE_HELP = """\
Serve an index: a web page (search box, drag-and-drop of an image or a sound, results with
thumbnails, spectrograms, labels and players; click a result for more like it; export as JSON
or CSV) and a JSON API:

  GET  /api/search?q=TEXT&modality=image&k=10&offset=0     search by text
  GET  /api/search?like=ROW&modality=audio                  more like a stored row
  POST /api/search   multipart: file=@query.wav, modality, k, offset, filters
  GET  /api/info                                            what the index holds
  GET  /media/ROW   (?thumb=PX, ?spectrogram=PX)            a result's file or thumbnail
  GET  /metrics                                             Prometheus text: requests,
                                                            latency histogram, errors
Filters: min_score (cosine), min_calibrated, dedup (cosine above which a result is a near
duplicate of a better one), collection=A,B, path_prefix; rank=cosine ranks by raw cosine.

Answers: {"results": [{"id", "modality", "score", "calibrated", "label", "path", "media_url",
...}]}, best first; bad requests get a 4xx with {"error": "..."}. Only rows of the index are
served as media, only from inside a collection's media folder when it has one, and only when
the file's content is the image, audio or video its row says. Paths are shown relative to each
collection's root folder unless --show-paths.

Access: with --token (or CMCR_TOKEN), every API, media and metrics request needs
'Authorization: Bearer TOKEN' (else 401); the page asks for it once per browser session, and
media URLs in results carry a per-row signature. A --host other machines can reach is refused
without a token.

Uploads are bounded twice: in bytes (--max-upload-mb), then from the file's header before any
decoding (an upload over a limit gets 413 naming the limit and its value):
  audio  at most --max-upload-seconds long, --max-sample-rate Hz, --max-channels channels
  image  at most --max-image-pixels pixels, long side at most --max-image-aspect x the short side
Uploads decode in --decode-workers threads, outside the model's lock, so text searches keep
answering meanwhile; past 8 uploads per decode thread, more get 503 until some finish.

examples:
  cmcr demo --out runs/demo && cmcr serve runs/demo        # then open http://127.0.0.1:8000
  CMCR_TOKEN=$(python -c "import secrets; print(secrets.token_urlsafe())") \\
    cmcr serve idx --host 0.0.0.0 --port 8080 --max-upload-mb 50 --max-upload-seconds 300
"""


def register(subparsers) -> None:
    _register_index(subparsers)
    _register_search(subparsers)
    _register_serve(subparsers)


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", action="append", required=True, metavar="STORE",
                        help="a store to index (repeatable): PATH or path=PATH,space=,media=,name=")
    parser.add_argument("--index-type", default="auto",
                        help="auto (the rule above), exact, or a FAISS factory string")
    parser.add_argument("--memory-budget-gb", type=number(0, low_open=True), default=None,
                        help="RAM the index may take, for the auto rule (default: half the RAM)")
    parser.add_argument("--target-recall", type=number(0, 1, low_open=True), default=0.95,
                        help="recall@10 the approximate search is tuned to (default: 0.95)")
    parser.add_argument("--chunk-rows", type=POSITIVE, default=65536,
                        help="rows projected at a time (default: 65536)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _register_index(subparsers) -> None:
    index = subparsers.add_parser("index", help="build, extend or describe a search index",
                                  description=INDEX_HELP, formatter_class=FORMATTER)
    actions = index.add_subparsers(dest="index_command", metavar="ACTION")
    build = actions.add_parser("build", help="a new index from stores", description=INDEX_HELP,
                               formatter_class=FORMATTER)
    build.add_argument("--model", required=True, help="connected model directory")
    build.add_argument("--out", required=True, help="index directory to write")
    build.add_argument("--overwrite", action="store_true", help="replace an index at --out")
    _add_store_options(build)
    build.set_defaults(run=run_index_build)
    add = actions.add_parser("add", help="add stores to an index (same model)",
                             description=INDEX_HELP, formatter_class=FORMATTER)
    add.add_argument("index", help="index directory")
    _add_store_options(add)
    add.set_defaults(run=run_index_add)
    calibrate = actions.add_parser(
        "calibrate", help="add score calibration to an index built by an older cmcr",
        description="Estimate each collection's score calibration (the mean and covariance of its "
                    "rows, read from the index itself) where it is missing, so results of "
                    "different collections are ranked as one list. Indexes built by this cmcr "
                    "have it already.\n\nexample:\n  cmcr index calibrate runs/demo/index",
        formatter_class=FORMATTER)
    calibrate.add_argument("index", help="index directory")
    calibrate.set_defaults(run=run_index_calibrate)
    info = actions.add_parser("info", help="what an index holds")
    info.add_argument("index", help="index directory")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=run_index_info)
    index.set_defaults(run=lambda args: index.print_help() or 2)


def _add_options(args: argparse.Namespace) -> dict[str, Any]:
    budget = None if args.memory_budget_gb is None else int(args.memory_budget_gb * 2**30)
    return {"index_type": args.index_type, "memory_budget": budget,
            "target_recall": args.target_recall, "chunk_rows": args.chunk_rows,
            "progress": not args.quiet}


def run_index_build(args: argparse.Namespace) -> int:
    from cmcr.serve.index import Index

    index = Index.build(args.out, args.model, args.store, overwrite=args.overwrite,
                        **_add_options(args))
    print(format_info(index.info()))
    return 0


def run_index_add(args: argparse.Namespace) -> int:
    from cmcr.serve.index import Index

    index = Index.open(args.index)
    index.add(args.store, **_add_options(args))
    print(format_info(index.info()))
    return 0


def run_index_calibrate(args: argparse.Namespace) -> int:
    from cmcr.serve.index import Index

    index = Index.open(args.index)
    added = index.calibrate()
    print(f"{index.path}: calibrated {', '.join(added)}" if added
          else f"{index.path}: every collection is calibrated already")
    return 0


def run_index_info(args: argparse.Namespace) -> int:
    from cmcr.serve.index import Index

    info = Index.open(args.index).info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def format_info(info: dict[str, Any]) -> str:
    """An index's description as text: totals, then one line per collection."""
    lines = [f"index {info['path']}: {info['rows']:,} rows, {info['dim']}-d joint space, "
             f"{info['disk_bytes'] / 2**20:.1f} MiB on disk",
             f"model {info['model']} (weights sha256 {info['model_digest']}...)"]
    lines += [f"space {name}: {spec}" for name, spec in info["spaces"].items()]
    header = f"{'collection':<24} {'modality':<9} {'space':<8} {'rows':>10}  {'calibrated':<11} index"
    lines += ["", header, "-" * len(header)]
    for c in info["collections"]:
        tuned = (f" ({c['search_parameter']}={c['search_value']}, recall@10 "
                 f"{c['tuned_recall']:.3f})" if c["search_parameter"] else "")
        calibrated = f"{c['calibration_rows']:,} rows" if c.get("calibration_rows") else "no"
        lines.append(f"{c['name'][:24]:<24} {c['modality']:<9} {c['space']:<8} {c['rows']:>10,}  "
                     f"{calibrated:<11} {c['factory']}{tuned}")
    if not all(c.get("calibration_rows") for c in info["collections"]):
        lines.append(f"(uncalibrated: results merge by raw cosine; cmcr index calibrate "
                     f"{info['path']})")
    return "\n".join(lines)


# -- search --------------------------------------------------------------------------------------
def _register_search(subparsers) -> None:
    parser = subparsers.add_parser("search", help="search an index by text, file or row",
                                   description=SEARCH_HELP, formatter_class=FORMATTER)
    parser.add_argument("index", help="index directory (or a demo's output folder)")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="a text query")
    query.add_argument("--image", help="an image file")
    query.add_argument("--audio", help="an audio file")
    query.add_argument("--like", type=COUNT, metavar="ROW", help="a row of the index")
    parser.add_argument("--modality", default=None, help="only rows of this modality")
    parser.add_argument("-k", type=POSITIVE, default=10, help="results (default: 10)")
    parser.add_argument("--offset", type=COUNT, default=0, help="skip this many results (paging)")
    parser.add_argument("--rank", choices=("auto", "calibrated", "cosine"), default="auto",
                        help="rank by calibrated score (auto: when the index has it) or cosine")
    parser.add_argument("--min-score", type=number(-1, 1), default=None,
                        help="only results whose cosine is at least this")
    parser.add_argument("--dedup", type=number(0, 1, low_open=True), default=None,
                        help="drop a result whose cosine to a better one is at least this")
    parser.add_argument("--collection", action="append", default=[],
                        help="only results of this collection (repeatable)")
    parser.add_argument("--path-prefix", default=None,
                        help="only results whose path (relative to its collection) starts so")
    parser.add_argument("--space", action="append", default=[], metavar="NAME=KIND:NAME_OR_PATH",
                        help="the frozen space behind a model space, if not the recorded one")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:1")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run_search)


def run_search(args: argparse.Namespace) -> int:
    from cmcr.cli.encoders import parse_space_options
    from cmcr.serve.index import Index

    index = Index.open(args.index, spaces=parse_space_options(args.space), device=args.device)
    results = index.search(text=args.text, image=args.image, audio=args.audio, like=args.like,
                           modality=args.modality, k=args.k, offset=args.offset, rank=args.rank,
                           min_score=args.min_score, dedup=args.dedup,
                           collections=tuple(args.collection), path_prefix=args.path_prefix)
    if args.json:
        print(json.dumps({"results": [r.to_json() for r in results]}, indent=2))
        return 0
    print(f"{'#':>3}  {'score':>6}  {'calib':>6}  {'row':>7}  {'modality':<8}  {'space':<6}  "
          "id / source")
    for rank, hit in enumerate(results, start=args.offset + 1):
        shown = hit.text if hit.text else hit.source or ""
        label = hit.id if shown in ("", hit.id) else f"{hit.id}  {shown}"
        if hit.label:
            label += f"  [{hit.label}]"
        calibrated = "-" if hit.calibrated is None else f"{hit.calibrated:.2f}"
        print(f"{rank:>3}  {hit.score:>6.3f}  {calibrated:>6}  {hit.row:>7}  {hit.modality:<8}  "
              f"{hit.space:<6}  {label}")
    return 0


# -- serve ---------------------------------------------------------------------------------------
def _register_serve(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="web page and JSON API over an index",
                                   description=SERVE_HELP, formatter_class=FORMATTER)
    parser.add_argument("index", help="index directory (or a demo's output folder)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: "
                        "127.0.0.1; 0.0.0.0 for other machines)")
    parser.add_argument("--port", type=whole(0, 65535), default=8000, help="port (default: 8000)")
    parser.add_argument("--max-upload-mb", type=number(0, low_open=True), default=20.0,
                        help="largest upload accepted (default: 20 MB)")
    parser.add_argument("--max-upload-seconds", type=number(0, low_open=True), default=60.0,
                        help="longest audio upload, read from its header (default: 60 s)")
    parser.add_argument("--max-sample-rate", type=POSITIVE, default=192_000,
                        help="highest audio sample rate of an upload (default: 192000 Hz)")
    parser.add_argument("--max-channels", type=POSITIVE, default=8,
                        help="most audio channels of an upload (default: 8)")
    parser.add_argument("--max-image-pixels", type=POSITIVE, default=40_000_000,
                        help="most pixels of an uploaded image (default: 40000000)")
    parser.add_argument("--max-image-aspect", type=number(1), default=100.0,
                        help="largest long side / short side of an uploaded image (default: 100)")
    parser.add_argument("--decode-workers", type=whole(1, 64), default=2,
                        help="threads that decode uploads (default: 2)")
    parser.add_argument("--token", default=None, help="require this bearer token on every API, "
                        "media and metrics request (default: the CMCR_TOKEN environment "
                        "variable; needed for a --host other machines can reach)")
    parser.add_argument("--show-paths", action="store_true", help="show files' absolute paths "
                        "and the index's folders (default: paths relative to each collection)")
    parser.add_argument("--space", action="append", default=[], metavar="NAME=KIND:NAME_OR_PATH",
                        help="the frozen space behind a model space, if not the recorded one")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:1")
    parser.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from cmcr.cli.encoders import parse_space_options
    from cmcr.errors import MissingDependencyError
    from cmcr.serve.index import Index

    try:
        from cmcr.serve.app import serve
    except ImportError as err:
        raise MissingDependencyError(f"cmcr serve needs starlette, uvicorn and python-multipart "
                                     f"({err}): pip install starlette uvicorn python-multipart") from None

    from cmcr.serve.access import check_exposure
    from cmcr.serve.query import UploadLimits

    token = args.token if args.token is not None else (os.environ.get("CMCR_TOKEN") or None)
    check_exposure(args.host, token)  # before anything is loaded
    limits = UploadLimits(max_seconds=args.max_upload_seconds, max_sample_rate=args.max_sample_rate,
                          max_channels=args.max_channels, max_image_pixels=args.max_image_pixels,
                          max_image_aspect=args.max_image_aspect)
    index = Index.open(args.index, spaces=parse_space_options(args.space), device=args.device)
    serve(index, host=args.host, port=args.port,
          max_upload_bytes=int(args.max_upload_mb * 1_000_000), limits=limits,
          decode_workers=args.decode_workers, token=token, show_paths=args.show_paths)
    return 0
