#!/usr/bin/env python
"""How faithful are the cheap BPI settings to the reference BPI -- on the *same* run?

One P3B run on the dev-bench through the real CLI (``p3b-hf prune --method p3b``) is driven by the
reference BPI estimator (patch heads on the whole batch, every micro-batch; grouped heads + fused gates,
which give the reference path's logits and keep ratios exactly, see docs/p3b.md). The cheap settings ride
along as shadow estimators (``--bpi-shadow SUB:EVERY ...``): same initial heads, same micro-batches, their
own ΔΨ windows and EMA, the driver's remaining parameter counts. At every mask update the run records the
target keep ratios κ each shadow would have chosen; this script reports ``|κ_shadow - κ_reference|`` per
block at the last update and over the full-ratio phase, and copies the run's ``p3b_shadows.png``.

Comparing two *separate* runs instead (``scripts/p3b_step_cost.py --compare-steps``) mixes the estimator's
error with the chaos of training: a slightly different mask at one update changes every later gradient,
and two reference runs that differ only in data order already differ by up to 0.3 in keep ratio.

    python -m scripts.bpi_faithfulness --epochs 3 --output-dir runs/bpi_faithfulness        # CPU, ~1.5 h
    python -m scripts.bpi_faithfulness --epochs 30 --output-dir runs/bpi_faithfulness_gpu   # GPU (bf16, batch 512)
    python -m scripts.bpi_faithfulness --smoke --output-dir runs/bpi_smoke                  # plumbing, ~1 min
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from p3b_hf.methods.p3b import P3BConfig
from p3b_hf.methods.p3b.estimator import shadow_summary
from p3b_hf.options import OutputOptions, PruneOptions, command_line
from p3b_hf.report import portable
from p3b_hf.runner import PruneJob, prune
from scripts.devbench_common import base_parser, data_dir, recipe, source_model

#: the noise floor (the reference setting with other initial heads), then the cost levers
DEFAULT_SHADOWS = ["1:1:1", "0.25:1", "0.0625:1", "0.25:4"]


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.set_defaults(budgets=[0.5])
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--shadows", nargs="+", default=DEFAULT_SHADOWS, metavar="SUB:EVERY")
    p.add_argument(
        "--update-every",
        type=int,
        default=None,
        help="optimizer steps per mask update (default: ~78 updates)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="default: 512 on CUDA, 64 on CPU")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="a few steps on 256 images (plumbing check)")
    a = p.parse_args(argv)
    gpu = torch.cuda.is_available()
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    epochs = 2.0 if a.smoke else a.epochs
    data, train = recipe(
        data_dir(a.bench, out, max_per_split=256 if a.smoke else None),
        epochs=epochs,
        batch_size=a.batch_size,
        seed=a.seed,
    )
    ratio = a.budgets[0]
    model_dir = out / f"p3b_{ratio}"
    job = PruneJob(
        prune=PruneOptions(model=source_model(a.bench), method="p3b", prune_ratio=ratio),
        data=data,
        output=OutputOptions(output_dir=str(model_dir), overwrite=True),
        train=train,
        method_options=P3BConfig(
            bpi_subbatch=1.0, bpi_every=1, bpi_shadows=list(a.shadows), update_every=a.update_every
        ),
    )
    command = "p3b-hf prune " + command_line(job.prune, job.data, job.train, job.output, job.method_options)
    print(command, flush=True)
    t0 = time.perf_counter()
    prune(job)
    batch = train.batch_size
    report = json.loads((model_dir / "pruning_report.json").read_text())
    hist = report["history"]
    summary = shadow_summary(hist["updates"], (hist.get("schedule") or {}).get("sparse"))
    doc = {
        "hardware": torch.cuda.get_device_name()
        if gpu
        else f"{platform.machine()} CPU ({torch.get_num_threads()} threads)",
        "dtype": "bf16 autocast" if gpu else "fp32",
        "batch": batch,
        "epochs": epochs,
        "prune_ratio": ratio,
        "schedule": hist.get("schedule"),
        "updates": len(hist["updates"]),
        "driver": "reference BPI: patch heads on every sample of every micro-batch (grouped heads, fused gates)",
        "driver_final_keep_target": hist["updates"][-1]["keep_target"],
        "driver_final_keep_achieved": hist["updates"][-1]["keep_achieved"],
        "pruned_accuracy": (report.get("eval") or {}).get("accuracy"),
        "shadows": summary,
        "wall_s": time.perf_counter() - t0,
        "command": command,
    }
    (out / "faithfulness.json").write_text(json.dumps(portable(doc), indent=1))  # no machine paths
    plot = model_dir / "plots" / "p3b_shadows.png"
    if plot.exists():
        shutil.copy(plot, out / "p3b_shadows.png")
    print("| shadow (sub-batch:every) | max |Δκ| last update | mean |Δκ| last update | max |Δκ| after S1 |")
    print("|---|---|---|---|")
    for name, s in summary.items():
        print(
            f"| {name} | {s['final_max_abs_diff']:.3f} | {s['final_mean_abs_diff']:.3f} | "
            f"{s['max_abs_diff_after_sparse']:.3f} |"
        )
    print(f"written: {out / 'faithfulness.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
