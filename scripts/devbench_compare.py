#!/usr/bin/env python
"""`p3b-hf compare` on the dev-bench: every method at equal whole-model parameter budgets and an equal
number of training epochs, plus the dense model fine-tuned for the same epochs.

The dev-bench arrays are written once as a ``datasets`` ``save_to_disk`` folder (``--data-dir``), then the
real CLI runs (``p3b_hf.cli.main(["compare", ...])``) with the dev-bench recipe: glyph augmentation, label
smoothing 0.1, no mixup/cutmix, AdamW lr 5e-4 wd 0.05; batch 512 + bf16 on CUDA, batch 64 fp32 on CPU.
P3B, global pruning and the dense cell start from the CJK-pretrained tiny ViT with a fresh 200-class head;
VBP (post-training) starts from the dense cell and distils from it (``p3b-hf compare``'s ``start`` and
``epochs_total`` columns say so). Outputs (``compare.md``,
``.csv``, ``.json``, ``accuracy_vs_params.png`` and one model dir per cell) go to ``--output-dir``; finished
cells are reused when the command is re-run.

    python scripts/devbench_compare.py --epochs 30 --output-dir runs/devbench_compare          # GPU
    python scripts/devbench_compare.py --epochs 3 --budgets 0.5 --methods p3b,global-taylor,global-hessian \\
        --output-dir runs/devbench_compare_cpu                                                 # CPU, ~45 min
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devbench_common import DENSE, base_parser  # noqa: E402

from p3b_hf.cli import main as cli_main  # noqa: E402
from p3b_hf.data import devbench_dataset_dict  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--methods", default="p3b,vbp,global-taylor,global-hessian,global-l2")
    p.add_argument("--epochs", type=float, default=30.0, help="training epochs of every method (and of dense)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--data-dir", default=None, help="where to write the save_to_disk copy (default: OUTPUT/data)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 512 on CUDA, 64 on CPU")
    p.add_argument("--num-workers", type=int, default=None, help="default: 8 on CUDA, 1 on CPU")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    gpu = torch.cuda.is_available()
    bench, out = Path(a.bench), Path(a.output_dir)
    data_dir = Path(a.data_dir) if a.data_dir else out / "data"
    if not (data_dir / "dataset_dict.json").exists():
        devbench_dataset_dict(bench / "scripts200_dev.npz", bench / "scripts200_dev.json").save_to_disk(str(data_dir))
    batch = a.batch_size or (DENSE["batch_size"] if gpu else 64)
    workers = a.num_workers if a.num_workers is not None else (8 if gpu else 1)
    prune_flags = ["--batch-size", str(batch), "--lr", str(DENSE["lr"]), "--weight-decay", str(DENSE["weight_decay"]),
                   "--augment", "glyph", "--mixup", "0", "--cutmix", "0", "--label-smoothing", "0.1",
                   "--num-workers", str(workers), "--seed", str(a.seed), "--logging-steps", "50"]
    if gpu:
        prune_flags.append("--bf16")
    argv_compare = ["compare", "--methods", a.methods, "--prune-ratio", ",".join(str(b) for b in a.budgets),
                    "--model", str(bench / "pretrained" / "vit-tiny-cjk1000"), "--dataset", str(data_dir),
                    "--output-dir", str(out), "--epochs", str(a.epochs), "--dense-baseline",
                    "--bench-device", "cuda" if gpu else "cpu", "--", *prune_flags]
    print("p3b-hf " + " ".join(argv_compare), flush=True)
    return cli_main(argv_compare)


if __name__ == "__main__":
    sys.exit(main())
