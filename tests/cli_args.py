"""Command-line tails shared by the tests that train through ``p3b-hf``: the tiny CPU run (no augmentation,
no mixup / cutmix) every end-to-end test asks for, kept in one place so the tests cannot drift apart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def tiny_train_args(batch_size: int = 16, augment: str = "none") -> tuple[str, ...]:
    """``--batch-size``, ``--augment``, ``--device cpu`` and mixup / cutmix off: cheap and deterministic."""
    return (
        "--batch-size",
        str(batch_size),
        "--augment",
        augment,
        "--device",
        "cpu",
        "--mixup",
        "0",
        "--cutmix",
        "0",
    )


TINY_TRAIN_ARGS = tiny_train_args()
# the same run for one epoch (prune / compare of a whole family; VBP refuses --epochs: use TINY_TRAIN_ARGS)
TINY_EPOCH_ARGS = ("--epochs", "1", *TINY_TRAIN_ARGS)


def prune_argv(method: Sequence[str], model: Path, data: Path, out: Path, *options: str) -> list[str]:
    """``p3b-hf prune --method METHOD... --model MODEL --dataset DATA OPTIONS... --output-dir OUT``."""
    return [
        "prune",
        "--method",
        *method,
        "--model",
        str(model),
        "--dataset",
        str(data),
        *options,
        "--output-dir",
        str(out),
    ]
