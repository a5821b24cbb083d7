"""Label names and label checks: a ``ClassLabel`` gives the names, integer ids become ``"0".."K-1"``, strings
are mapped to the sorted train names; then the data that would train a wrong model with exit 0 is refused (one
class, labels out of range or missing, the label column = the image column, a class without training images)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DataError

logger = logging.getLogger(__name__)


def _labels_array(ds: Any, column: str) -> np.ndarray:
    return np.asarray(ds.select_columns([column]).with_format("numpy")[column])


def label_names(
    train: Any,
    evals_raw: list[tuple[str, Any, str]],
    lab_col: str,
    img_col: str,
    name: str,
    train_split: str,
) -> tuple[Any, list[tuple[str, Any, str]], list[str], np.ndarray]:
    """(train, eval sets, label names, train labels): string labels cast to one ``ClassLabel`` in every split;
    the label sets of train and eval checked to agree and every label checked to lie in ``0..K-1``."""
    import datasets

    feat = train.features[lab_col]
    train_labels = _labels_array(train, lab_col)
    if isinstance(feat, datasets.ClassLabel):
        names = list(feat.names)
        for _, evald, _ in evals_raw:
            efeat = evald.features[lab_col]
            if isinstance(efeat, datasets.ClassLabel) and list(efeat.names) != names:
                raise DataError(
                    f"Train and eval label sets differ ({len(names)} vs {len(efeat.names)} names, "
                    f"e.g. {sorted(set(efeat.names) ^ set(names))[:5]}). Use splits of one data set "
                    "or cast both to one ClassLabel."
                )
    elif train_labels.dtype.kind in "iu":
        names = [str(i) for i in range(int(train_labels.max()) + 1)] if train_labels.size else []
    elif train_labels.dtype.kind in "USO":
        names = sorted({str(v) for v in train_labels})
        for _, evald, _ in evals_raw:
            unknown = sorted({str(v) for v in _labels_array(evald, lab_col)} - set(names))
            if unknown:
                raise DataError(
                    f"Eval labels {unknown[:5]} do not occur in train (unknown label set). Use an eval "
                    "split with the train classes."
                )
        cl = datasets.ClassLabel(names=names)
        train = train.cast_column(lab_col, cl)
        evals_raw = [(n, e.cast_column(lab_col, cl), o) for n, e, o in evals_raw]
        train_labels = _labels_array(train, lab_col)
    else:
        raise DataError(
            f"Label column {lab_col!r} has type {train_labels.dtype}; expected class ids or names. "
            "Pass the right --label-column."
        )
    k = len(names)
    if img_col == lab_col or isinstance(feat, datasets.Image):
        raise DataError(
            f"Label column {lab_col!r} holds the images; pass the column of class ids or names with "
            "--label-column."
        )
    if k < 2:
        raise DataError(
            f"{name!r} has {k} class{'' if k == 1 else 'es'} ({names}): a one-class classifier is 100 % "
            "accurate by construction and learns nothing. Give a data set with at least two classes."
        )

    def check_range(lab: np.ndarray, what: str) -> None:
        missing = int(np.isnan(lab).sum()) if lab.dtype.kind == "f" else 0
        missing += sum(v is None for v in lab) if lab.dtype.kind == "O" else 0
        if missing:
            raise DataError(
                f"{what}: {missing} image(s) have no label. Label every image, or pass the right "
                "--label-column."
            )
        if lab.size and (lab.min() < 0 or lab.max() >= k):
            bad = lab[(lab < 0) | (lab >= k)]
            raise DataError(
                f"{what} labels out of range: {bad[:5].tolist()} for {k} classes (values must be "
                "0..K-1; -1 usually means unlabelled, e.g. a hidden test set). Use a labelled split."
            )

    check_range(train_labels, f"Train ({train_split!r})")
    for _, evald, origin in evals_raw:
        check_range(_labels_array(evald, lab_col), f"Eval ({origin})")
    return train, evals_raw, names, train_labels


def _check_every_class_is_trained(
    train: Any,
    evals_raw: Sequence[tuple[str, Any, str]],
    lab_col: str,
    names: list[str],
    name: str,
    how: str,
    train_split: str,
) -> None:
    """Refuse a class the model would never learn (checked on the training set after domain selection and
    carve-outs, before ``--max-train-samples``): one that an eval set holds (its images are always
    wrong), or, in an image folder, any class folder without training images (the label set is every
    split's class folders, so a class present only in ``test/`` is an extra, untrained output). Other
    label names without images (a ``ClassLabel`` naming classes a subset lacks) are only logged."""
    k = len(names)
    lab = _labels_array(train, lab_col).astype(np.int64)
    counts = np.bincount(lab[(lab >= 0) & (lab < k)], minlength=k)
    untrained = set(np.flatnonzero(counts == 0).tolist())
    if not untrained:
        return
    fix = "Add training images of every class, or remove the class from the data set."
    for set_name, evald, origin in evals_raw:
        seen = set(_labels_array(evald, lab_col).astype(np.int64).tolist()) & untrained
        if seen:
            raise DataError(
                f"Eval set {set_name!r} ({origin}) holds class(es) {[names[i] for i in sorted(seen)][:10]} "
                f"that have no image in the training set of {name!r} (split {train_split!r}): the model "
                f"never learns them, so those eval images are always wrong. {fix}"
            )
    missing = [names[i] for i in sorted(untrained)]
    if how == "imagefolder":
        raise DataError(
            f"Class folder(s) {missing[:10]} of {name!r} have no image in the train split {train_split!r} "
            "(an image folder's classes are the class folders of every split): the model would get an "
            f"output it never learns. {fix}"
        )
    logger.warning(
        "%d of %d classes have no training image (%s%s); the model keeps an untrained output for each.",
        len(missing),
        k,
        ", ".join(missing[:10]),
        ", ..." if len(missing) > 10 else "",
    )
