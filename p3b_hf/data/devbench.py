"""The dev-bench arrays (``scripts200_dev.{npz,json}``) as a ``DatasetDict``, so that the dev scripts and
tests feed them through the same loader as any other data set."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError


def devbench_dataset_dict(
    npz_path: str | os.PathLike[str],
    json_path: str | os.PathLike[str],
    *,
    max_per_split: int | None = None,
    splits: Sequence[str] = ("train", "validation"),
) -> Any:
    """dev-bench arrays -> ``DatasetDict`` with ``image`` (RGB, black ink on white) and ``label`` (ClassLabel).

    ``max_per_split`` keeps the first N images of each split (tests convert only a small subset).
    """
    import datasets
    from PIL import Image

    for p in (npz_path, json_path):
        if not Path(p).exists():
            raise DataError(
                f"dev-bench file {p} does not exist; expected the dev-bench's scripts200_dev.{{npz,json}} "
                "(../shared/dev-bench next to the checkout; the dev scripts take --bench-dir or "
                "$P3B_DEVBENCH)."
            )
    meta = json.loads(Path(json_path).read_text())
    names = [str(c) for c in meta["classes"]]
    out = {}
    with np.load(npz_path) as z:
        for split in splits:
            if f"{split}_images" not in z:
                raise DataError(f"{npz_path} has no {split}_images array (arrays: {sorted(z.files)}).")
            imgs = z[f"{split}_images"][:max_per_split]
            labels = z[f"{split}_labels"][:max_per_split].astype(np.int64)
            rgb = [Image.fromarray(np.repeat((255 - im)[..., None], 3, axis=-1)) for im in imgs]
            features = datasets.Features(
                {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
            )
            out[split] = datasets.Dataset.from_dict(
                {"image": rgb, "label": labels.tolist()}, features=features
            )
    return datasets.DatasetDict(out)
