"""Which rows are trained and which evaluated: the eval splits by name (or the first of validation / valid / val
/ test), a seeded stratified carve-out of train when there is none, and ``--max-*-samples`` subsets. Every
choice is deterministic for a seed, so that prune, finetune and compare score the same images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DataError

EVAL_SPLITS = ("validation", "valid", "val", "test")


def _stratified_indices(keys: np.ndarray, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(kept, held-out) row positions: per stratum (``keys`` value) ``round(fraction * n)`` rows held out, at
    least one when the stratum has >= 2, chosen by ``numpy.random.default_rng(seed)`` (strata in sorted order)."""
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for c in np.unique(keys):
        idx = np.flatnonzero(keys == c)
        k = int(round(fraction * len(idx)))
        k = max(k, 1) if len(idx) >= 2 else 0
        held.extend(rng.permutation(idx)[:k].tolist())
    held_set = set(held)
    return [i for i in range(len(keys)) if i not in held_set], sorted(held)


def _stratified_split(train: Any, labels: np.ndarray, fraction: float, seed: int) -> tuple[Any, Any]:
    """Deterministic per-class carve-out: ``round(fraction * n_c)`` (at least 1 when n_c >= 2) per class."""
    kept, held = _stratified_indices(labels, fraction, seed)
    return train.select(kept), train.select(held)


def _subsample(ds: Any, n: int | None, seed: int) -> Any:
    if n is None or n >= len(ds):
        return ds
    if n <= 0:
        raise DataError(f"max samples must be positive, got {n}.")
    return ds.shuffle(seed=seed).select(range(n))


def split_names(value: str | Sequence[str] | None) -> list[str]:
    """``"validation,test"`` / ``["validation", "test"]`` / ``None`` -> the names, in order, without repeats."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    out: list[str] = []
    for item in (i.strip() for i in items):
        if item and item not in out:
            out.append(item)
    return out


def select_eval_splits(
    dd: Any,
    eval_names: Sequence[str],
    *,
    train_split: str,
    preferred: str | None,
    by_domain: bool,
    need: Sequence[str],
    name: str,
) -> list[tuple[str, Any, str]]:
    """The eval sets as (name, split, origin): each of ``eval_names``, else (without domains) the preset's eval
    split or the first of :data:`EVAL_SPLITS` there is; each checked to hold the ``need`` columns and rows."""
    splits = list(dd.keys())
    evals_raw: list[tuple[str, Any, str]] = []
    for split in eval_names:
        if split not in dd:
            raise DataError(
                f"Split {split!r} not in {name!r} (splits: {splits}). Pass --eval-split, "
                "or leave it out to carve a stratified eval set from train."
            )
        evals_raw.append((split, dd[split], f"split {split!r}"))
    if not eval_names and not by_domain:
        preferred_splits = (preferred,) if preferred else ()
        found = [s for s in (*preferred_splits, *EVAL_SPLITS) if s in dd and s != train_split]
        if found:
            evals_raw.append((found[0], dd[found[0]], f"split {found[0]!r}"))
    for _, evald, origin in evals_raw:
        missing = [c for c in need if c not in evald.column_names]
        if missing:
            raise DataError(
                f"Eval split ({origin}) lacks column(s) {missing}; it has {evald.column_names}. "
                "Use a split with the same columns (--eval-split)."
            )
        if len(evald) == 0:
            raise DataError(
                f"Eval {origin} of {name!r} is empty. Pass another --eval-split, or none to carve "
                "one from train."
            )
    return evals_raw
