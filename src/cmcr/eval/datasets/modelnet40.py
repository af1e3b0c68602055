"""ModelNet40 (Wu et al. 2015) test split: 2,468 CAD shapes in 40 classes, for zero-shot 3D.

Point clouds are not encoded here: their ULIP embeddings come from a store
(``--space ulip=precomputed:DIR``, ids = shape ids). The reader gives ids, labels and class
names. Layout (ULIP's ``data/modelnet40_normal_resampled/``, confirmed for the two lists)::

    ROOT/
      modelnet40_shape_names.txt     40 class names, one a line (label = line index)
      modelnet40_test.txt            2,468 shape ids, one a line ("airplane_0627"; class = the id
                                     without its trailing _NNNN)

The point files themselves (``<class>/<id>.txt`` or ULIP's ``*_8192pts_fps.dat``) are only
needed to compute the store, not here.
"""

from __future__ import annotations

from pathlib import Path

from cmcr.errors import InputError
from cmcr.eval.datasets.base import EvalDataset, class_name, read_text, require_file


def read_lines(path: Path, expected: str) -> list[str]:
    require_file(path, expected)
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def read_modelnet40(root: Path, protocol: str = "ulip") -> EvalDataset:
    shapes = read_lines(root / "modelnet40_shape_names.txt", "the 40 class names, one a line")
    ids = read_lines(root / "modelnet40_test.txt", "the test shape ids, one a line (airplane_0627)")
    index = {name: label for label, name in enumerate(shapes)}
    labels = []
    for shape_id in ids:
        shape_class = shape_id.rsplit("_", 1)[0]
        if shape_class not in index:
            raise InputError(f"{root / 'modelnet40_test.txt'}: '{shape_id}' is of class "
                             f"'{shape_class}', not in modelnet40_shape_names.txt")
        labels.append(index[shape_class])
    return EvalDataset(name="modelnet40", root=root, ids=ids, inputs={"point_cloud": list(ids)},
                       protocol=protocol, tasks=("zero-shot",), labels=labels,
                       class_names=[class_name(name) for name in shapes])
