#!/usr/bin/env python
"""CPU deployment speed of P3B-shaped pruned copies of a dense model dir, through ``p3b-hf bench --onnx``.

For each ``--keep`` a random P3B-like plan (``p3b_hf.bench.random_plan``: per-layer head dims and MLP widths,
every sub-block reading / writing a random residual subset) is applied to the dense model (default: the
dev-bench's 192-wide CJK-pretrained ViT, 32 px, patch 4, 65 tokens) and saved as a model dir; then the shipped
command times it against the dense model in one run (eager / fast / ONNX Runtime fp32 / int8, batch 1 and 32):

    python scripts/onnx_deploy_bench.py --output-dir runs/onnx_devbench --keep 0.5 0.25 --threads 1

Writes ``OUTPUT/keep{K}/`` (model dirs) and ``OUTPUT/bench_onnx_keep{K}.json`` (the bench reports).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p3b_hf.cli import main as cli_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="/work/shared/dev-bench/pretrained/vit-tiny-cjk1000", help="dense model dir")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--keep", type=float, nargs="+", default=[0.5, 0.25], help="whole-model parameter keep ratios")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--pruned-variants", default="ort-fp32+nofold")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    from p3b_hf import apply_width_plan
    from p3b_hf.bench import random_plan
    from p3b_hf.loading import load_image_processor, load_model
    from p3b_hf.report import save_pruned_model

    out = Path(a.output_dir)
    dense = load_model(a.model).eval()
    processor = load_image_processor(a.model)
    for keep in a.keep:
        model_dir = out / f"keep{keep:g}"
        if not (model_dir / "config.json").exists():
            plan = random_plan(dense.config, keep, "p3b", a.seed)
            pruned = apply_width_plan(dense, plan, provenance={"base_model_name_or_path": a.model})
            save_pruned_model(pruned, model_dir, image_processor=processor, plan=plan)
        code = cli_main(["bench", "--onnx", "--model", str(model_dir), "--threads", str(a.threads), "--repeats",
                         str(a.repeats), "--onnx-batch-sizes", a.batch_sizes, "--pruned-variants", a.pruned_variants,
                         "--seed", str(a.seed), "--json", str(out / f"bench_onnx_keep{keep:g}.json")])
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
