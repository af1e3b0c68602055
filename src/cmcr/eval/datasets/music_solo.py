"""MUSIC-Solo (Zhao et al. 2018) test frames with sounding-instrument boxes, for localisation.

**Layout not confirmed**: MUSIC itself ships only YouTube ids (MUSIC_solo_videos.json); the boxed
test frames used by localisation papers (e.g. Hu et al. 2020, "Discriminative sounding objects
localization") are distributed by those authors in their own formats. cmcr expects them converted
to the VGG-SS form (the most common published form for boxes)::

    ROOT/
      frames/<id>.jpg               the annotated frame
      audio/<id>.wav                the audio around it
      music_solo_test.json          [{"file": "<id>", "class": "<instrument>",
                                      "bbox": [[x0, y0, x1, y1], ...]}, ...]  (fractions)
"""

from __future__ import annotations

from pathlib import Path

from cmcr.eval.datasets.base import EvalDataset
from cmcr.eval.datasets.vggss import read_boxed_pairs


def read_music_solo(root: Path) -> EvalDataset:
    return read_boxed_pairs("music-solo", root, root / "music_solo_test.json",
                            ("retrieval", "localization"))
