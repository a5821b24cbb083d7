"""``p3b-hf bench``: images/s of a pruned model vs its dense original vs the ideal plain ViT of equal
shapes, measured in one run (see :mod:`p3b_hf.bench`). The flags are generated from
:class:`p3b_hf.options.BenchOptions`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..options import BenchOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..options import BenchOptions, add_options

    add_options(parser, BenchOptions, one_of=("model", "random_arch"))


def _split(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def run(args: argparse.Namespace) -> int:
    from ..options import BenchOptions, options_from_namespace

    return bench(options_from_namespace(BenchOptions, args))


def bench(args: BenchOptions) -> int:
    """Time what ``args`` names and print the table (``--onnx``: the CPU deployment table); the library
    calls are :func:`p3b_hf.bench.run_bench` / :func:`p3b_hf.export.run_onnx_bench`."""
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


def _run_onnx(args: BenchOptions, pruned, dense, sources: dict[str, str]) -> int:
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
