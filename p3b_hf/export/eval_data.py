"""The images an export is checked and calibrated on: a split of a data set through the one loader
(:mod:`p3b_hf.data`) with the eval transform, refused when its labels are not the model's (the accuracy
would be meaningless), and stacked into one tensor."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..errors import DataError
from .deploy import _image_shape


def _load_split(
    dataset: str,
    split: str,
    processor: Any,
    config: Any,
    *,
    max_samples: int | None,
    seed: int,
    data_kwargs: dict[str, Any],
) -> tuple[Any, str]:
    """A transformed (eval transform: resize + normalise, no augmentation) split of a data set.

    ``split="eval"``: the eval split (as ``p3b-hf prune`` chooses it); ``"train"``: the training split
    (calibration). Labels must be the model's (same count and names)."""
    from ..data import build_datasets, load_image_dataset

    kw = {k: v for k, v in data_kwargs.items() if v is not None}
    if split == "train":
        kw["max_train_samples"] = max_samples
    else:
        kw["max_eval_samples"] = max_samples
    data = load_image_dataset(dataset, seed=seed, **kw)
    model_labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    if len(data.labels) != len(model_labels):
        raise DataError(
            f"--dataset {dataset} has {len(data.labels)} classes but the model predicts "
            f"{len(model_labels)}; give the data set the model was pruned / fine-tuned on."
        )
    generic = all(lab == f"LABEL_{i}" for i, lab in enumerate(model_labels))
    if not generic and [str(x) for x in data.labels] != model_labels:
        first = next(i for i, (a, b) in enumerate(zip(data.labels, model_labels)) if str(a) != b)
        raise DataError(
            f"--dataset {dataset}: label {first} is {data.labels[first]!r} in the data but "
            f"{model_labels[first]!r} in the model's config; the accuracy would be meaningless."
        )
    if processor is None:
        raise DataError(
            "The model dir has no preprocessor_config.json, so images cannot be normalised as in "
            "training; save the image processor into the model dir first."
        )
    if split == "train":
        data = dataclasses.replace(data, eval=data.train)  # the train images with the eval transform
    _, eval_ds = build_datasets(
        data, processor, image_size=_image_shape(config, processor)[1], augment="none"
    )
    origin = f"{dataset} ({'train split' if split == 'train' else data.eval_origin}, {len(eval_ds)} images)"
    return eval_ds, origin


def _stack(
    ds: Any, n: int | None = None, seed: int = 0, shuffle: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    idx = list(range(len(ds)))
    if shuffle:
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
    idx = idx[: n if n is not None else len(idx)]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx), batch_size=64, shuffle=False)
    xs, ys = [], []
    for batch in loader:
        xs.append(batch["pixel_values"].float())
        ys.append(batch["labels"])
    if not xs:
        raise DataError("The data set split is empty.")
    return torch.cat(xs), torch.cat(ys)
