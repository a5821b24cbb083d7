"""Which columns hold the images and the labels: the given names, else the usual names, else the one column of
the right feature type; and the image-folder layouts whose "labels" would be wrong (no class folders, split
names as classes). One :class:`DataError` names the columns found and the flag to pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import DataError
from .splits import EVAL_SPLITS

IMAGE_COLUMNS = ("img", "image", "images", "picture", "pixel_values")
LABEL_COLUMNS = ("fine_label", "label", "labels", "class", "target", "category")


def _detect(
    columns: Sequence[str],
    features: Any,
    given: str | None,
    candidates: Sequence[str],
    kind: str,
    flag: str,
    feature_type: type | None,
) -> str:
    if given is not None:
        if given not in columns:
            raise DataError(
                f"{kind} column {given!r} not found; the data set has columns {list(columns)}. "
                f"Pass the right name with {flag}."
            )
        return given
    for c in candidates:
        if c in columns:
            return c
    if feature_type is not None:
        typed = [c for c in columns if isinstance(features.get(c), feature_type)]
        if len(typed) == 1:
            return typed[0]
    raise DataError(
        f"No {kind.lower()} column found among {list(columns)} (looked for {', '.join(candidates)}). "
        f"Name it with {flag}."
    )


def detect_columns(
    train: Any,
    how: str,
    splits: Sequence[str],
    image_column: str | None,
    label_column: str | None,
    name: str,
) -> tuple[str, str]:
    """(image column, label column) of the train split; an image folder whose layout gives no real classes
    is refused here, before any label is read."""
    import datasets

    cols = train.column_names
    if how == "imagefolder" and label_column is None and "label" not in cols:
        raise DataError(
            f"{name!r} is an image folder without class folders (or with only one): the images must sit in "
            "one folder per class, <dir>/<class>/<image> or <dir>/<split>/<class>/<image>, with at least two "
            f"classes (found columns {cols}). Move them into class folders, or give a metadata.csv with a "
            "label column and --label-column."
        )
    img_col = _detect(
        cols, train.features, image_column, IMAGE_COLUMNS, "Image", "--image-column", datasets.Image
    )
    lab_col = _detect(
        cols, train.features, label_column, LABEL_COLUMNS, "Label", "--label-column", datasets.ClassLabel
    )
    lab_feat = train.features[lab_col]
    if (
        how == "imagefolder"
        and isinstance(lab_feat, datasets.ClassLabel)
        and set(lab_feat.names) <= {*splits, *EVAL_SPLITS, "train"}
    ):
        raise DataError(
            f"{name!r}: the image folder's class names {lab_feat.names} are split names, so the images sit "
            "directly in <dir>/<split>/ without class folders. Put them into one folder per class: "
            "<dir>/<split>/<class>/<image>."
        )
    return img_col, lab_col
