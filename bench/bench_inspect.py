"""How long `cmcr inspect` takes on large stores, and how far its sampled numbers are from the
same numbers on every row.

Writes two paired stores of ROWS x 512 float16 rows (an "image" and a "caption" store sharing
ids, with a modality gap), then times ``inspect_stores`` at its default sample (20,000 rows)
and measures every key again on the first 200,000 rows without sampling, to show the sampling
error.

    python bench/bench_inspect.py --rows 1000000 --out /tmp/bench-inspect
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from cmcr.spaces import geometry
from cmcr.data.store import StoreWriter, open_store
from cmcr.study.inspect import inspect_stores


def write_pair(out: Path, rows: int, dim: int, chunk: int = 100_000) -> tuple[Path, Path]:
    """Two float16 stores of ``rows`` paired rows: a shared part plus each modality's own part
    and centre (gap ~ 0.8, matched cosine ~ 0.3)."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2, dim)) * np.sqrt(0.5 / dim)
    writers = [StoreWriter(out / name, dim=dim, space="bench", modality=modality, dtype="float16",
                           normalized=True, overwrite=True)
               for name, modality in (("image", "image"), ("text", "text"))]
    for start in range(0, rows, chunk):
        count = min(chunk, rows - start)
        shared = rng.standard_normal((count, dim)) * np.sqrt(0.15 / dim)
        ids = [f"row{i:08d}" for i in range(start, start + count)]
        for writer, centre in zip(writers, centres):
            own = rng.standard_normal((count, dim)) * np.sqrt(0.35 / dim)
            writer.append(geometry.unit_rows(centre + shared + own).astype(np.float16), ids)
    return tuple(writer.close().path for writer in writers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", required=True)
    parser.add_argument("--reference-rows", type=int, default=200_000,
                        help="rows measured without sampling, to compare (default: 200000)")
    args = parser.parse_args()
    image, text = write_pair(Path(args.out), args.rows, 512)
    started = time.perf_counter()
    result = inspect_stores([image, text])
    seconds = time.perf_counter() - started
    sampled = result["spaces"][0]
    reference_rows = min(args.rows, args.reference_rows)
    full = geometry.space_geometry(*(open_store(p).rows(0, reference_rows) for p in (image, text)),
                                   0.004)
    print(f"cmcr inspect on 2 x {args.rows:,} rows: {seconds:.1f} s (sample "
          f"{result['sample_limit']:,} rows per store)")
    for key in geometry.GEOMETRY_KEYS:
        print(f"  {key:26s} sampled {sampled[key]:.5f}   first {reference_rows:,} rows "
              f"{full[key]:.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
