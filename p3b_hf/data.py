"""One loader for image-classification data: Hub names, ``save_to_disk`` dirs, parquet and imagefolder.

Why one loader: every command (prune, finetune, compare, demo) must see the same columns, label names,
splits and eval carve-out, and fail the same way on bad input (one :class:`DataError` naming the problem
and the fix) instead of a KeyError deep inside a Trainer step.

* ``load_image_dataset(source, ...) -> ImageData`` -- raw ``datasets.Dataset`` train/eval + column names
  + label names. ``source`` is a preset (``cifar100``, ``food101``, ``ifood2019``, ``inat2019``), a Hub id,
  a ``save_to_disk`` directory, a directory (or file) of parquet, or an imagefolder directory.
  Eval split: ``eval_split`` if given, else the first of validation/valid/val/test that exists, else a
  deterministic stratified carve-out of ``eval_fraction`` of train (per class, seeded).
* ``build_datasets(data, image_processor, image_size=..., augment=...)`` -- ``with_transform`` datasets
  yielding ``{"pixel_values": FloatTensor[3,S,S], "labels": int}`` (see :mod:`p3b_hf.transforms`).
  Use them with ``TrainingArguments(remove_unused_columns=False)``: the Trainer would otherwise drop the
  raw image/label columns before the transform runs (hf notes 3.5).
* ``make_collator(num_classes, ...)`` -- Mixup/CutMix/label smoothing on training batches only.
* ``devbench_dataset_dict(npz, json)`` -- the dev-bench arrays as a ``DatasetDict``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError
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


PRESETS: dict[str, Preset] = {
    # CIFAR-100 has only train/test; P3B and DeiT report test accuracy, so test is the eval split.
    "cifar100": Preset("uoft-cs/cifar100", "img", "fine_label", "train", "test"),
    "food101": Preset("ethz/food101", "image", "label", "train", "validation",
                      "Hub stand-in for iFood 2019"),
    "ifood2019": Preset(None, "image", "label", "train", "validation",
                        "FoodX-251 has no Hub repo: build an imagefolder (ifood2019/{train,validation}/<class>/*.jpg)"),
    "inat2019": Preset(None, "image", "label", "train", "validation",
                       "iNat 2019 has no Hub repo: build an imagefolder (inat2019/{train,validation}/<class>/*.jpg)"),
}


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


def _split_of(parts: Sequence[str], splits: Sequence[str] = ("train", "validation", "valid", "val", "test")) -> str:
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
        raise DataError(f"Data path {source!r} does not exist. Give an existing save_to_disk / imagefolder / "
                        "parquet directory, a Hub id like uoft-cs/cifar100, or a preset "
                        f"({', '.join(PRESETS)}).")
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
                raise DataError(f"{source} is a file but not a .parquet file. Give a directory "
                                "(save_to_disk, imagefolder or parquet files) or a .parquet file.")
        except DataError:
            raise
        except Exception as e:  # datasets raises many types for unreadable layouts
            raise DataError(f"Cannot read {source!r} as a data set ({type(e).__name__}: {e}). Expected a "
                            "datasets.save_to_disk directory, parquet files, or an imagefolder layout "
                            "<dir>/<split>/<class>/<image> (see docs/data.md).") from e
    else:
        try:
            ds = datasets.load_dataset(source)
            how = "hub"
        except Exception as e:
            offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") or os.environ.get(
                "HF_DATASETS_OFFLINE") in ("1", "true", "True")
            hint = (" HF_HUB_OFFLINE is set, so only data sets already in the HF cache load; run once online "
                    "or point --dataset at a local copy.") if offline else ""
            raise DataError(f"Cannot load data set {source!r} from the Hub ({type(e).__name__}: {e}).{hint} "
                            "Check the id, or give a local save_to_disk/imagefolder/parquet path.") from e
    if isinstance(ds, datasets.Dataset):
        ds = datasets.DatasetDict({"train": ds})
    return ds, how


def _detect(columns: Sequence[str], features: Any, given: str | None, candidates: Sequence[str],
            kind: str, flag: str, feature_type: type | None) -> str:
    if given is not None:
        if given not in columns:
            raise DataError(f"{kind} column {given!r} not found; the data set has columns {list(columns)}. "
                            f"Pass the right name with {flag}.")
        return given
    for c in candidates:
        if c in columns:
            return c
    if feature_type is not None:
        typed = [c for c in columns if isinstance(features.get(c), feature_type)]
        if len(typed) == 1:
            return typed[0]
    raise DataError(f"No {kind.lower()} column found among {list(columns)} (looked for {', '.join(candidates)}). "
                    f"Name it with {flag}.")


def _labels_array(ds: Any, column: str) -> np.ndarray:
    return np.asarray(ds.select_columns([column]).with_format("numpy")[column])


def _stratified_split(train: Any, labels: np.ndarray, fraction: float, seed: int) -> tuple[Any, Any]:
    """Deterministic per-class carve-out: ``round(fraction * n_c)`` (at least 1 when n_c >= 2) per class."""
    rng = np.random.default_rng(seed)
    eval_idx: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(fraction * len(idx)))
        k = max(k, 1) if len(idx) >= 2 else 0
        eval_idx.extend(rng.permutation(idx)[:k].tolist())
    eval_set = set(eval_idx)
    train_idx = [i for i in range(len(labels)) if i not in eval_set]
    return train.select(train_idx), train.select(sorted(eval_idx))


def _subsample(ds: Any, n: int | None, seed: int) -> Any:
    if n is None or n >= len(ds):
        return ds
    if n <= 0:
        raise DataError(f"max samples must be positive, got {n}.")
    return ds.shuffle(seed=seed).select(range(n))


def load_image_dataset(source: str | os.PathLike[str] | Any, *, image_column: str | None = None, label_column: str | None = None,
                       train_split: str = "train", eval_split: str | None = None, preset: str | None = None,
                       max_train_samples: int | None = None, max_eval_samples: int | None = None,
                       seed: int = 0, eval_fraction: float = 0.1) -> ImageData:
    """Load train/eval splits of an image-classification data set and validate columns and labels.

    ``preset`` (or a ``source`` that names one) supplies Hub id, columns and splits; explicit arguments
    win. ``source`` may also be an in-memory ``Dataset``/``DatasetDict`` (the demo uses that). Labels: a ``ClassLabel`` column gives the names; integer columns become ``"0".."K-1"``; string
    columns are mapped to sorted train label names (eval may not introduce new ones).
    """
    import datasets

    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    key = (preset or (source if isinstance(source, str) and source in PRESETS else "")).lower()
    if preset is not None and key not in PRESETS:
        raise DataError(f"Unknown preset {preset!r}; known: {', '.join(PRESETS)}.")
    pre = PRESETS.get(key)
    if pre is not None:
        image_column = image_column or pre.image_column
        label_column = label_column or pre.label_column
        if source == key:
            if pre.hub_id is None:
                raise DataError(f"Preset {key!r} has no Hub repo: {pre.note}. Build that layout locally and pass "
                                f"its directory: --dataset /path/to/{key} (see docs/data.md).")
            source = pre.hub_id
    dd, how = _load_raw(source)
    name = source if isinstance(source, str) else f"<{how} data set>"
    splits = list(dd.keys())
    if train_split not in dd:
        raise DataError(f"Split {train_split!r} not in {name!r} (splits: {splits}). Pass --train-split.")
    train = dd[train_split]
    if len(train) == 0:
        raise DataError(f"Split {train_split!r} of {name!r} is empty. Check the data set or pass another "
                        "--train-split.")
    cols = train.column_names
    img_col = _detect(cols, train.features, image_column, IMAGE_COLUMNS, "Image", "--image-column",
                      datasets.Image)
    lab_col = _detect(cols, train.features, label_column, LABEL_COLUMNS, "Label", "--label-column",
                      datasets.ClassLabel)

    if eval_split is not None:
        if eval_split not in dd:
            raise DataError(f"Split {eval_split!r} not in {name!r} (splits: {splits}). Pass --eval-split, "
                            "or leave it out to carve a stratified eval set from train.")
        evald, origin = dd[eval_split], f"split {eval_split!r}"
    else:
        preferred = (pre.eval_split,) if pre is not None and pre.eval_split else ()
        found = [s for s in (*preferred, *EVAL_SPLITS) if s in dd and s != train_split]
        evald, origin = (dd[found[0]], f"split {found[0]!r}") if found else (None, "")
    if evald is not None:
        missing = [c for c in (img_col, lab_col) if c not in evald.column_names]
        if missing:
            raise DataError(f"Eval split ({origin}) lacks column(s) {missing}; it has {evald.column_names}. "
                            "Use a split with the same columns (--eval-split).")
        if len(evald) == 0:
            raise DataError(f"Eval {origin} of {name!r} is empty. Pass another --eval-split, or none to carve "
                            "one from train.")

    feat = train.features[lab_col]
    train_labels = _labels_array(train, lab_col)
    if isinstance(feat, datasets.ClassLabel):
        names = list(feat.names)
        if evald is not None:
            efeat = evald.features[lab_col]
            if isinstance(efeat, datasets.ClassLabel) and list(efeat.names) != names:
                raise DataError(f"Train and eval label sets differ ({len(names)} vs {len(efeat.names)} names, "
                                f"e.g. {sorted(set(efeat.names) ^ set(names))[:5]}). Use splits of one data set "
                                "or cast both to one ClassLabel.")
    elif train_labels.dtype.kind in "iu":
        names = [str(i) for i in range(int(train_labels.max()) + 1)] if train_labels.size else []
    elif train_labels.dtype.kind in "USO":
        names = sorted({str(v) for v in train_labels})
        if evald is not None:
            unknown = sorted({str(v) for v in _labels_array(evald, lab_col)} - set(names))
            if unknown:
                raise DataError(f"Eval labels {unknown[:5]} do not occur in train (unknown label set). Use an eval "
                                "split with the train classes.")
        cl = datasets.ClassLabel(names=names)
        train = train.cast_column(lab_col, cl)
        evald = evald.cast_column(lab_col, cl) if evald is not None else None
        train_labels = _labels_array(train, lab_col)
    else:
        raise DataError(f"Label column {lab_col!r} has type {train_labels.dtype}; expected class ids or names. "
                        "Pass the right --label-column.")
    k = len(names)

    def check_range(lab: np.ndarray, what: str) -> None:
        if lab.size and (lab.min() < 0 or lab.max() >= k):
            bad = lab[(lab < 0) | (lab >= k)]
            raise DataError(f"{what} labels out of range: {bad[:5].tolist()} for {k} classes (values must be "
                            "0..K-1; -1 usually means unlabelled, e.g. a hidden test set). Use a labelled split.")

    check_range(train_labels, f"Train ({train_split!r})")
    if evald is None:
        train, evald = _stratified_split(train, train_labels, eval_fraction, seed)
        origin = f"stratified {eval_fraction:.0%} of {train_split!r} (seed {seed})"
        if len(evald) == 0:
            raise DataError(f"Cannot carve an eval set from {len(train)} train images; give an eval split.")
    else:
        check_range(_labels_array(evald, lab_col), f"Eval ({origin})")
    train = _subsample(train, max_train_samples, seed)
    evald = _subsample(evald, max_eval_samples, seed)
    return ImageData(train=train, eval=evald, image_column=img_col, label_column=lab_col, labels=names,
                     source=name, eval_origin=origin, info={"loaded_with": how, "splits": splits})


# ---------------------------------------------------------------------------------- transforms

def _batch_transform(tf: Callable[[Any], torch.Tensor], img_col: str, lab_col: str,
                     train: bool) -> Callable[[dict[str, list[Any]]], dict[str, Any]]:
    from PIL import Image

    def apply(batch: dict[str, list[Any]]) -> dict[str, Any]:
        imgs = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in batch[img_col]]
        out: dict[str, Any] = {"pixel_values": [tf(im) for im in imgs], "labels": [int(v) for v in batch[lab_col]]}
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
    if str(getattr(config, "model_type", "")).removeprefix("p3b_") == "dinov2":
        return None
    size = config.image_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def build_datasets(data: ImageData, image_processor: Any, *, image_size: int | None = None,
                   augment: str = "deit", use_torchvision: bool | None = None) -> tuple[Any, Any]:
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
    train_ds = data.train.with_transform(_batch_transform(train_tf, data.image_column, data.label_column, True))
    eval_ds = data.eval.with_transform(_batch_transform(eval_tf, data.image_column, data.label_column, False))
    return train_ds, eval_ds


class MixCollator:
    """Stacks ``pixel_values``/``labels``; on training batches applies Mixup/CutMix/label smoothing.

    Training batches are recognised by the marker the train transform of :func:`build_datasets` adds
    (the Trainer uses one collator for train and eval, and eval must stay unmixed with integer labels).
    Items without the marker (eval items, or a data set built elsewhere) are collated as eval unless
    ``mix_unmarked=True``; when mixing is configured and no marked batch has been seen yet, a one-time
    warning says so (it catches foreign training sets, whose first batch is a training batch).
    """

    def __init__(self, num_classes: int, mixup: float, cutmix: float, label_smoothing: float,
                 enabled: bool, mix_unmarked: bool = False) -> None:
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
            logger.warning("make_collator: batch items lack the build_datasets train marker, so they are "
                           "collated without Mixup/CutMix/label smoothing (as eval). Build the data sets with "
                           "p3b_hf.data.build_datasets, or pass mix_unmarked=True for a train-only collator.")
        pixel_values = torch.stack([torch.as_tensor(f["pixel_values"]) for f in features])
        labels = torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)
        active = wants and is_train
        if active:
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise DataError(f"Batch labels {labels.tolist()[:5]} exceed num_classes={self.num_classes}; "
                                "build the collator with the data set's number of labels.")
            pixel_values, targets = mix_batch(pixel_values, labels, self.num_classes, mixup=self.mixup,
                                              cutmix=self.cutmix, label_smoothing=self.label_smoothing)
            return {"pixel_values": pixel_values, "labels": targets}
        return {"pixel_values": pixel_values, "labels": labels}


def make_collator(num_classes: int, *, mixup: float = 0.8, cutmix: float = 1.0, label_smoothing: float = 0.1,
                  enabled: bool = True, mix_unmarked: bool = False) -> MixCollator:
    """The Trainer's ``data_collator``: dense float targets [B, K] on mixed training batches.

    ``mix_unmarked=True``: also mix items that do not come from :func:`build_datasets` (use that only for
    a collator that never sees eval batches).
    """
    if num_classes < 1:
        raise DataError(f"num_classes must be >= 1, got {num_classes}.")
    return MixCollator(num_classes, mixup, cutmix, label_smoothing, enabled, mix_unmarked)


# ------------------------------------------------------------------------------------ dev-bench

def devbench_dataset_dict(npz_path: str | os.PathLike[str], json_path: str | os.PathLike[str], *,
                          max_per_split: int | None = None, splits: Sequence[str] = ("train", "validation")) -> Any:
    """dev-bench arrays -> ``DatasetDict`` with ``image`` (RGB, black ink on white) and ``label`` (ClassLabel).

    ``max_per_split`` keeps the first N images of each split (tests convert only a small subset).
    """
    import datasets
    from PIL import Image

    for p in (npz_path, json_path):
        if not Path(p).exists():
            raise DataError(f"dev-bench file {p} does not exist; expected the dev-bench's scripts200_dev.{{npz,json}} "
                            "(../shared/dev-bench next to the checkout; the dev scripts take --bench-dir or "
                            "$P3B_DEVBENCH).")
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
            features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
            out[split] = datasets.Dataset.from_dict({"image": rgb, "label": labels.tolist()}, features=features)
    return datasets.DatasetDict(out)
