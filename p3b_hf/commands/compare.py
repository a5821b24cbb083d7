"""``p3b-hf compare``: every method at equal whole-model parameter budgets, one table and one plot."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", default="p3b,vbp,global-taylor,global-hessian",
                        help="comma list of p3b, p3b-reference (P3B with --reference: the reference BPI/gate path), vbp, "
                             "global-<hessian|taylor|l1|l2|random>")
    parser.add_argument("--prune-ratio", default="0.5,0.75",
                        help="comma list of whole-model parameter fractions to remove")
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--epochs", type=float, default=50.0,
                        help="training epochs per method (P3B: pruning run; VBP/global: fine-tune)")
    parser.add_argument("--dense-baseline", action="store_true",
                        help="also fine-tune the dense model with the same budget (reference accuracy)")
    parser.add_argument("--bench-device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--bench-batch-size", type=int, default=None,
                        help="throughput batch (default: 1024 on GPU, 1 on CPU)")
    parser.add_argument("--bench-repeats", type=int, default=5)
    parser.add_argument("--no-bench", action="store_true", help="skip the throughput measurement")
    parser.add_argument("--deploy-backend", default="auto", choices=["auto", "onnxruntime", "fast"],
                        help="deployable path of the deploy_speed_vs_dense column (CPU, batch --bench-batch-size or 1): "
                             "ONNX Runtime fp32 of the folded export when installed (auto), or optimize_for_inference")
    parser.add_argument("prune_args", nargs=argparse.REMAINDER,
                        help="after '--': further flags for every `p3b-hf prune` run (e.g. -- --batch-size 128 --bf16)")


def run(args: argparse.Namespace) -> int:
    from ..compare import (
        dense_row,
        env_device,
        parse_methods,
        parse_ratios,
        prune_argv,
        row_of,
        run_cell,
        throughput_ratio,
        write_outputs,
    )
    from ..loading import load_model

    specs = parse_methods(args.methods)
    ratios = parse_ratios(args.prune_ratio)
    extra = [a for a in args.prune_args if a != "--"]
    common = ["--model", args.model, "--dataset", args.dataset, *extra]
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = env_device(args.bench_device)
    dense = None if args.no_bench else load_model(args.model)
    deploy = None
    if dense is not None:
        from ..export import DeploySpeed  # the deployable path's speed, beside the eager one

        deploy = DeploySpeed(dense, batch_size=args.bench_batch_size or 1, repeats=args.bench_repeats,
                             backend=args.deploy_backend)
    rows = []
    if args.dense_baseline:
        rows.append(dense_row(common, out_dir / "dense", args.epochs))
    for ratio in ratios:
        for spec in specs:
            cell = out_dir / f"{spec.label}-{round(100 * ratio)}"
            report = run_cell(prune_argv(spec, ratio, common, cell, args.epochs), cell)
            speed = None
            if report.get("status") not in ("unreachable", "failed") and dense is not None:
                speed = throughput_ratio(cell, dense, device, args.bench_batch_size, args.bench_repeats)
            rows.append(row_of(spec.label, ratio, report, speed))
            if speed is not None and deploy is not None:
                rows[-1]["deploy_speed_vs_dense"] = deploy.measure(load_model(str(cell)))["deploy_speed_vs_dense"]
            write_outputs(out_dir, rows, vars_for_json(args))  # partial results survive a crash
    if deploy is not None:
        deploy.close()
    from ..compare import markdown_table

    print(markdown_table(rows))
    print(f"table: {out_dir / 'compare.md'}  plot: {out_dir / 'accuracy_vs_params.png'}")
    return 0


def vars_for_json(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if not k.startswith("_")}
