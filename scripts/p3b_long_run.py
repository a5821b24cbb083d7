#!/usr/bin/env python
"""Does a P3B run stay as fast at its end as at its start? Step time over the last 10 % of the optimizer
steps vs the first 10 %, through the shipped ``p3b-hf prune`` on the dev-bench, with and without the mask
floor (``--mask-floor 0`` = the plain sigmoid, whose values late in a run are subnormal floats).

Late in a P3B run τ is tiny, ``sigmoid((r - t) / (n τ))`` gives mask values like 1e-37 just below the
threshold, and ``weight x mask`` is then a subnormal float32: x86 GEMMs on subnormal operands run many times
slower (2-3x on the AMD EPYC this was measured on, up to ~150x on some Intel parts). Every run's report
records its step times (``history.step_time``: ``first_10pct_s``, ``last_10pct_s``, the mean of every tenth
of the run and the resident memory at the end of each tenth); this script runs the variants one after the
other on the same data and prints / writes their summaries side by side.

    python -m scripts.p3b_long_run --output-dir runs/p3b_long_run        # CPU, 2 x ~5 min
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

from p3b_hf.methods.p3b import P3BConfig
from p3b_hf.options import OutputOptions, PruneOptions
from p3b_hf.runner import PruneJob, prune
from scripts.devbench_common import base_parser, data_dir, recipe, source_model


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--epochs", type=float, default=4.0)
    p.add_argument("--max-train-samples", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--floors",
        type=float,
        nargs="+",
        default=[1e-6, 0.0],
        help="--mask-floor values to run (1e-6 = the default, 0 = no floor)",
    )
    p.add_argument("--out", default=None, help="JSON result (default: OUTPUT/p3b_long_run.json)")
    a = p.parse_args(argv)
    out = Path(a.output_dir)
    data, train = recipe(
        data_dir(a.bench, out), epochs=a.epochs, batch_size=a.batch_size, gpu=False, logging_steps=1000
    )
    data.max_train_samples, data.max_eval_samples = a.max_train_samples, 500
    runs = {}
    for floor in a.floors:
        job = PruneJob(
            prune=PruneOptions(model=source_model(a.bench), method="p3b", prune_ratio=0.5),
            data=data,
            output=OutputOptions(output_dir=str(out / f"floor_{floor:g}"), overwrite=True),
            train=train,
            method_options=P3BConfig(mask_floor=floor),
        )
        print(f"P3B run with mask_floor={floor:g} ...", flush=True)
        t0 = time.time()
        report = prune(job).report
        runs[f"mask_floor={floor:g}"] = {
            "wall_s": time.time() - t0,
            "step_time": report.get("history", {}).get("step_time"),
            "accuracy": report.get("eval", {}).get("accuracy"),
            "param_reduction": report.get("achieved_param_reduction"),
        }
    result = {
        "what": "P3B step time, last 10 % vs first 10 % of one run (p3b-hf prune, dev-bench)",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "dtype": "float32",
        "batch_size": a.batch_size,
        "epochs": a.epochs,
        "train_samples": a.max_train_samples,
        "runs": runs,
    }
    path = Path(a.out) if a.out else out / "p3b_long_run.json"
    path.write_text(json.dumps(result, indent=1))
    for name, r in runs.items():
        st = r["step_time"] or {}
        print(
            f"{name}: first 10 % {st.get('first_10pct_s', float('nan')):.3f} s/step, last 10 % "
            f"{st.get('last_10pct_s', float('nan')):.3f} s/step, ratio {st.get('last_vs_first') or float('nan'):.2f}, "
            f"wall {r['wall_s']:.0f} s"
        )
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
