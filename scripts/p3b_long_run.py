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

    python scripts/p3b_long_run.py --output-dir runs/p3b_long_run        # CPU, 2 x ~5 min
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devbench_common import DENSE, base_parser  # noqa: E402

from p3b_hf.cli import main as cli_main  # noqa: E402
from p3b_hf.data import devbench_dataset_dict  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--epochs", type=float, default=4.0)
    p.add_argument("--max-train-samples", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--floors", type=float, nargs="+", default=[1e-6, 0.0],
                   help="--mask-floor values to run (1e-6 = the default, 0 = no floor)")
    p.add_argument("--out", default=None, help="JSON result (default: OUTPUT/p3b_long_run.json)")
    a = p.parse_args(argv)
    bench, out = Path(a.bench), Path(a.output_dir)
    data_dir = out / "data"
    if not (data_dir / "dataset_dict.json").exists():
        devbench_dataset_dict(bench / "scripts200_dev.npz", bench / "scripts200_dev.json").save_to_disk(str(data_dir))
    runs = {}
    for floor in a.floors:
        run_dir = out / f"floor_{floor:g}"
        argv_prune = ["prune", "--method", "p3b", "--model", str(bench / "pretrained" / "vit-tiny-cjk1000"),
                      "--dataset", str(data_dir), "--output-dir", str(run_dir), "--overwrite",
                      "--prune-ratio", "0.5", "--epochs", str(a.epochs), "--batch-size", str(a.batch_size),
                      "--max-train-samples", str(a.max_train_samples), "--max-eval-samples", "500",
                      "--lr", str(DENSE["lr"]), "--weight-decay", str(DENSE["weight_decay"]), "--augment", "glyph",
                      "--mixup", "0", "--cutmix", "0", "--label-smoothing", "0.1", "--device", "cpu",
                      "--mask-floor", str(floor), "--logging-steps", "1000"]
        print("p3b-hf " + " ".join(argv_prune), flush=True)
        t0 = time.time()
        code = cli_main(argv_prune)
        report = json.loads((run_dir / "pruning_report.json").read_text()) if code == 0 else {}
        runs[f"mask_floor={floor:g}"] = {"exit_code": code, "wall_s": time.time() - t0,
                                         "step_time": report.get("history", {}).get("step_time"),
                                         "accuracy": report.get("eval", {}).get("accuracy"),
                                         "param_reduction": report.get("achieved_param_reduction")}
    result = {"what": "P3B step time, last 10 % vs first 10 % of one run (p3b-hf prune, dev-bench)",
              "device": "cpu", "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "dtype": "float32", "batch_size": a.batch_size, "epochs": a.epochs,
              "train_samples": a.max_train_samples, "runs": runs}
    path = Path(a.out) if a.out else out / "p3b_long_run.json"
    path.write_text(json.dumps(result, indent=1))
    for name, r in runs.items():
        st = r["step_time"] or {}
        print(f"{name}: first 10 % {st.get('first_10pct_s', float('nan')):.3f} s/step, last 10 % "
              f"{st.get('last_10pct_s', float('nan')):.3f} s/step, ratio {st.get('last_vs_first') or float('nan'):.2f}, "
              f"wall {r['wall_s']:.0f} s")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
