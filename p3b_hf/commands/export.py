"""``p3b-hf export``: a pruned model dir -> ``DIR/onnx/model.onnx`` (+ ``model_int8.onnx``), verified in
onnxruntime against PyTorch before anything is written (see :mod:`p3b_hf.export`, docs/export.md)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model dir written by `p3b-hf prune` / `p3b-hf finetune`")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="export format (onnx)")
    parser.add_argument("--quantize", choices=("int8",), default=None,
                        help="also write onnx/model_int8.onnx: dynamic int8, or static with --calibration-dataset")
    parser.add_argument("--calibration-dataset", default=None,
                        help="static int8: calibrate activation ranges on images of this data set's train split "
                             "(implies --quantize int8)")
    parser.add_argument("--calibration-samples", type=int, default=128, help="calibration images (default 128)")
    parser.add_argument("--dataset", default=None,
                        help="verify on its eval images and report top-1 of PyTorch / ONNX fp32 / int8 on the eval split")
    parser.add_argument("--image-column", default=None)
    parser.add_argument("--label-column", default=None)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--eval-split", default=None)
    parser.add_argument("--max-eval-samples", type=int, default=None, help="evaluate on at most this many images")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 20; 23 adds the Attention op)")
    parser.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension (default: static)")
    parser.add_argument("--batch-size", type=int, default=1, help="static batch size of the export (default 1)")
    parser.add_argument("--fold", choices=("all", "reads", "none"), default="all",
                        help="fold P3B's residual gathers (reads) and scatter-adds (all) into zero columns/rows of "
                             "the adjacent Linears (exact; default all) or keep them as Gather/ScatterND ops (none)")
    parser.add_argument("--graph", choices=("deploy", "hf"), default="deploy",
                        help="deploy: the optimize_for_inference module (default); hf: the HF module as is")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest allowed max |logit(ONNX fp32) - logit(PyTorch)| (default 1e-3)")
    parser.add_argument("--verify-samples", type=int, default=16, help="images in the verification batch (16)")
    parser.add_argument("--int8-min-agreement", type=float, default=None,
                        help="refuse the export if int8 and fp32 agree on fewer top-1 predictions of the "
                             "verification batch (fraction, e.g. 0.9; default: report only)")
    parser.add_argument("--speed", action="store_true",
                        help="also time (CPU, batch 1) the export against the dense original's export and PyTorch "
                             "eager; the result goes into export_report.json and the model card")
    parser.add_argument("--speed-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime CPU threads")
    parser.add_argument("--output-dir", default=None, help="where the ONNX files go (default MODEL/onnx)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..export import export_model_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    data_kwargs = {"image_column": args.image_column, "label_column": args.label_column,
                   "train_split": args.train_split, "eval_split": args.eval_split}
    result = export_model_dir(
        args.model, output_dir=args.output_dir, quantize=args.quantize, calibration_dataset=args.calibration_dataset,
        calibration_samples=args.calibration_samples, dataset=args.dataset, data_kwargs=data_kwargs,
        max_eval_samples=args.max_eval_samples, opset=args.opset, dynamic_batch=args.dynamic_batch,
        batch_size=args.batch_size, fold=args.fold, graph=args.graph, tolerance=args.tolerance,
        verify_samples=args.verify_samples, int8_min_agreement=args.int8_min_agreement, speed=args.speed,
        speed_repeats=args.speed_repeats, threads=args.threads, seed=args.seed)
    sizes = {f["file"]: f["bytes"] for f in result.report["files"].values()}
    print(f"wrote {result.output_dir}: " + ", ".join(
        f"{name} ({sizes[name] / 1e6:.2f} MB)" if name in sizes else name for name in result.files))
    return 0
