"""What the dev-bench scripts share: the dense recipe, where the bench lives, the common flags.

Where the dev-bench is (first match wins):

1. ``--bench-dir DIR`` (alias ``--bench``);
2. the environment variable ``P3B_DEVBENCH``;
3. ``../shared/dev-bench`` next to this checkout (``<checkout>/../shared/dev-bench``);
4. ``<checkout>/_device/dev-bench``, the copy ``scripts/gpu_kit.sh`` makes for the device machine.

A folder that lacks the bench's files is refused at argument parsing with one error naming the path
that was tried and how to point the scripts elsewhere.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

#: the dev-bench README's dense fine-tune recipe (also the fine-tune after pruning)
DENSE = {"epochs": 15.0, "lr": 5e-4, "weight_decay": 0.05, "batch_size": 512}

ENV_VAR = "P3B_DEVBENCH"
CHECKOUT = Path(__file__).resolve().parents[1]
#: ``../shared/dev-bench`` relative to the repository checkout
SIBLING_BENCH = CHECKOUT.parent / "shared" / "dev-bench"
#: the copy scripts/gpu_kit.sh puts into the checkout (../shared does not travel to the device machine)
DEVICE_BENCH = CHECKOUT / "_device" / "dev-bench"
#: what a dev-bench folder must hold
BENCH_FILES = ("scripts200_dev.npz", "scripts200_dev.json", "pretrained/vit-tiny-cjk1000")


def default_bench() -> str:
    """``$P3B_DEVBENCH``, else ``../shared/dev-bench`` next to the checkout, else the ``_device/`` copy."""
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    for p in (SIBLING_BENCH, DEVICE_BENCH):
        if (p / BENCH_FILES[0]).exists():
            return str(p)
    return str(SIBLING_BENCH)


def bench_dir(value: str) -> str:
    """argparse ``type`` of ``--bench-dir``: the folder must hold the dev-bench files (one clear error)."""
    p = Path(value).expanduser()
    missing = [f for f in BENCH_FILES if not (p / f).exists()]
    if missing:
        where = "does not exist" if not p.exists() else f"lacks {', '.join(missing)}"
        raise argparse.ArgumentTypeError(
            f"no dev-bench at {p} ({where}). The scripts look for --bench-dir DIR, then ${ENV_VAR}, then "
            f"../shared/dev-bench next to the checkout ({SIBLING_BENCH}), then {DEVICE_BENCH}; pass "
            f"--bench-dir DIR or set {ENV_VAR}=DIR to a folder with {', '.join(BENCH_FILES)}."
        )
    return str(p)


def base_parser(doc: str | None) -> argparse.ArgumentParser:
    """``--bench-dir`` and ``--budgets``, the flags every dev-bench script takes."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    # a str default goes through ``type`` too, so a missing default bench is reported at parse time
    p.add_argument(
        "--bench-dir",
        "--bench",
        dest="bench",
        type=bench_dir,
        default=default_bench(),
        metavar="DIR",
        help=f"dev-bench folder (npz/json + pretrained/); default: ${ENV_VAR}, else "
        "../shared/dev-bench next to the checkout, else _device/dev-bench",
    )
    p.add_argument(
        "--budgets",
        type=float,
        nargs="+",
        default=[0.5, 0.75],
        help="fractions of whole-model params to remove",
    )
    return p


def data_dir(bench: str, out: Path, max_per_split: int | None = None) -> Path:
    """The dev-bench arrays as a ``save_to_disk`` folder under ``out`` (written once, then reused)."""
    from p3b_hf.data import devbench_dataset_dict

    target = Path(out) / "data"
    if not (target / "dataset_dict.json").exists():
        b = Path(bench)
        devbench_dataset_dict(
            b / "scripts200_dev.npz", b / "scripts200_dev.json", max_per_split=max_per_split
        ).save_to_disk(str(target))
    return target


def source_model(bench: str) -> str:
    """The dev-bench's pretrained source ViT."""
    return str(Path(bench) / "pretrained" / "vit-tiny-cjk1000")


def recipe(
    dataset: Path,
    *,
    epochs: float,
    batch_size: int | None = None,
    seed: int = 0,
    num_workers: int | None = None,
    gpu: bool | None = None,
    **train: object,
) -> tuple[object, object]:
    """``(DataOptions, TrainOptions)`` of the dev-bench recipe: glyph augmentation, label smoothing 0.1, no
    Mixup/CutMix, AdamW lr 5e-4 wd 0.05; batch 512 + bf16 on CUDA, batch 64 fp32 on CPU."""
    import torch

    from p3b_hf.options import DataOptions, TrainOptions

    gpu = torch.cuda.is_available() if gpu is None else gpu
    data = DataOptions(dataset=str(dataset), augment="glyph", mixup=0.0, cutmix=0.0, label_smoothing=0.1)
    options = TrainOptions(
        epochs=epochs,
        batch_size=batch_size or (DENSE["batch_size"] if gpu else 64),
        lr=DENSE["lr"],
        weight_decay=DENSE["weight_decay"],
        seed=seed,
        bf16=gpu,
        device="cuda" if gpu else "cpu",
        num_workers=num_workers if num_workers is not None else (8 if gpu else 1),
    )
    for k, v in train.items():
        setattr(options, k, v)
    return data, options
