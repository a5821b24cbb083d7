#!/usr/bin/env python
"""Latency budgets on the dev-bench (BENCHMARKS.md §8): every method at ``--targets`` speed-ups of the deployed
model (ONNX Runtime fp32, CPU, batch 1 by default), then the same methods at the *parameter* budget those cells
ended at (the param twin), measured the same way -- what a parameter budget buys at equal parameters.

    python -m scripts.devbench_latency --epochs 1 --max-train-samples 2000 --targets 2 3 \\
        --methods global-taylor,vbp,p3b --threads 1 --output-dir runs/devbench_latency

``--twin-ratios global-taylor=0.65,p3b=0.78``: the twin of a method at that parameter budget instead (one chosen
to *measure* as fast as the latency cell, from an earlier run's ratio -> speed pairs); ``--no-twins``: latency
cells only. Every twin row keeps the latency cell's measured speed-up (``twin_speed_target``) beside its own.

Every latency cell and every twin is then measured once more, together, the way the latency cells verify
(``p3b_hf.latency.verify.measure``: the deployed artefact against the dense cell's model, paired, on
``--speed-backend`` with ``--threads``): ``compare``'s own *deployable speed* column uses torch's default
thread count, so only these ``speed_same_way`` figures compare a twin with its latency cell
(``--remeasure-only``: just this step, on finished cells).

Cells are :func:`p3b_hf.compare.run_compare` cells (``--budget latency`` / ``params``), so finished ones are
reused on a re-run; ``latency.json`` holds both tables' rows.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

from p3b_hf.compare import CompareJob, CompareOptions, markdown_table, run_compare
from p3b_hf.latency.options import LatencyOptions
from p3b_hf.options import OutputOptions
from scripts.devbench_common import base_parser, data_dir, recipe, source_model


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--methods", default="global-taylor,vbp,p3b")
    p.add_argument("--targets", type=float, nargs="+", default=[2.0, 3.0])
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--max-eval-samples", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--speed-backend", default="onnxruntime", choices=("onnxruntime", "torch"))
    p.add_argument("--speed-device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--output-dir", required=True)
    p.add_argument("--twin-ratios", default="", help="method=ratio,...: the param twin's budget per method")
    p.add_argument("--no-twins", action="store_true", help="latency cells only")
    p.add_argument("--remeasure-only", action="store_true", help="only re-measure the finished cells")
    a = p.parse_args(argv)
    twin_ratio = {k: float(v) for k, v in (kv.split("=") for kv in a.twin_ratios.split(",") if kv)}
    out = Path(a.output_dir)
    data, train = recipe(data_dir(a.bench, out), epochs=a.epochs)
    data = dataclasses.replace(
        data, max_train_samples=a.max_train_samples, max_eval_samples=a.max_eval_samples
    )
    latency = LatencyOptions(
        speed_backend=a.speed_backend,
        speed_device=a.speed_device,
        threads=a.threads,
        latency_cache=str(out / "cache"),
    )
    if a.remeasure_only:
        remeasure(out, latency)
        return 0
    common = dict(model=source_model(a.bench), methods=a.methods, dense_baseline=True, bench_device="cpu")
    rows = run_compare(
        CompareJob(
            compare=CompareOptions(
                **common,
                budget="latency",
                target_speedups=",".join(f"{t:g}" for t in a.targets),
                no_bench=True,
            ),
            data=data,
            output=OutputOptions(output_dir=str(out / "latency")),
            train=train,
            latency=latency,
        )
    )
    print(markdown_table(rows))
    twins = []
    # the twins' compare needs a dense cell (VBP starts from it): the latency compare's, not a second training
    if (out / "latency" / "dense" / "pruning_report.json").exists() and not (
        out / "params" / "dense"
    ).exists():
        shutil.copytree(out / "latency" / "dense", out / "params" / "dense")
    for r in rows:
        if a.no_twins or r["status"] != "ok" or r["method"] == "dense" or r.get("param_reduction") is None:
            continue
        ratio = twin_ratio.get(r["method"], round(float(r["param_reduction"]), 3))
        twin = run_compare(
            CompareJob(
                compare=CompareOptions(
                    **{**common, "methods": r["method"]},
                    prune_ratio=str(ratio),
                    deploy_backend="onnxruntime" if a.speed_backend == "onnxruntime" else "fast",
                ),
                data=data,
                output=OutputOptions(output_dir=str(out / "params")),
                train=train,
            )
        )
        twins += [
            dict(t, twin_of=r["target_speedup"], twin_speed_target=r.get("achieved_speedup"))
            for t in twin
            if t["method"] == r["method"]
        ]
        (out / "latency.json").write_text(json.dumps({"latency": rows, "param_twins": twins}, indent=1))
    print(markdown_table(twins))
    (out / "latency.json").write_text(json.dumps({"latency": rows, "param_twins": twins}, indent=1))
    remeasure(out, latency)
    return 0


def remeasure(out: Path, latency: LatencyOptions) -> None:
    """``speed_same_way`` of every finished latency cell and twin in ``latency.json``: its saved model's
    speed-up over the dense cell's model, measured as the latency cells verify (one process, one after the
    other)."""
    from p3b_hf.latency.verify import measured_speedup
    from p3b_hf.loading import load_model

    path = out / "latency.json"
    data = json.loads(path.read_text())
    dense = load_model(str(out / "latency" / "dense"))
    for part, sub in (("latency", "latency"), ("param_twins", "params")):
        for r in data[part]:
            if r["method"] == "dense" or r["status"] != "ok":
                continue
            x, ratio = r.get("target_speedup"), r.get("prune_ratio")
            name = f"{r['method']}-x{x:g}" if part == "latency" else f"{r['method']}-{round(100 * ratio)}"
            r["speed_same_way"] = measured_speedup(latency, dense, load_model(str(out / sub / name)))
            print(f"{part} {name}: {r['speed_same_way']:.3f}x (same way as the latency cells)")
    path.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    sys.exit(main())
