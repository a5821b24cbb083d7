"""Domain splits (leave-one-domain-out, docs/data.md "Domains"): train on the source domains, one eval set per
held-out target domain (and their union when there are several) plus an in-domain ``source`` carve-out, so that
a pruned model's out-of-domain accuracy is measured against its in-domain one."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DataError
from .labels import _labels_array
from .sources import _load_raw, _resolve_source
from .splits import _stratified_indices, split_names

#: eval-set names the domain split uses itself (a domain with one of these names is reported as "domain X")
SOURCE_SET, TARGET_SET = "source", "target"


def _domain_values(ds: Any, column: str) -> np.ndarray:
    """Each row's domain as a string (ClassLabel ids -> names)."""
    import datasets

    raw = _labels_array(ds, column)
    feat = ds.features.get(column)
    if isinstance(feat, datasets.ClassLabel):
        return np.asarray([feat.names[int(v)] for v in raw], dtype=object)
    return np.asarray([str(v) for v in raw], dtype=object)


def norm_domain(name: str) -> str:
    return "_".join(str(name).strip().lower().replace("-", " ").replace("_", " ").split())


def resolve_domains(asked: Sequence[str], available: Sequence[str], flag: str) -> list[str]:
    """The domains ``asked`` for, as the data spells them (exact, else case/space/underscore-insensitive)."""
    out: list[str] = []
    for name in asked:
        if name in available:
            found = name
        else:
            matches = [d for d in available if norm_domain(d) == norm_domain(name)]
            if len(matches) != 1:
                raise DataError(
                    f"{flag}: unknown domain {name!r}; the data set's domains are {list(available)}."
                )
            found = matches[0]
        if found not in out:
            out.append(found)
    return out


def domain_set_name(domain: str) -> str:
    """The eval-set name of a held-out domain (its own name unless that is ``source`` / ``target``)."""
    return f"domain {domain}" if domain in (SOURCE_SET, TARGET_SET) else domain


def _split_by_domain(
    train: Any,
    train_labels: np.ndarray,
    given_eval: tuple[str, Any, str] | None,
    column: str,
    train_domains: Sequence[str],
    test_domains: Sequence[str],
    holdout: float,
    seed: int,
    train_split: str,
) -> tuple[Any, list[tuple[str, Any, str]], dict[str, Any]]:
    """Leave-domains-out: (train rows of the source domains, eval sets, the split's description).

    Without an eval split: every train-split row of a test domain is target data (the domain is never
    seen), and ``holdout`` of each (source domain, class) is carved out (seeded) as the in-domain
    ``source`` eval set. With one: source = its rows of the train domains, targets = its rows of each test
    domain, and train keeps every source row of the train split.
    """
    values = _domain_values(train, column)
    in_train = sorted(set(values.tolist()))
    # the domains of every split the run uses: with an eval split, a test domain may exist only there
    parent_values = values if given_eval is None else _domain_values(given_eval[1], column)
    in_eval = sorted(set(parent_values.tolist()))
    available = sorted(set(in_train) | set(in_eval))
    tr = resolve_domains(train_domains, available, "--train-domains")
    te = resolve_domains(test_domains, available, "--test-domains")
    both = [d for d in tr if d in te]
    if both:
        raise DataError(
            f"Domain(s) {both} are in both --train-domains and --test-domains; a held-out domain must "
            "not be trained on. Give disjoint lists."
        )
    absent = [d for d in tr if d not in in_train]
    if absent:
        raise DataError(
            f"Train domain(s) {absent} have no images in split {train_split!r} (its domains: {in_train}). "
            "Check --train-domains / --train-split."
        )
    te = te or [d for d in in_eval if d not in tr]
    tr = tr or [d for d in in_train if d not in te]
    if not te:
        raise DataError(
            f"--train-domains lists every domain {available}; leave at least one out to test on (or "
            "give --test-domains)."
        )
    if not tr:
        raise DataError(
            f"--test-domains lists every domain {available}; leave at least one to train on (or give "
            "--train-domains)."
        )
    src = np.flatnonzero(np.isin(values, tr))
    source_eval = None
    if given_eval is None:
        parent, where = train, f"split {train_split!r}"
        if holdout > 0:
            dom_index = np.asarray([tr.index(v) for v in values[src]], dtype=np.int64)
            kept, held = _stratified_indices(
                train_labels[src].astype(np.int64) * len(tr) + dom_index, holdout, seed
            )
            train_idx, held_idx = src[kept], src[held]
            if len(held_idx):
                source_eval = (
                    train.select(held_idx.tolist()),
                    f"stratified {holdout:.0%} per (domain, class) of {tr} in {where} (seed {seed})",
                )
        else:
            train_idx = src
    else:
        _, parent, where = given_eval
        train_idx = src
        rows = np.flatnonzero(np.isin(parent_values, tr))
        if len(rows):
            source_eval = (parent.select(rows.tolist()), f"domains {tr} of {where}")
    if len(train_idx) == 0:
        raise DataError(
            f"The train domains {tr} have no images in split {train_split!r} (after the source "
            "hold-out). Check --train-domains / --train-split."
        )
    targets = []
    for d in te:
        rows = np.flatnonzero(parent_values == d)
        if len(rows) == 0:
            raise DataError(
                f"Test domain {d!r} has no images in {where}. Check --test-domains / --eval-split."
            )
        targets.append((d, rows))
    evals: list[tuple[str, Any, str]] = []
    if len(targets) > 1:
        union = np.sort(np.concatenate([rows for _, rows in targets]))
        evals.append((TARGET_SET, parent.select(union.tolist()), f"all of domains {te} in {where}"))
    evals += [
        (domain_set_name(d), parent.select(rows.tolist()), f"all of domain {d!r} in {where}")
        for d, rows in targets
    ]
    if source_eval is not None:
        evals.append((SOURCE_SET, *source_eval))
    train_values = values[train_idx]
    info = {
        "column": column,
        "available": available,
        "train": tr,
        "test": te,
        "target_set": evals[0][0],
        "source_set": SOURCE_SET if source_eval is not None else None,
        "source_holdout": holdout if given_eval is None else None,
        "train_images": {d: int((train_values == d).sum()) for d in tr},
        "eval_images": {name: len(ds) for name, ds, _ in evals},
    }
    return train.select(train_idx.tolist()), evals, info


def check_domain_options(
    train: Any,
    name: str,
    *,
    by_domain: bool,
    domain_column: str | None,
    explicit_domain_column: str | None,
    eval_names: Sequence[str],
) -> None:
    """Refuse a domain split that cannot be made (no or a wrong ``--domain-column``, several eval splits), and
    a ``--domain-column`` without the domains to hold out (naming them)."""
    cols = train.column_names
    if by_domain:
        if domain_column is None:
            raise DataError(
                f"--train-domains / --test-domains need --domain-column COL, the column that names each "
                f"image's domain; {name!r} has columns {cols}."
            )
        if domain_column not in cols:
            raise DataError(
                f"Domain column {domain_column!r} not found; {name!r} has columns {cols}. Pass the right "
                "name with --domain-column."
            )
        if len(eval_names) > 1:
            raise DataError(
                f"With --domain-column give at most one --eval-split (got {eval_names}): its rows of the "
                "test domains become the target eval sets, its rows of the train domains the source one."
            )
    elif explicit_domain_column is not None:
        if explicit_domain_column not in cols:
            raise DataError(
                f"Domain column {explicit_domain_column!r} not found; {name!r} has columns {cols}. "
                "Pass the right name with --domain-column."
            )
        avail = sorted(set(_domain_values(train, explicit_domain_column).tolist()))
        raise DataError(
            f"--domain-column {explicit_domain_column} needs the held-out domain(s): --test-domains "
            f"{avail[-1]} (leave-one-domain-out), or --train-domains; the domains are {avail}."
        )


def list_domains(
    source: str | os.PathLike[str] | Any,
    *,
    domain_column: str | None = None,
    train_split: str = "train",
    preset: str | None = None,
    eval_split: str | Sequence[str] | None = None,
) -> list[str]:
    """The domains of a data set's train split and of ``eval_split`` if given (sorted), as
    ``--test-domains`` accepts them: with an eval split a test domain may exist only there."""
    source, pre, _ = _resolve_source(source, preset)
    column = domain_column or (pre.domain_column if pre is not None else None)
    dd, how = _load_raw(source)
    if train_split not in dd:
        raise DataError(
            f"Split {train_split!r} not in the data set (splits: {list(dd.keys())}). Pass --train-split."
        )
    train = dd[train_split]
    if column is None or column not in train.column_names:
        what = "No --domain-column given" if column is None else f"Domain column {column!r} not found"
        raise DataError(
            f"{what}; the data set has columns {train.column_names}. Name the column that holds "
            "each image's domain with --domain-column."
        )
    found = set(_domain_values(train, column).tolist())
    for split in split_names(eval_split):
        if split in dd and column in dd[split].column_names:
            found |= set(_domain_values(dd[split], column).tolist())
    return sorted(found)
