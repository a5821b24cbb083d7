"""CPU deployment speed of P3B-shaped pruned copies of a dense model dir: what ``p3b-hf bench --onnx`` runs.

For each ``--keep`` a random P3B-like plan (:func:`p3b_hf.bench.random_plan`: per-layer head dims and MLP
widths, every sub-block reading / writing a random residual subset) is applied to the dense model (default:
the dev-bench's 192-wide CJK-pretrained ViT, 32 px, patch 4, 65 tokens) and saved as a model dir; then
:func:`p3b_hf.export.run_onnx_bench` (the library call behind ``bench --onnx``) times it against the dense
model in one run (eager / fast / ONNX Runtime fp32 / int8, batch 1 and 32). Run from the repository root::

    python -m scripts.onnx_deploy_bench --output-dir runs/onnx_devbench --keep 0.5 0.25 --threads 1

Writes ``OUTPUT/keep{K}/`` (model dirs) and ``OUTPUT/bench_onnx_keep{K}.json`` (the bench reports).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from p3b_hf import apply_width_plan
from p3b_hf.bench import random_plan
from p3b_hf.checkpoints import save_model_dir
from p3b_hf.export import ONNX_VARIANTS, format_onnx_table, run_onnx_bench
from p3b_hf.loading import load_image_processor, load_model
from scripts.devbench_common import default_bench, source_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="dense model dir (default: the dev-bench's pretrained ViT)")
    p.add_argument("--output-dir", required=True)
    p.add_argument(
        "--keep", type=float, nargs="+", default=[0.5, 0.25], help="whole-model parameter keep ratios"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    p.add_argument("--pruned-variants", nargs="*", default=["ort-fp32+nofold"])
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    model = a.model or source_model(default_bench())
    out = Path(a.output_dir)
    dense = load_model(model).eval()
    processor = load_image_processor(model)
    for keep in a.keep:
        model_dir = out / f"keep{keep:g}"
        if not (model_dir / "config.json").exists():
            plan = random_plan(dense.config, keep, "p3b", a.seed)
            pruned = apply_width_plan(dense, plan, provenance={"base_model_name_or_path": model})
            save_model_dir(pruned, model_dir, image_processor=processor, plan=plan)
        report = run_onnx_bench(
            load_model(str(model_dir)).eval(),
            dense,
            batch_sizes=a.batch_sizes,
            repeats=a.repeats,
            threads=a.threads,
            variants=ONNX_VARIANTS,
            pruned_variants=a.pruned_variants,
            sources={"pruned": str(model_dir), "dense": model},
            seed=a.seed,
        )
        print(format_onnx_table(report))
        (out / f"bench_onnx_keep{keep:g}.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
