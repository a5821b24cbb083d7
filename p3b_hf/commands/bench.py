"""``p3b-hf bench``: images/s of a pruned model vs its dense original vs the ideal plain ViT of equal
shapes, measured in one run (see :mod:`p3b_hf.bench`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--model",
        help="pruned model dir or Hub id of any family (ViT, DeiT, BEiT, DINOv2, Swin, ConvNeXt); its dense "
        "original is --dense-model, else config.json base_model_name_or_path (refused if it cannot be loaded)",
    )
    src.add_argument(
        "--random-arch",
        choices=("deit-tiny", "deit-small", "deit-base"),
        help="benchmark a random-weight pruned model of this DeiT shape instead of --model",
    )
    parser.add_argument(
        "--dense-model",
        default=None,
        help="--model: the dense original to time against (dir or Hub id; default: config.json "
        "base_model_name_or_path); 'random': random weights of the dense shape (ViT/DeiT)",
    )
    parser.add_argument(
        "--keep",
        type=float,
        default=0.25,
        help="--random-arch: fraction of whole-model parameters kept (default 0.25 = 75%% pruned)",
    )
    parser.add_argument(
        "--plan-style",
        choices=("p3b", "uniform"),
        default="p3b",
        help="--random-arch: P3B-like residual in/out subsets (default) or uniform slimming",
    )
    parser.add_argument(
        "--plan-round-to",
        type=int,
        default=None,
        help="--random-arch: round every kept width of the random plan to a multiple of this",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    parser.add_argument(
        "--dtype", choices=("bf16", "fp16", "fp32"), default=None, help="default: bf16 on cuda, fp32 on cpu"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default: 1024 on cuda, 1 on cpu (P3B)")
    parser.add_argument("--repeats", type=int, default=10, help="timed repeats; the median is reported")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--compile", action="store_true", help="also time the optimised path under torch.compile"
    )
    parser.add_argument(
        "--variants",
        default=None,
        help="comma list for all models: eager, fast, compiled[+round8|+gather|+index_add|"
        "+dense|+conv|+nofold|+alltokens] (default eager,fast for ViT/DeiT, eager for BEiT / DINOv2 / "
        "Swin / ConvNeXt, which have no fast path; with --onnx eager,fast,ort-fp32,ort-int8)",
    )
    parser.add_argument(
        "--pruned-variants",
        default="",
        help="extra variants timed for the pruned model only, e.g. fast+round8,compiled+round8",
    )
    parser.add_argument(
        "--min-repeat-s",
        type=float,
        default=None,
        help="repeat forward passes until one timed repeat lasts this long (default 0.2 s on cpu, 0 on cuda)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", dest="json_out", default=None, help="write the full report (JSON) here")
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="CPU deployment table instead: dense and pruned in PyTorch eager, fast "
        "(optimize_for_inference) and ONNX Runtime fp32 / int8, per --onnx-batch-sizes "
        "(needs p3b_hf[onnx]; --variants / --pruned-variants then take eager, fast, ort-fp32, "
        "ort-int8[+nofold|+readfold|+hf|+static|+opsetN])",
    )
    parser.add_argument("--onnx-batch-sizes", default="1,32", help="--onnx: batch sizes timed (default 1,32)")
    parser.add_argument("--opset", type=int, default=None, help="--onnx: ONNX opset (default 20)")


def _split(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench import (
        bench_image_size,
        default_variants,
        dense_model_for,
        format_table,
        random_models,
        run_bench,
    )
    from ..errors import P3BError
    from ..export import P3B_MODEL_TYPES
    from ..loading import load_image_processor, load_model
    from ..runtime import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.batch_size is not None and args.batch_size < 1 or args.repeats < 1:
        raise P3BError("--batch-size and --repeats must be positive.")
    sources: dict[str, str] = {}
    image_size = None
    if args.random_arch:
        if args.dense_model:
            raise P3BError("--dense-model goes with --model; --random-arch builds its own dense model.")
        dense, pruned = random_models(
            args.random_arch, args.keep, args.plan_style, args.seed, args.plan_round_to
        )
        sources = {
            "pruned": f"random {args.plan_style} plan, keep {args.keep} of {args.random_arch}",
            "dense": f"random-weight {args.random_arch}",
        }
    else:
        from ..loading import load_config
        from ..models.locator import require_supported_config

        require_supported_config(load_config(args.model))  # ResNet, CLIP, ...: the one clear error
        pruned = load_model(args.model)
        if pruned.config.model_type not in P3B_MODEL_TYPES:
            raise P3BError(
                f"{args.model} is not a p3b_hf pruned model (model_type {pruned.config.model_type}); "
                "give the output directory of `p3b-hf prune` / `p3b-hf finetune`, or use --random-arch."
            )
        sources = {"pruned": args.model}
        # the dense original before anything is timed: refused in one line when it cannot be found
        dense, sources["dense"] = dense_model_for(pruned, args.dense_model)
        image_size = bench_image_size(pruned.config, load_image_processor(args.model))
    variants = _split(args.variants) if args.variants else default_variants(pruned.config)
    if args.compile and "compiled" not in variants:
        variants = (*variants, "compiled")
    if args.onnx:
        return _run_onnx(args, pruned, dense, sources)
    report = run_bench(
        pruned,
        dense,
        device=device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        repeats=args.repeats,
        warmup=args.warmup,
        variants=variants,
        pruned_variants=_split(args.pruned_variants),
        min_repeat_s=args.min_repeat_s,
        sources=sources,
        seed=args.seed,
        image_size=image_size,
    )
    print(format_table(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json_out}")
    return 0


def _run_onnx(args: argparse.Namespace, pruned, dense, sources: dict[str, str]) -> int:
    from ..errors import P3BError
    from ..export import ONNX_VARIANTS, format_onnx_table, run_onnx_bench

    if args.device == "cuda" or args.compile or args.dtype not in (None, "fp32"):
        raise P3BError("--onnx times CPU fp32 (and int8) only; drop --device cuda / --compile / --dtype.")
    try:
        batch_sizes = tuple(int(b) for b in _split(args.onnx_batch_sizes))
    except ValueError as e:
        raise P3BError(
            f"--onnx-batch-sizes {args.onnx_batch_sizes!r} must be a comma list of integers."
        ) from e
    variants = _split(args.variants) if args.variants else ONNX_VARIANTS
    report = run_onnx_bench(
        pruned,
        dense,
        batch_sizes=batch_sizes,
        repeats=args.repeats,
        warmup=args.warmup,
        min_repeat_s=0.2 if args.min_repeat_s is None else args.min_repeat_s,
        threads=args.threads,
        variants=variants,
        pruned_variants=_split(args.pruned_variants),
        opset=args.opset,
        sources=sources,
        seed=args.seed,
    )
    print(format_onnx_table(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json_out}")
    return 0
