"""Mixup / CutMix / label smoothing on training batches only: the Trainer uses one ``data_collator`` for train
and eval, so train items carry a marker (:data:`TRAIN_MARKER`, added by the train transform of
:func:`p3b_hf.data.build_datasets`) and eval batches stay unmixed with integer labels."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..errors import DataError
from ..transforms import mix_batch

logger = logging.getLogger(__name__)

# Key the train transform adds so that make_collator mixes train batches but never eval batches (the
# Trainer uses one data_collator for both). make_collator removes it; it never reaches the model.
TRAIN_MARKER = "_p3b_train"


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
