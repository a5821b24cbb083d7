"""Loaded splits -> datasets the Trainer can use: ``with_transform`` datasets yielding ``{"pixel_values",
"labels"}`` (train: the ``--augment`` recipe, eval: resize + normalise, :mod:`p3b_hf.transforms`) at the
resolution the model is fed (:func:`model_image_size`, asked of the family record)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import DataError
from ..models.families import family_of
from ..transforms import AUGMENTS, make_image_transform, preprocess_from_processor
from .collator import TRAIN_MARKER
from .image_data import ImageData
from .images import open_image


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
