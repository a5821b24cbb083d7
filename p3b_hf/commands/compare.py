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
                        help="training epochs per method (P3B: pruning run; VBP/global: fine-tune; dense cell)")
    parser.add_argument("--dense-baseline", action="store_true",
                        help="also fine-tune the dense model with the same budget (reference accuracy); the dense "
                             "cell is trained anyway when a method starts from it (vbp, --global-from dense)")
    parser.add_argument("--global-from", choices=["source", "dense"], default="source",
                        help="what global-* cells prune: the --model (source, default; their fine-tune trains the "
                             "new head) or the dense cell fine-tuned on the task (dense). VBP, a post-training "
                             "method, always starts from the dense cell and distils from it")
    parser.add_argument("--bench-device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--bench-batch-size", type=int, default=None,
                        help="throughput batch (default: 1024 on GPU, 1 on CPU)")
    parser.add_argument("--bench-repeats", type=int, default=5)
    parser.add_argument("--no-bench", action="store_true", help="skip the throughput measurement")
    parser.add_argument("prune_args", nargs=argparse.REMAINDER,
                        help="after '--': further flags for every `p3b-hf prune` run (e.g. -- --batch-size 128 --bf16)")


def run(args: argparse.Namespace) -> int:
    from ..compare import (
        START_DENSE,
        check_reusable,
        dense_row,
        env_device,
        markdown_table,
        own_epochs,
        parse_methods,
        parse_ratios,
        prune_argv,
        row_of,
        run_cell,
        start_label,
        throughput_ratio,
        write_outputs,
    )
    from ..loading import load_model

    specs = parse_methods(args.methods)
    ratios = parse_ratios(args.prune_ratio)
    extra = [a for a in args.prune_args if a != "--"]
    common = ["--model", args.model, "--dataset", args.dataset, *extra]
    out_dir = Path(args.output_dir)
    dense_dir = out_dir / "dense"
    cells = [(ratio, spec, spec.start(args.global_from), out_dir / f"{spec.label}-{round(100 * ratio)}")
             for ratio in ratios for spec in specs]
    from_dense = sorted({spec.label for _, spec, start, _ in cells if start == START_DENSE})
    need_dense = args.dense_baseline or bool(from_dense)
    # a finished cell made from another model than it would start from now is refused before any training
    if need_dense:
        check_reusable(dense_dir, args.model)
    for _, _, start, cell in cells:
        check_reusable(cell, str(dense_dir) if start == START_DENSE else args.model)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = env_device(args.bench_device)
    dense = None if args.no_bench else load_model(args.model)
    rows = []
    dense_epochs = None
    if need_dense:
        if from_dense:
            why = "" if args.dense_baseline else " (trained although --dense-baseline was not given)"
            print(f"p3b-hf compare: {', '.join(from_dense)} start from the dense cell {dense_dir}, the model "
                  f"fine-tuned on this task, trained once and reused{why}")
        dense_cell = dense_row(common, dense_dir, args.epochs)
        rows.append(dense_cell)
        dense_epochs = dense_cell["epochs_total"] if dense_cell["status"] == "ok" else None
    for ratio, spec, start, cell in cells:
        from_dense_cell = start == START_DENSE
        if from_dense_cell and dense_epochs is None:
            report = {"status": "failed", "error": f"the dense cell {dense_dir} failed; {spec.label} starts from it"}
        else:
            argv = prune_argv(spec, ratio, common, cell, args.epochs,
                              start_model=str(dense_dir) if from_dense_cell else None)
            report = run_cell(argv, cell)
        ok = report.get("status") not in ("unreachable", "failed")
        speed = None
        if ok and dense is not None:
            speed = throughput_ratio(cell, dense, device, args.bench_batch_size, args.bench_repeats)
        before = dense_epochs if from_dense_cell and dense_epochs is not None else 0.0  # the dense cell's training
        total = own_epochs(report, args.epochs) + before if ok else None
        rows.append(row_of(spec.label, ratio, report, speed, start=start_label(start, dense_epochs),
                           epochs_total=total))
        write_outputs(out_dir, rows, vars_for_json(args))  # partial results survive a crash
    write_outputs(out_dir, rows, vars_for_json(args))
    print(markdown_table(rows))
    print(f"table: {out_dir / 'compare.md'}  plot: {out_dir / 'accuracy_vs_params.png'}")
    return 0


def vars_for_json(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if not k.startswith("_")}
