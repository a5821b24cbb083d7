"""One loader for image-classification data: Hub names, ``save_to_disk`` dirs, parquet and imagefolder.

Why one loader: every command (prune, finetune, compare, demo) must see the same columns, label names,
splits and eval carve-out, and fail the same way on bad input (one :class:`DataError` naming the problem
and the fix) instead of a KeyError deep inside a Trainer step.

* ``load_image_dataset(source, ...) -> ImageData`` -- raw ``datasets.Dataset`` train/eval + column names
  + label names. ``source`` is a preset (``cifar100``, ``food101``, ``ifood2019``, ``inat2019``), a Hub id,
  a ``save_to_disk`` directory, a directory (or file) of parquet, or an imagefolder directory.
  Eval split: ``eval_split`` if given (a name or several: each becomes a named eval set), else the first
  of validation/valid/val/test that exists, else a deterministic stratified carve-out of ``eval_fraction``
  of train (per class, seeded). Domains (``domain_column`` + ``train_domains`` / ``test_domains``): train on
  the source domains, one eval set per held-out target domain plus an in-domain ``source`` carve-out
  (leave-one-domain-out, docs/data.md "Domains").
  Before returning it checks every image the run will read (:func:`check_images`: truncated, empty,
  not-an-image, decompression-bomb files are named in one error, or left out up to ``max_bad_images``),
  and refuses data that would train a wrong model with exit 0 (one class, a class without training images).
* ``build_datasets(data, image_processor, image_size=..., augment=...)`` -- ``with_transform`` datasets
  yielding ``{"pixel_values": FloatTensor[3,S,S], "labels": int}`` (see :mod:`p3b_hf.transforms`).
  Use them with ``TrainingArguments(remove_unused_columns=False)``: the Trainer would otherwise drop the
  raw image/label columns before the transform runs (hf notes 3.5).
* ``make_collator(num_classes, ...)`` -- Mixup/CutMix/label smoothing on training batches only.
* ``devbench_dataset_dict(npz, json)`` -- the dev-bench arrays as a ``DatasetDict``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError
from .models.families import family_of
from .options import IMAGE_CHECKS
from .transforms import AUGMENTS, make_image_transform, mix_batch, preprocess_from_processor

logger = logging.getLogger(__name__)

IMAGE_COLUMNS = ("img", "image", "images", "picture", "pixel_values")
LABEL_COLUMNS = ("fine_label", "label", "labels", "class", "target", "category")
EVAL_SPLITS = ("validation", "valid", "val", "test")
# Key the train transform adds so that make_collator mixes train batches but never eval batches (the
# Trainer uses one data_collator for both). make_collator removes it; it never reaches the model.
TRAIN_MARKER = "_p3b_train"


@dataclass(frozen=True)
class Preset:
    """Known data sets: Hub id (None = build it locally, see docs/data.md), columns, splits."""

    hub_id: str | None
    image_column: str
    label_column: str
    train_split: str = "train"
    eval_split: str | None = None
    note: str = ""
    domain_column: str | None = None  # the column naming each image's domain (domain-generalisation sets)
    domains: tuple[str, ...] = ()  # the domains as the Hub copy spells them (documentation; the data decides)


PRESETS: dict[str, Preset] = {
    # CIFAR-100 has only train/test; P3B and DeiT report test accuracy, so test is the eval split.
    "cifar100": Preset("uoft-cs/cifar100", "img", "fine_label", "train", "test"),
    "food101": Preset("ethz/food101", "image", "label", "train", "validation", "Hub stand-in for iFood 2019"),
    "ifood2019": Preset(
        None,
        "image",
        "label",
        "train",
        "validation",
        "FoodX-251 has no Hub repo: build an imagefolder (ifood2019/{train,validation}/<class>/*.jpg)",
    ),
    "inat2019": Preset(
        None,
        "image",
        "label",
        "train",
        "validation",
        "iNat 2019 has no Hub repo: build an imagefolder (inat2019/{train,validation}/<class>/*.jpg)",
    ),
    # Domain generalisation (arXiv 2504.04196 evaluates on both): one split holding every domain, a string
    # domain column and a ClassLabel label column (the Flower Labs Hub copies). Train on some domains and
    # test on the others with --train-domains / --test-domains.
    "pacs": Preset(
        "flwrlabs/pacs",
        "image",
        "label",
        "train",
        None,
        "PACS (Li et al. 2017): 9,991 images, 7 classes, 4 domains",
        domain_column="domain",
        domains=("art_painting", "cartoon", "photo", "sketch"),
    ),
    "office-home": Preset(
        "flwrlabs/office-home",
        "image",
        "label",
        "train",
        None,
        "Office-Home (Venkateswara et al. 2017): 15,588 images, 65 classes, 4 domains",
        domain_column="domain",
        domains=("Art", "Clipart", "Product", "Real World"),
    ),
}
PRESETS["officehome"] = PRESETS["office-home"]


@dataclass
class ImageData:
    """Raw splits plus what the transforms need to read them."""

    train: Any  # datasets.Dataset
    eval: Any  # datasets.Dataset
    image_column: str
    label_column: str
    labels: list[str]
    source: str = ""
    eval_origin: str = ""  # e.g. "split 'test'" or "stratified 10% of train (seed 0)"
    info: dict[str, Any] = field(default_factory=dict)
    #: every eval set by name, in report order; the first is ``eval`` (the primary one, which the methods
    #: evaluate while they run). One entry unless several eval splits or domains were asked for.
    evals: dict[str, Any] = field(default_factory=dict)
    eval_origins: dict[str, str] = field(default_factory=dict)
    #: the domain split (:meth:`DomainSplit.as_dict`) when ``domain_column`` was used, else None
    domains: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.evals:
            self.evals = {"eval": self.eval}
        if not self.eval_origins:
            self.eval_origins = {name: self.eval_origin for name in self.evals}

    @property
    def primary_eval(self) -> str:
        """Name of the primary eval set (``eval``): the held-out target when domains are used."""
        return next(iter(self.evals))

    @property
    def source_eval(self) -> str | None:
        """Name of the in-domain eval set of the source domains (the gap's reference), if there is one."""
        return (self.domains or {}).get("source_set")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}


# ------------------------------------------------------------------------------------- loading


def _is_save_to_disk(p: Path) -> bool:
    return p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "state.json").exists())


def _parquet_files(p: Path) -> list[Path]:
    if p.is_file():
        return [p] if p.suffix == ".parquet" else []
    return sorted(p.rglob("*.parquet"))


def _split_of(
    parts: Sequence[str], splits: Sequence[str] = ("train", "validation", "valid", "val", "test")
) -> str:
    """Split named by the file name (``train-00000-of-00001.parquet``) or else its nearest folder."""
    for name in reversed(parts):
        stem = name.lower()
        for s in splits:
            if stem == s or stem.startswith((s + "-", s + "_", s + ".")):
                return s
    return "train"


def _load_raw(source: Any) -> tuple[Any, str]:
    """Return (DatasetDict, how it was loaded)."""
    import datasets

    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        dd = datasets.DatasetDict({"train": source}) if isinstance(source, datasets.Dataset) else source
        return dd, "in-memory"
    source = os.fspath(source)
    p = Path(source).expanduser()
    looks_local = source.startswith((".", "/", "~")) or source.count("/") > 1 or p.exists()
    if looks_local and not p.exists():
        raise DataError(
            f"Data path {source!r} does not exist. Give an existing save_to_disk / imagefolder / "
            "parquet directory, a Hub id like uoft-cs/cifar100, or a preset "
            f"({', '.join(PRESETS)})."
        )
    if p.exists():
        try:
            if _is_save_to_disk(p):
                ds = datasets.load_from_disk(str(p))
                how = "load_from_disk"
            elif pq := _parquet_files(p):
                files: dict[str, list[str]] = {}
                for f in pq:
                    split = _split_of(f.relative_to(p).parts) if p.is_dir() else "train"
                    files.setdefault(split, []).append(str(f))
                ds = datasets.load_dataset("parquet", data_files=files)
                how = "parquet"
            elif p.is_dir():
                ds = datasets.load_dataset("imagefolder", data_dir=str(p))
                how = "imagefolder"
            else:
                raise DataError(
                    f"{source} is a file but not a .parquet file. Give a directory "
                    "(save_to_disk, imagefolder or parquet files) or a .parquet file."
                )
        except DataError:
            raise
        except Exception as e:  # datasets raises many types for unreadable layouts
            raise DataError(
                f"Cannot read {source!r} as a data set ({type(e).__name__}: {e}). Expected a "
                "datasets.save_to_disk directory, parquet files, or an imagefolder layout "
                "<dir>/<split>/<class>/<image> (see docs/data.md)."
            ) from e
    else:
        try:
            ds = datasets.load_dataset(source)
            how = "hub"
        except Exception as e:
            offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") or os.environ.get(
                "HF_DATASETS_OFFLINE"
            ) in ("1", "true", "True")
            hint = (
                (
                    " HF_HUB_OFFLINE is set, so only data sets already in the HF cache load; run once online "
                    "or point --dataset at a local copy."
                )
                if offline
                else ""
            )
            raise DataError(
                f"Cannot load data set {source!r} from the Hub ({type(e).__name__}: {e}).{hint} "
                "Check the id, or give a local save_to_disk/imagefolder/parquet path."
            ) from e
    if isinstance(ds, datasets.Dataset):
        ds = datasets.DatasetDict({"train": ds})
    return ds, how


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


def _labels_array(ds: Any, column: str) -> np.ndarray:
    return np.asarray(ds.select_columns([column]).with_format("numpy")[column])


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


# ------------------------------------------------------------------------------------- domains
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


def _resolve_source(source: Any, preset: str | None) -> tuple[Any, Preset | None, str]:
    """(what to load, the preset or None, its key): a preset name stands for its Hub id."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    key = (preset or (source if isinstance(source, str) and source in PRESETS else "")).lower()
    if preset is not None and key not in PRESETS:
        raise DataError(f"Unknown preset {preset!r}; known: {', '.join(PRESETS)}.")
    pre = PRESETS.get(key)
    if pre is not None and source == key:
        if pre.hub_id is None:
            raise DataError(
                f"Preset {key!r} has no Hub repo: {pre.note}. Build that layout locally and pass "
                f"its directory: --dataset /path/to/{key} (see docs/data.md)."
            )
        source = pre.hub_id
    return source, pre, key


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
    import datasets

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
    eval_names = split_names(eval_split)
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

    evals_raw: list[tuple[str, Any, str]] = []
    for split in eval_names:
        if split not in dd:
            raise DataError(
                f"Split {split!r} not in {name!r} (splits: {splits}). Pass --eval-split, "
                "or leave it out to carve a stratified eval set from train."
            )
        evals_raw.append((split, dd[split], f"split {split!r}"))
    if not eval_names and not by_domain:
        preferred = (pre.eval_split,) if pre is not None and pre.eval_split else ()
        found = [s for s in (*preferred, *EVAL_SPLITS) if s in dd and s != train_split]
        if found:
            evals_raw.append((found[0], dd[found[0]], f"split {found[0]!r}"))
    for _, evald, origin in evals_raw:
        need = (img_col, lab_col) + ((domain_column,) if by_domain else ())
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


# -------------------------------------------------------------------------------- image checks
#: how many bad images an error or the log lists by name (the rest are counted)
BAD_IMAGES_LISTED = 10
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"


def open_image(value: Any) -> Any:
    """A stored image as a loaded PIL image: a PIL image, a ``{"bytes", "path"}`` dict (the ``Image``
    feature's storage, also what parquet files written without HF metadata hold), raw encoded bytes, a
    file path, or a pixel array."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        raw, path = value.get("bytes"), value.get("path")
        if raw is None and not path:
            raise DataError("an image entry with neither bytes nor a path")
        value = raw if raw is not None else path
    if isinstance(value, (bytes, bytearray, memoryview)):
        im = Image.open(io.BytesIO(bytes(value)))
    elif isinstance(value, (str, os.PathLike)):
        im = Image.open(value)
    else:
        return Image.fromarray(np.asarray(value))
    im.load()
    return im


def _tail(raw: bytes | None, path: str | None, n: int = 64) -> bytes:
    if raw is not None:
        return raw[-n:]
    with open(path or "", "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - n))
        return f.read()


def image_problem(value: Any, mode: str = "full") -> str | None:
    """Why this stored image cannot be used for training (``None``: it can), without decoding it fully where
    that is not needed.

    ``mode="full"``: open, check the size against ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb is
    refused before any pixel is decoded), then decode (JPEG at 1/8 scale via ``draft``: every byte is still
    read, so truncation shows, at a fraction of the cost). ``"header"``: open and size check, plus the PNG /
    JPEG end-of-file marker; only an image whose marker is missing is decoded to confirm it is truncated.
    """
    from PIL import Image, UnidentifiedImageError

    raw, path = None, None
    if isinstance(value, dict):
        raw, path = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    elif isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
    elif not isinstance(value, Image.Image):
        try:
            open_image(value)
        except Exception as e:
            return f"not an image array ({type(e).__name__}: {e})"
        return None
    else:
        return None
    if raw is None and not path:
        return "no image (neither bytes nor a path)"
    try:
        if (len(raw) if raw is not None else os.path.getsize(path or "")) == 0:
            return "empty file (0 bytes)"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked explicitly below
            im = Image.open(io.BytesIO(raw) if raw is not None else path)
        with im:
            w, h = im.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit and w * h > limit:
                return (
                    f"decompression bomb: its header claims {w}x{h} = {w * h:,} pixels > "
                    f"PIL.Image.MAX_IMAGE_PIXELS = {limit:,} (raise that limit if the image is genuine)"
                )
            if mode == "header":
                end = {"PNG": _PNG_END, "JPEG": _JPEG_END}.get(im.format or "")
                if end is None or end in _tail(raw, path):
                    return None
            if im.format == "JPEG":
                im.draft(im.mode, (max(1, w // 8), max(1, h // 8)))
            im.load()
    except FileNotFoundError:
        return "file not found"
    except UnidentifiedImageError:
        return "not an image PIL can read (another file type, or a corrupt header)"
    except Image.DecompressionBombError:
        return (
            "decompression bomb: its header claims more than twice PIL.Image.MAX_IMAGE_PIXELS = "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels (raise that limit if the image is genuine)"
        )
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error ... for broken data
        text = str(e)
        if "truncated" in text or isinstance(e, EOFError):
            return f"truncated ({text or type(e).__name__})"
        return f"corrupt ({type(e).__name__}: {text})"
    return None


def _split_rows(ds: Any) -> np.ndarray:
    """Each row's position in the split it was selected from: ``select`` / ``shuffle`` keep an indices
    mapping onto the split's table (datasets' ``_indices``), which names a bad row the way the user can find
    it (``split 'train' row 17``) after carve-outs and subsets."""
    indices = getattr(ds, "_indices", None)
    if indices is None:
        return np.arange(len(ds))
    return np.asarray(indices.column(0).to_numpy())


def _cacheable(ds: Any) -> bool:
    """Cache the check beside the data set only inside the HF datasets cache (never in a user's
    ``save_to_disk`` directory, which may be read-only or shared)."""
    import datasets

    root = Path(datasets.config.HF_DATASETS_CACHE).resolve()
    files = [Path(f["filename"]).resolve() for f in ds.cache_files]
    return bool(files) and all(root in f.parents and os.access(f.parent, os.W_OK) for f in files)


def _problems(ds: Any, column: str, mode: str, what: str) -> list[str]:
    """:func:`image_problem` of every row of ``ds`` ("" = fine), as one ``datasets.map`` pass (progress bar;
    cached by the data set's fingerprint when :func:`_cacheable`, so a re-run is instant)."""
    import datasets

    view = ds.select_columns([column])
    if isinstance(view.features[column], datasets.Image):
        view = view.cast_column(column, datasets.Image(decode=False))

    def check(batch: dict[str, list[Any]]) -> dict[str, list[str]]:
        return {"_p3b_problem": [image_problem(v, mode) or "" for v in batch[column]]}

    cache = _cacheable(view)
    out = view.map(
        check,
        batched=True,
        batch_size=64,
        remove_columns=[column],
        desc=f"Checking the images of {what}",
        keep_in_memory=not cache,
        load_from_cache_file=cache,
    )
    return list(out["_p3b_problem"])


def check_images(
    sets: Sequence[tuple[str, Any, str]], column: str, mode: str, max_bad: int
) -> tuple[list[Any], dict[str, Any]]:
    """Check every image the run will read -- ``sets`` = (what, dataset, split it was selected from) -- before
    any training, so that a bad file never stops a run mid-way or at its final evaluation.

    Bad images are named (file path, else ``split 'S' row R``) with the reason. More than ``max_bad``
    (distinct) bad images: one :class:`DataError` listing them. Otherwise they are left out of every set,
    with one log line. Returns (the sets' datasets, bad images left out; ``{"checked", "dropped",
    "names"}``)."""
    if mode not in IMAGE_CHECKS:
        raise DataError(f"Unknown image check {mode!r}; choose one of {', '.join(IMAGE_CHECKS)}.")
    out = [ds for _, ds, _ in sets]
    if mode == "off":
        return out, {"checked": 0, "dropped": 0, "names": []}
    import datasets

    bad: dict[tuple[str, int], str] = {}  # (split, row) -> "name: reason"
    bad_pos: list[list[int]] = []
    checked = 0
    for what, ds, split in sets:
        feat = ds.features.get(column)
        if isinstance(feat, datasets.Value) and feat.dtype not in (
            "binary",
            "large_binary",
            "string",
            "large_string",
        ):
            raise DataError(
                f"Image column {column!r} holds {feat.dtype} values, not images. Pass the image column "
                "with --image-column."
            )
        problems = _problems(ds, column, mode, what)
        checked += len(problems)
        positions = [i for i, p in enumerate(problems) if p]
        bad_pos.append(positions)
        if not positions:
            continue
        rows = _split_rows(ds)
        raw = ds.select_columns([column])
        if isinstance(raw.features[column], datasets.Image):
            raw = raw.cast_column(column, datasets.Image(decode=False))
        for i in positions:
            value = raw[i][column]
            path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
            on_disk = bool(path) and (not isinstance(value, dict) or value.get("bytes") is None)
            where = f"split {split!r} row {int(rows[i])}"
            name = path if on_disk else where + (f" ({path})" if path else "")
            bad.setdefault((split, int(rows[i])), f"{name}: {problems[i]}")
    if not bad:
        return out, {"checked": checked, "dropped": 0, "names": []}
    listed = list(bad.values())
    shown = "; ".join(listed[:BAD_IMAGES_LISTED])
    more = f"; and {len(listed) - BAD_IMAGES_LISTED} more" if len(listed) > BAD_IMAGES_LISTED else ""
    if len(bad) > max_bad:
        limit = f" (the limit is --max-bad-images {max_bad})" if max_bad else ""
        raise DataError(
            f"{len(bad)} of the {checked} images this run uses cannot be read{limit}: {shown}{more}. "
            f"Replace or delete these files, or pass --max-bad-images {len(bad)} to leave them out."
        )
    logger.warning(
        "Left out %d unreadable image(s) of %d (--max-bad-images %d): %s%s",
        len(bad),
        checked,
        max_bad,
        shown,
        more,
    )
    for k, positions in enumerate(bad_pos):
        if positions:
            drop = set(positions)
            out[k] = out[k].select([i for i in range(len(out[k])) if i not in drop])
            if len(out[k]) == 0:
                raise DataError(
                    f"Every image of {sets[k][0]} is unreadable ({shown}{more}). Replace these files."
                )
    return out, {"checked": checked, "dropped": len(bad), "names": listed}


# ---------------------------------------------------------------------------------- transforms


def _batch_transform(
    tf: Callable[[Any], torch.Tensor], img_col: str, lab_col: str, train: bool
) -> Callable[[dict[str, list[Any]]], dict[str, Any]]:
    from PIL import Image

    def apply(batch: dict[str, list[Any]]) -> dict[str, Any]:
        imgs = [im if isinstance(im, Image.Image) else open_image(im) for im in batch[img_col]]
        out: dict[str, Any] = {
            "pixel_values": [tf(im) for im in imgs],
            "labels": [int(v) for v in batch[lab_col]],
        }
        if train:
            out[TRAIN_MARKER] = [True] * len(imgs)
        return out

    return apply


def model_image_size(config: Any) -> int | None:
    """The input resolution to feed a model of this (stock or pruned) config, or ``None``: the image
    processor decides.

    ViT, DeiT and BEiT run at ``config.image_size``. DINOv2 interpolates its position embeddings to any
    input: its ``config.image_size`` (518 for the Hub checkpoints) is the pretraining grid, while its image
    processor resizes the short side to 256 and centre-crops 224 -- the resolution it is fine-tuned at.
    """
    fam = family_of(config)
    if fam is not None and not fam.feeds_config_image_size:  # the record: Family.feeds_config_image_size
        return None
    size = config.image_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def build_datasets(
    data: ImageData,
    image_processor: Any,
    *,
    image_size: int | None = None,
    augment: str = "deit",
    use_torchvision: bool | None = None,
) -> tuple[Any, Any]:
    """Train/eval datasets with on-the-fly transforms (train: ``augment`` recipe; eval: resize + normalise).

    Mean/std (and the eval resize rule) come from ``image_processor``; ``image_size`` defaults to the
    processor's size (pass ``model.config.image_size``). Train items also carry a marker key that
    :func:`make_collator` consumes, so always pair these datasets with that collator.
    """
    if augment not in AUGMENTS:
        raise DataError(f"Unknown --augment {augment!r}; choose one of {', '.join(AUGMENTS)}.")
    pre = preprocess_from_processor(image_processor, image_size)
    train_tf = make_image_transform(augment, pre, train=True, use_torchvision=use_torchvision)
    eval_tf = make_image_transform(augment, pre, train=False)
    train_ds = data.train.with_transform(
        _batch_transform(train_tf, data.image_column, data.label_column, True)
    )
    eval_ds = data.eval.with_transform(_batch_transform(eval_tf, data.image_column, data.label_column, False))
    return train_ds, eval_ds


def build_eval_sets(
    data: ImageData, image_processor: Any, *, image_size: int | None = None, augment: str = "deit"
) -> dict[str, Any]:
    """Every eval set of ``data`` (``data.evals``, same order) with the eval transform of :func:`build_datasets`."""
    if augment not in AUGMENTS:
        raise DataError(f"Unknown --augment {augment!r}; choose one of {', '.join(AUGMENTS)}.")
    eval_tf = make_image_transform(
        augment, preprocess_from_processor(image_processor, image_size), train=False
    )
    return {
        name: ds.with_transform(_batch_transform(eval_tf, data.image_column, data.label_column, False))
        for name, ds in data.evals.items()
    }


class MixCollator:
    """Stacks ``pixel_values``/``labels``; on training batches applies Mixup/CutMix/label smoothing.

    Training batches are recognised by the marker the train transform of :func:`build_datasets` adds
    (the Trainer uses one collator for train and eval, and eval must stay unmixed with integer labels).
    Items without the marker (eval items, or a data set built elsewhere) are collated as eval unless
    ``mix_unmarked=True``; when mixing is configured and no marked batch has been seen yet, a one-time
    warning says so (it catches foreign training sets, whose first batch is a training batch).
    """

    def __init__(
        self,
        num_classes: int,
        mixup: float,
        cutmix: float,
        label_smoothing: float,
        enabled: bool,
        mix_unmarked: bool = False,
    ) -> None:
        self.num_classes, self.mixup, self.cutmix = num_classes, mixup, cutmix
        self.label_smoothing, self.enabled, self.mix_unmarked = label_smoothing, enabled, mix_unmarked
        self._warned = self._seen_marked = False

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        wants = self.enabled and (self.mixup > 0 or self.cutmix > 0 or self.label_smoothing > 0)
        marked = all(TRAIN_MARKER in f for f in features)
        is_train = marked or self.mix_unmarked
        self._seen_marked = self._seen_marked or marked
        # unmarked batches are eval batches of build_datasets, or train batches of a foreign data set:
        # warn while no marked (train) batch has been seen, since then the second case is likely
        if wants and not marked and not self.mix_unmarked and not self._seen_marked and not self._warned:
            self._warned = True
            logger.warning(
                "make_collator: batch items lack the build_datasets train marker, so they are "
                "collated without Mixup/CutMix/label smoothing (as eval). Build the data sets with "
                "p3b_hf.data.build_datasets, or pass mix_unmarked=True for a train-only collator."
            )
        pixel_values = torch.stack([torch.as_tensor(f["pixel_values"]) for f in features])
        labels = torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)
        active = wants and is_train
        if active:
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise DataError(
                    f"Batch labels {labels.tolist()[:5]} exceed num_classes={self.num_classes}; "
                    "build the collator with the data set's number of labels."
                )
            pixel_values, targets = mix_batch(
                pixel_values,
                labels,
                self.num_classes,
                mixup=self.mixup,
                cutmix=self.cutmix,
                label_smoothing=self.label_smoothing,
            )
            return {"pixel_values": pixel_values, "labels": targets}
        return {"pixel_values": pixel_values, "labels": labels}


def make_collator(
    num_classes: int,
    *,
    mixup: float = 0.8,
    cutmix: float = 1.0,
    label_smoothing: float = 0.1,
    enabled: bool = True,
    mix_unmarked: bool = False,
) -> MixCollator:
    """The Trainer's ``data_collator``: dense float targets [B, K] on mixed training batches.

    ``mix_unmarked=True``: also mix items that do not come from :func:`build_datasets` (use that only for
    a collator that never sees eval batches).
    """
    if num_classes < 1:
        raise DataError(f"num_classes must be >= 1, got {num_classes}.")
    if not 0.0 <= label_smoothing < 1.0:  # NaN fails too
        raise DataError(f"label_smoothing={label_smoothing} must lie in [0, 1) (e.g. 0.1; 0 = off).")
    if not (mixup >= 0.0 and cutmix >= 0.0):
        raise DataError(f"mixup={mixup} / cutmix={cutmix} must be alphas >= 0 (0 = off).")
    return MixCollator(num_classes, mixup, cutmix, label_smoothing, enabled, mix_unmarked)


# ------------------------------------------------------------------------------------ dev-bench


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
