"""What the dev-bench scripts share: the dense recipe, where the bench lives, the common flags."""

from __future__ import annotations

import argparse
from pathlib import Path

#: the dev-bench README's dense fine-tune recipe (also the fine-tune after pruning)
DENSE = {"epochs": 15.0, "lr": 5e-4, "weight_decay": 0.05, "batch_size": 512}


def default_bench() -> str:
    for p in ("/work/shared/dev-bench", "_device/dev-bench", "dev-bench"):
        if Path(p, "scripts200_dev.npz").exists():
            return p
    return "/work/shared/dev-bench"


def base_parser(doc: str | None) -> argparse.ArgumentParser:
    """``--bench`` and ``--budgets``, the flags every dev-bench script takes."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", default=default_bench(), help="dev-bench folder (npz/json + pretrained/)")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.75],
                   help="fractions of whole-model params to remove")
    return p
