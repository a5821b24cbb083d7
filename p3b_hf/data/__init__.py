"""One loader for image-classification data: Hub names, ``save_to_disk`` dirs, parquet and imagefolder.

Why one loader: every command (prune, finetune, compare, demo) must see the same columns, label names,
splits and eval carve-out, and fail the same way on bad input (one :class:`DataError` naming the problem
and the fix) instead of a KeyError deep inside a Trainer step.

* ``load_image_dataset(source, ...) -> ImageData`` (:mod:`.load`) -- raw ``datasets.Dataset`` train/eval +
  column names + label names. ``source`` is a preset (``cifar100``, ``food101``, ``ifood2019``, ``inat2019``,
  :mod:`.presets`), a Hub id, a ``save_to_disk`` directory, a directory (or file) of parquet, or an
  imagefolder directory (:mod:`.sources`). Columns are detected (:mod:`.columns`), label names read and
  checked (:mod:`.labels`). Eval split: ``eval_split`` if given (a name or several: each becomes a named eval
  set), else the first of validation/valid/val/test that exists, else a deterministic stratified carve-out of
  ``eval_fraction`` of train (per class, seeded; :mod:`.splits`). Domains (``domain_column`` +
  ``train_domains`` / ``test_domains``, :mod:`.domains`): train on the source domains, one eval set per
  held-out target domain plus an in-domain ``source`` carve-out (leave-one-domain-out, docs/data.md
  "Domains"). Before returning it checks every image the run will read (:func:`check_images`,
  :mod:`.images`: truncated, empty, not-an-image, decompression-bomb files are named in one error, or left
  out up to ``max_bad_images``), and refuses data that would train a wrong model with exit 0 (one class, a
  class without training images).
* ``build_datasets(data, image_processor, image_size=..., augment=...)`` (:mod:`.transformed`) --
  ``with_transform`` datasets yielding ``{"pixel_values": FloatTensor[3,S,S], "labels": int}`` (see
  :mod:`p3b_hf.transforms`). Use them with ``TrainingArguments(remove_unused_columns=False)``: the Trainer
  would otherwise drop the raw image/label columns before the transform runs (hf notes 3.5).
* ``make_collator(num_classes, ...)`` (:mod:`.collator`) -- Mixup/CutMix/label smoothing on training batches
  only.
* ``devbench_dataset_dict(npz, json)`` (:mod:`.devbench`) -- the dev-bench arrays as a ``DatasetDict``.

The names below are this package's API (``from p3b_hf.data import ...``); the modules hold the code.
"""

from __future__ import annotations

from .collator import TRAIN_MARKER, MixCollator, make_collator
from .columns import IMAGE_COLUMNS, LABEL_COLUMNS, detect_columns
from .devbench import devbench_dataset_dict
from .domains import (
    SOURCE_SET,
    TARGET_SET,
    check_domain_options,
    domain_set_name,
    list_domains,
    norm_domain,
    resolve_domains,
)
from .image_data import ImageData
from .images import BAD_IMAGES_LISTED, check_images, image_problem, open_image
from .labels import label_names
from .load import load_image_dataset
from .presets import PRESETS, Preset
from .splits import EVAL_SPLITS, select_eval_splits, split_names
from .transformed import build_datasets, build_eval_sets, model_image_size

__all__ = [
    "BAD_IMAGES_LISTED",
    "EVAL_SPLITS",
    "IMAGE_COLUMNS",
    "LABEL_COLUMNS",
    "PRESETS",
    "SOURCE_SET",
    "TARGET_SET",
    "TRAIN_MARKER",
    "ImageData",
    "MixCollator",
    "Preset",
    "build_datasets",
    "build_eval_sets",
    "check_domain_options",
    "check_images",
    "detect_columns",
    "devbench_dataset_dict",
    "domain_set_name",
    "image_problem",
    "label_names",
    "list_domains",
    "load_image_dataset",
    "make_collator",
    "model_image_size",
    "norm_domain",
    "open_image",
    "resolve_domains",
    "select_eval_splits",
    "split_names",
]
