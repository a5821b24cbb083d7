#!/usr/bin/env python
"""`p3b-hf compare` on the dev-bench: every method at equal whole-model parameter budgets and an equal
number of training epochs, plus the dense model fine-tuned for the same epochs.

The dev-bench arrays are written once as a ``datasets`` ``save_to_disk`` folder (``OUTPUT/data``), then the
compare runs through the library entry point every command uses (:func:`p3b_hf.compare.run_compare`) with
the dev-bench recipe: glyph augmentation, label smoothing 0.1, no mixup/cutmix, AdamW lr 5e-4 wd 0.05;
batch 512 + bf16 on CUDA, batch 64 fp32 on CPU. P3B (and global pruning by default) start from the
CJK-pretrained tiny ViT with a fresh 200-class head; VBP, a post-training method, starts from the dense
cell (that model fine-tuned on the task) and distils from it. Outputs (``compare.md``, ``.csv``, ``.json``,
``accuracy_vs_params.png`` and one model dir per cell) go to ``--output-dir``; finished cells are reused
when the command is re-run. Run from the repository root:

    python -m scripts.devbench_compare --epochs 30 --output-dir runs/devbench_compare          # GPU
    python -m scripts.devbench_compare --epochs 3 --budgets 0.5 --methods p3b,global-taylor,global-hessian \\
        --output-dir runs/devbench_compare_cpu                                                 # CPU, ~45 min
"""

from __future__ import annotations

import sys
from pathlib import Path

from p3b_hf.compare import CompareJob, CompareOptions, markdown_table, run_compare
from p3b_hf.options import OutputOptions
from scripts.devbench_common import base_parser, data_dir, recipe, source_model


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--methods", default="p3b,vbp,global-taylor,global-hessian,global-l2")
    p.add_argument(
        "--epochs", type=float, default=30.0, help="training epochs of every method (and of dense)"
    )
    p.add_argument("--output-dir", required=True)
    p.add_argument("--batch-size", type=int, default=None, help="default: 512 on CUDA, 64 on CPU")
    p.add_argument("--num-workers", type=int, default=None, help="default: 8 on CUDA, 1 on CPU")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = Path(a.output_dir)
    data, train = recipe(
        data_dir(a.bench, out),
        epochs=a.epochs,
        batch_size=a.batch_size,
        seed=a.seed,
        num_workers=a.num_workers,
    )
    job = CompareJob(
        compare=CompareOptions(
            model=source_model(a.bench),
            methods=a.methods,
            prune_ratio=",".join(str(b) for b in a.budgets),
            dense_baseline=True,
            bench_device=train.device,
        ),
        data=data,
        output=OutputOptions(output_dir=str(out)),
        train=train,
    )
    print(markdown_table(run_compare(job)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
