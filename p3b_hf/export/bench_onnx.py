"""``p3b-hf bench --onnx``: dense and pruned models in PyTorch eager, ``fast`` and ONNX Runtime fp32 / int8,
each ONNX model checked against PyTorch, timed round-robin per batch size; the ratios and the table."""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import P3BError
from .deploy import _image_shape, deploy_module
from .int8 import quantize_int8
from .onnx_export import DEFAULT_OPSET, export_onnx
from .speed import _eager_runner, _ort_runner
from .stack import ExportError, require_onnx
from .verify import DEFAULT_TOLERANCE, compare_logits, onnx_logits, session, torch_logits

BENCH_SCHEMA = "p3b_hf.bench_onnx/1"
ONNX_VARIANTS = ("eager", "fast", "ort-fp32", "ort-int8")


def _env(threads: int) -> dict[str, Any]:
    from ..bench import environment

    env = environment(torch.device("cpu"))
    env["threads"] = threads
    env["cpu_count"] = os.cpu_count()
    try:
        env["onnxruntime"] = require_onnx().__version__
    except ExportError:
        env["onnxruntime"] = None
    return env


def _parse_onnx_variant(name: str) -> dict[str, Any]:
    """``eager`` | ``fast`` | ``ort-fp32`` | ``ort-int8`` [``+nofold`` | ``+readfold`` | ``+hf`` |
    ``+static`` (int8 with random-pixel calibration: for speed only) | ``+opsetN``]."""
    base, *mods = name.split("+")
    if base not in ONNX_VARIANTS or (base in ("eager", "fast") and mods):
        raise P3BError(
            f"Unknown ONNX bench variant {name!r}: use eager, fast, ort-fp32 or ort-int8, the ort ones "
            "optionally with +nofold, +readfold, +hf, +static (int8), +opsetN."
        )
    spec: dict[str, Any] = {"base": base, "fold": "all", "graph": "deploy", "static": False, "opset": None}
    for m in mods:
        if m == "nofold":
            spec["fold"] = "none"
        elif m == "readfold":
            spec["fold"] = "reads"
        elif m == "hf":
            spec["graph"] = "hf"
        elif m == "static" and base == "ort-int8":
            spec["static"] = True
        elif m.startswith("opset") and m[5:].isdigit():
            spec["opset"] = int(m[5:])
        else:
            raise P3BError(f"Unknown modifier +{m} in ONNX bench variant {name!r}.")
    return spec


def run_onnx_bench(
    pruned: nn.Module,
    dense: nn.Module | None = None,
    *,
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 10,
    warmup: int = 3,
    min_repeat_s: float = 0.2,
    threads: int | None = None,
    variants: Sequence[str] = ONNX_VARIANTS,
    pruned_variants: Sequence[str] = (),
    opset: int | None = None,
    sources: dict[str, str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """``p3b-hf bench --onnx``: CPU images/s of dense and pruned models in PyTorch eager, ``fast``
    (optimize_for_inference) and ONNX Runtime fp32 / int8 (dynamic), timed round-robin in one run,
    per batch size. Every ONNX model is exported with a dynamic batch and checked against its
    PyTorch model (``checks``). Ratios are against the dense model in PyTorch eager at the same batch
    (``vs_dense_eager``) and against the dense model in the same variant (``vs_dense_same``)."""
    from ..bench import _describe, dense_model_for, time_round_robin

    require_onnx()
    for v in (*variants, *pruned_variants):
        _parse_onnx_variant(v)
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise P3BError("--onnx-batch-sizes must be positive integers, e.g. 1,32.")
    threads = threads or torch.get_num_threads()
    sources = dict(sources or {})
    if dense is None:
        dense, sources["dense"] = dense_model_for(pruned)
    models = {"pruned": pruned.eval().float(), "dense": dense.eval().float()}
    sources.setdefault("pruned", str(getattr(pruned.config, "_name_or_path", "") or "in-memory"))
    sources.setdefault("dense", str(getattr(dense.config, "_name_or_path", "") or "in-memory"))
    channels, size = _image_shape(pruned.config)
    report: dict[str, Any] = {
        "schema": BENCH_SCHEMA,
        "env": _env(threads),
        "settings": {
            "dtype": "fp32 (int8: dynamic int8 MatMuls)",
            "batch_sizes": list(batch_sizes),
            "repeats": repeats,
            "warmup": warmup,
            "min_repeat_s": min_repeat_s,
            "image_size": size,
            "opset": opset or DEFAULT_OPSET,
            "variants": list(variants),
            "pruned_variants": list(pruned_variants),
            "onnx_batch": "dynamic",
        },
        "models": {name: _describe(m, sources[name]) for name, m in models.items()},
        "checks": {},
        "export_s": {},
    }
    x_check = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(seed + 1))
    runners: dict[str, Callable] = {}
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="p3b_hf_bench_onnx_") as tmp:
            for name, model in models.items():
                ref = torch_logits(model, x_check)
                fp32_cache: dict[tuple, Path] = {}
                for v in (*variants, *(pruned_variants if name == "pruned" else ())):
                    spec = _parse_onnx_variant(v)
                    if spec["base"] == "eager":
                        runners[f"{name}/{v}"] = _eager_runner(model)
                        continue
                    if spec["base"] == "fast":
                        runners[f"{name}/{v}"] = deploy_module(
                            model, fold="none"
                        )  # optimize_for_inference defaults
                        continue
                    key = (spec["fold"], spec["graph"], spec["opset"] or opset)
                    if key not in fp32_cache:
                        path = Path(tmp) / f"{name}_{len(fp32_cache)}.onnx"
                        t = time.time()
                        export_onnx(
                            deploy_module(model, fold=spec["fold"], graph=spec["graph"]),
                            path,
                            model.config,
                            dynamic_batch=True,
                            opset=key[2],
                        )
                        report["export_s"][f"{name}/{v}"] = time.time() - t
                        fp32_cache[key] = path
                    path = fp32_cache[key]
                    if spec["base"] == "ort-int8":
                        qpath = path.with_name(path.stem + f"_int8{'s' if spec['static'] else ''}.onnx")
                        calib = (
                            torch.randn(
                                16, channels, size, size, generator=torch.Generator().manual_seed(seed + 2)
                            ).numpy()
                            if spec["static"]
                            else None
                        )
                        quantize_int8(path, qpath, calibration=calib, work_dir=tmp)
                        path = qpath
                    sess = session(path, threads)
                    check = compare_logits(ref, onnx_logits(sess, x_check))
                    report["checks"][f"{name}/{v}"] = {
                        k: check[k] for k in ("max_abs_diff", "top1_agreement")
                    }
                    if spec["base"] == "ort-fp32" and not check["max_abs_diff"] <= DEFAULT_TOLERANCE:
                        raise ExportError(
                            f"bench --onnx: {name}/{v} disagrees with PyTorch (max |delta logit| "
                            f"{check['max_abs_diff']:.3g}); not timing a wrong model."
                        )
                    runners[f"{name}/{v}"] = _ort_runner(sess)
            results = []
            for b in batch_sizes:
                x = torch.randn(b, channels, size, size, generator=torch.Generator().manual_seed(seed))
                timed = time_round_robin(runners, x, repeats, warmup, min_repeat_s)
                for key, row in timed.items():
                    model_name, variant = key.split("/", 1)
                    results.append({"model": model_name, "variant": variant, "batch_size": b, **row})
    finally:
        torch.set_num_threads(prev_threads)
    report["results"] = results
    report["ratios"] = onnx_ratios(results)
    from ..report import portable

    return portable(report)


def onnx_ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per batch size: every row's images/s over dense eager (``vs_dense_eager``; ratio of medians, and
    ``vs_dense_eager_paired``: the median over rounds of the per-round ratio, robust to load drift on a
    shared machine) and over the dense model in the same variant (``vs_dense_same``);
    ``best_pruned_deployable``: the fastest pruned ``fast`` / ``ort-*`` variant and its ratio over dense eager."""
    import statistics

    out: dict[str, Any] = {}
    for b in sorted({r["batch_size"] for r in results}):
        full = {(r["model"], r["variant"]): r for r in results if r["batch_size"] == b}
        rows = {k: r["images_per_s"] for k, r in full.items()}
        base = rows.get(("dense", "eager"))
        base_t = full.get(("dense", "eager"), {}).get("times_ms")
        entry: dict[str, Any] = {"vs_dense_eager": {}, "vs_dense_eager_paired": {}, "vs_dense_same": {}}
        for (m, v), ips in rows.items():
            if base:
                entry["vs_dense_eager"][f"{m}/{v}"] = ips / base
            t = full[(m, v)].get("times_ms")
            if base_t and t and len(t) == len(base_t):
                entry["vs_dense_eager_paired"][f"{m}/{v}"] = statistics.median(
                    a / c for a, c in zip(base_t, t)
                )
            if m == "pruned":
                same = rows.get(("dense", v), rows.get(("dense", v.split("+")[0])))
                if same:
                    entry["vs_dense_same"][v] = ips / same
        deployable = {v: ips for (m, v), ips in rows.items() if m == "pruned" and v != "eager"}
        if deployable and base:
            best = max(deployable, key=deployable.get)
            entry["best_pruned_deployable"] = {
                "variant": best,
                "images_per_s": deployable[best],
                "vs_dense_eager": deployable[best] / base,
            }
        out[str(b)] = entry
    return out


def format_onnx_table(report: dict[str, Any]) -> str:
    env, s = report["env"], report["settings"]
    lines = [
        f"CPU ({env.get('cpu')}, {env.get('cpu_count')} cores), {env['threads']} thread(s), torch {env['torch']}, "
        f"onnxruntime {env.get('onnxruntime')}, fp32 (int8: dynamic), median of {s['repeats']} repeats",
        f"{'batch':>5} {'model':7} {'variant':22} {'params (M)':>10} {'images/s':>10} {'ms/batch':>9} "
        f"{'x dense eager':>13} {'(paired)':>9} {'x dense same':>12}",
    ]
    for r in report["results"]:
        b, m, v = r["batch_size"], r["model"], r["variant"]
        rat = report["ratios"][str(b)]
        same = rat["vs_dense_same"].get(v) if m == "pruned" else None
        lines.append(
            f"{b:5d} {m:7} {v:22} {report['models'][m]['params'] / 1e6:10.2f} {r['images_per_s']:10.1f} "
            f"{r['median_ms']:9.2f} {rat['vs_dense_eager'].get(f'{m}/{v}', math.nan):13.2f} "
            f"{rat.get('vs_dense_eager_paired', {}).get(f'{m}/{v}', math.nan):9.2f} "
            + (f"{same:12.2f}" if same is not None else "")
        )
    for b, rat in report["ratios"].items():
        best = rat.get("best_pruned_deployable")
        if best:
            lines.append(
                f"batch {b}: best deployable pruned artefact {best['variant']} = {best['vs_dense_eager']:.2f}x "
                "the dense PyTorch eager model"
            )
    return "\n".join(line.rstrip() for line in lines)
