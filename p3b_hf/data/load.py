"""``load_image_dataset``: the one loader every command (prune, finetune, compare, demo) goes through, so that
all see the same columns, label names, splits and eval carve-out, and fail the same way on bad input (one
:class:`DataError` naming the problem and the fix) instead of a KeyError deep inside a Trainer step. It
strings together the steps of the sibling modules: source -> columns -> domain options -> eval splits ->
labels -> domain split or carve-out -> class checks -> subsets -> image checks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..errors import DataError
from .columns import detect_columns
from .domains import _split_by_domain, check_domain_options
from .image_data import ImageData
from .images import check_images
from .labels import _check_every_class_is_trained, label_names
from .sources import _load_raw, _resolve_source
from .splits import _stratified_split, _subsample, select_eval_splits, split_names


def load_image_dataset(
    source: str | os.PathLike[str] | Any,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    train_split: str = "train",
    eval_split: str | Sequence[str] | None = None,
    preset: str | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 0,
    eval_fraction: float = 0.1,
    domain_column: str | None = None,
    train_domains: Sequence[str] | str | None = None,
    test_domains: Sequence[str] | str | None = None,
    source_holdout: float = 0.1,
    max_bad_images: int = 0,
    image_check: str = "full",
) -> ImageData:
    """Load train/eval splits of an image-classification data set and validate columns and labels.

    ``preset`` (or a ``source`` that names one) supplies Hub id, columns and splits; explicit arguments
    win. ``source`` may also be an in-memory ``Dataset``/``DatasetDict`` (the demo uses that). Labels: a ``ClassLabel`` column gives the names; integer columns become ``"0".."K-1"``; string
    columns are mapped to sorted train label names (eval may not introduce new ones).

    ``eval_split``: one name, or several (``"validation,test"`` or a list): each becomes an eval set,
    reported by name; the first is the primary one (``ImageData.eval``). ``domain_column`` with
    ``train_domains`` and/or ``test_domains`` (lists or comma strings; the missing one = every other
    domain): train on the source domains, evaluate on each test domain and on a ``source_holdout``
    carve-out of the sources (``ImageData.domains`` describes the split). ``max_eval_samples`` applies to
    every eval set.

    Every image the run will read (train and every eval set, after carve-outs and subsets) is checked
    first (:func:`check_images`, ``image_check`` = full / header / off): more than ``max_bad_images``
    unreadable ones are one :class:`DataError` naming them, fewer are left out (logged, and counted in
    ``info["bad_images"]``).
    """
    source, pre, _ = _resolve_source(source, preset)
    if pre is not None:
        image_column = image_column or pre.image_column
        label_column = label_column or pre.label_column
    train_domains, test_domains = split_names(train_domains), split_names(test_domains)
    by_domain = bool(train_domains or test_domains)
    explicit_domain_column = domain_column
    if domain_column is None and pre is not None:
        domain_column = pre.domain_column
    if not 0.0 <= source_holdout < 1.0:
        raise DataError(
            f"--source-holdout {source_holdout} must lie in [0, 1) (e.g. 0.1; 0 = no source eval set)."
        )
    dd, how = _load_raw(source)
    name = source if isinstance(source, str) else f"<{how} data set>"
    splits = list(dd.keys())
    if train_split not in dd:
        raise DataError(f"Split {train_split!r} not in {name!r} (splits: {splits}). Pass --train-split.")
    train = dd[train_split]
    if len(train) == 0:
        raise DataError(
            f"Split {train_split!r} of {name!r} is empty. Check the data set or pass another --train-split."
        )
    img_col, lab_col = detect_columns(train, how, splits, image_column, label_column, name)
    eval_names = split_names(eval_split)
    check_domain_options(
        train,
        name,
        by_domain=by_domain,
        domain_column=domain_column,
        explicit_domain_column=explicit_domain_column,
        eval_names=eval_names,
    )
    evals_raw = select_eval_splits(
        dd,
        eval_names,
        train_split=train_split,
        preferred=pre.eval_split if pre is not None else None,
        by_domain=by_domain,
        need=(img_col, lab_col) + ((domain_column,) if by_domain else ()),
        name=name,
    )
    train, evals_raw, names, train_labels = label_names(train, evals_raw, lab_col, img_col, name, train_split)
    domains = None
    if by_domain:
        train, evals_raw, domains = _split_by_domain(
            train,
            train_labels,
            evals_raw[0] if evals_raw else None,
            domain_column,
            train_domains,
            test_domains,
            source_holdout,
            seed,
            train_split,
        )
    elif not evals_raw:
        train, evald = _stratified_split(train, train_labels, eval_fraction, seed)
        if len(evald) == 0:
            raise DataError(f"Cannot carve an eval set from {len(train)} train images; give an eval split.")
        evals_raw = [("held_out", evald, f"stratified {eval_fraction:.0%} of {train_split!r} (seed {seed})")]
    _check_every_class_is_trained(train, evals_raw, lab_col, names, name, how, train_split)
    train = _subsample(train, max_train_samples, seed)
    evals = {n: _subsample(e, max_eval_samples, seed) for n, e, _ in evals_raw}
    origins = {n: o for n, _, o in evals_raw}
    # the split each eval set's rows come from (for naming bad images): a carve-out or a domain's rows of
    # the train split, the given eval split for domains with --eval-split, else the split of that name
    if by_domain:
        parent_split = eval_names[0] if eval_names else train_split
        parents = {n: parent_split for n in evals}
    else:
        parents = {n: (train_split if n == "held_out" and n not in dd else n) for n in evals}
    checked, bad = check_images(
        [("the train set", train, train_split)]
        + [(f"eval set {n!r}", e, parents[n]) for n, e in evals.items()],
        img_col,
        image_check,
        max_bad_images,
    )
    train, evals = checked[0], dict(zip(evals, checked[1:]))
    primary = next(iter(evals))
    return ImageData(
        train=train,
        eval=evals[primary],
        image_column=img_col,
        label_column=lab_col,
        labels=names,
        source=name,
        eval_origin=origins[primary],
        info={"loaded_with": how, "splits": splits, "bad_images": bad},
        evals=evals,
        eval_origins=origins,
        domains=domains,
    )
