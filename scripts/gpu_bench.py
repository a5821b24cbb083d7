#!/usr/bin/env python
"""P3B Table 7 (GPU half), reproduced in shape on one GPU with random-weight models; prints ONE JSON
document on stdout (progress goes to stderr).

    python -m scripts.gpu_bench > gpu_bench.json        # from the repository root, < 9 min on one H100

For DeiT-B and DeiT-S shapes (12 layers, 224 px, 1000 classes) it builds the dense model and random
P3B-like pruned models at 75 % and 90 % whole-model parameter reduction (residual in/out subsets,
per-layer head dims and MLP widths: :func:`p3b_hf.bench.random_plan`), plus each pruned model's ideal
plain ViT (same Linear shapes, no gathers/scatters). It times bf16, batch 1024, images/s (median of
the repeats, round-robin over all models of one architecture, CUDA-synchronised) for

- ``eager``: the HF / p3b_hf module as is (what the paper measured, on an RTX 3090),
- ``fast``: :func:`p3b_hf.optimize.optimize_for_inference` without compile (patch embedding as a
  matmul, fused q/k/v, folded norms, cls-only last layer, widths zero-padded to multiples of 8),
- ``compiled``: the same under ``torch.compile`` (gather-formulated scatter),

and reports speed-ups over dense and the pruned / ideal ratio (target >= 0.95). Then, time
permitting, extras on DeiT-B 75 %: the same without the zero padding (``+noround``, for pruned and
ideal: the ragged shapes are what made the eager pruned model slower than dense on an H100), other
scatter formulations (``+index_add``, ``+dense``), and a uniformly slimmed plan of the same size.
A wall-clock budget (``--time-budget``, default 540 s) skips what would not fit; skipped items are
listed in the JSON.

Compile time dominates (each pruned model has 12 differently shaped layers, ~15 compiled models):
the script first compiles all of them in ``--precompile-workers`` (8) parallel processes for at most
``--precompile-timeout`` (240) s, filling inductor's on-disk FX-graph / Triton caches; the timed
process then mostly hits those caches. Per-runner failures are recorded under ``errors`` and do not
stop the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import ViTForImageClassification

from p3b_hf.bench import (
    dense_arch_config,
    environment,
    make_runner,
    random_plan,
    time_round_robin,
    warm_up,
)
from p3b_hf.cost import count_cost
from p3b_hf.models.plain_vit import plain_like
from p3b_hf.slicing import apply_width_plan

# P3B appendix Table 7, RTX 3090, batch 1024 (GPU) -- FPS and speed-up over dense
PAPER_TABLE7_GPU = {
    "deit-base": {
        "0%": {"fps": 536, "speedup": 1.0},
        "75%": {"fps": 1156, "speedup": 2.16},
        "90%": {"fps": 1674, "speedup": 3.12},
    },
    "deit-small": {
        "0%": {"fps": 1676, "speedup": 1.0},
        "75%": {"fps": 2473, "speedup": 1.48},
        "90%": {"fps": 3157, "speedup": 1.88},
    },
}
COMPILE_GUESS_S = 45.0  # until the first compile has been measured


def log(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


class Budget:
    """Wall-clock budget: ``fits(seconds)`` says whether work of that estimated length still fits."""

    def __init__(self, total_s: float) -> None:
        self.t0, self.total = time.perf_counter(), total_s
        self.compile_s: list[float] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def compile_estimate(self) -> float:
        return max(self.compile_s) if self.compile_s else COMPILE_GUESS_S

    def fits(self, seconds: float) -> bool:
        return self.elapsed() + seconds <= self.total


def add_runners(
    group: dict[str, tuple[torch.nn.Module, str]],
    runners: dict[str, Any],
    x: torch.Tensor,
    args: argparse.Namespace,
    budget: Budget,
    reserve_s: float,
    doc: dict[str, Any],
    call_s: dict[str, float],
    inner: dict[str, int],
) -> None:
    """Build and warm up (compile) each runner of ``group`` that fits the budget."""
    for key, (model, variant) in group.items():
        compiled = variant.startswith("compiled")
        need = (budget.compile_estimate() if compiled else 5.0) + reserve_s
        if not budget.fits(need):
            doc["skipped"].append(
                {
                    "runner": key,
                    "reason": f"time budget ({budget.elapsed():.0f} s used, ~{need:.0f} s needed)",
                }
            )
            log(f"skip {key}")
            continue
        t0 = time.perf_counter()
        try:
            fn = make_runner(model, variant)
            inner.update(warm_up({key: fn}, x, args.warmup, 0.0, call_s))
        except Exception as e:  # one failing variant must not cost the whole table
            doc["errors"].append({"runner": key, "error": f"{type(e).__name__}: {str(e)[:500]}"})
            log(f"FAILED {key}: {type(e).__name__}: {str(e)[:300]}")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        dt = time.perf_counter() - t0
        if compiled:
            budget.compile_s.append(dt)
            doc["compile_s"][key] = round(dt, 1)
        runners[key] = fn
        log(f"ready {key} ({dt:.1f} s, {x.shape[0] / call_s[key]:.0f} img/s) at {budget.elapsed():.0f} s")


def robust_time(
    runners: dict[str, Any],
    x: torch.Tensor,
    args: argparse.Namespace,
    inner: dict[str, int],
    doc: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Round-robin timing; if a runner fails there, time the others one by one without it."""
    try:
        return time_round_robin(runners, x, args.repeats, args.warmup, 0.0, inner)
    except Exception as e:
        log(f"round-robin failed ({type(e).__name__}: {str(e)[:200]}); timing runners one by one")
    out: dict[str, dict[str, Any]] = {}
    for key, fn in runners.items():
        try:
            out.update(time_round_robin({key: fn}, x, args.repeats, args.warmup, 0.0, inner))
        except Exception as e:
            doc["errors"].append({"runner": key, "error": f"timing: {type(e).__name__}: {str(e)[:500]}"})
    return out


def timing_reserve(call_s: dict[str, float], repeats: int, pending: int) -> float:
    per_call = max(call_s.values(), default=0.5)
    return repeats * (sum(call_s.values()) + pending * per_call) + 5.0


def build_models(
    arch: str,
    reductions: list[float],
    seed: int,
    dev: torch.device,
    dtype: torch.dtype,
    uniform_for: float | None = None,
) -> dict[str, torch.nn.Module]:
    """Deterministic (seeded) models of one architecture: ``0%`` (dense HF ViT), ``75%`` (pruned),
    ``75% ideal`` (its plain twin) ... and optionally ``75% uniform`` (uniformly slimmed, same size)."""
    cfg = dense_arch_config(arch)
    torch.manual_seed(seed)
    dense = ViTForImageClassification(cfg).eval()
    models: dict[str, torch.nn.Module] = {"0%": dense}
    for red in reductions:
        pruned = apply_width_plan(dense, random_plan(cfg, 1 - red, "p3b", seed)).eval()
        models[f"{red:.0%}"], models[f"{red:.0%} ideal"] = pruned, plain_like(pruned)
    if uniform_for is not None:
        models[f"{uniform_for:.0%} uniform"] = apply_width_plan(
            dense, random_plan(cfg, 1 - uniform_for, "uniform", seed)
        ).eval()
    for m in models.values():
        m.to(dev, dtype)
    return models


def extras_group(arch: str, red: float, ref: str) -> list[tuple[str, str]]:
    """(model key, variant) of the formulation extras on one pruned model."""
    key, base = f"{red:.0%}", ref.split("+")[0]
    return [
        (key, f"{base}+noround"),
        (f"{key} ideal", f"{base}+noround"),
        (key, "fast+noround"),
        (f"{key} ideal", "fast+noround"),
        (f"{key} uniform", "eager"),
        (f"{key} uniform", ref),
        (key, f"{base}+index_add"),
        (key, f"{base}+dense"),
    ]


def compile_jobs(archs: list[str], reductions: list[float], variants: list[str], extras: bool) -> list[str]:
    """Runner keys that compile, most important first (what ``--precompile-workers`` warms up)."""
    keys = ["0%"] + [k for red in reductions for k in (f"{red:.0%}", f"{red:.0%} ideal")]
    jobs = [f"{arch}/{k}/{v}" for arch in archs for v in variants if v.startswith("compiled") for k in keys]
    if extras and archs:
        jobs += [
            f"{archs[0]}/{k}/{v}"
            for k, v in extras_group(archs[0], reductions[0], variants[-1])
            if v.startswith("compiled")
        ]
    return jobs


def compile_only(args: argparse.Namespace, jobs: list[str]) -> int:
    """Worker: compile and run each job once at the benchmark's shapes, filling the on-disk inductor /
    Triton caches that the main process then hits."""
    dev, dtype = torch.device(args.device), torch.bfloat16
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, 224, 224, device=dev, dtype=dtype)
    reductions = [float(r) for r in args.reductions.split(",")]
    built: dict[str, dict[str, torch.nn.Module]] = {}
    for job in jobs:
        arch, key, variant = job.split("/")
        if arch not in built:
            built[arch] = build_models(arch, reductions, args.seed, dev, dtype, uniform_for=reductions[0])
        try:
            fn = make_runner(built[arch][key], variant)
            with torch.inference_mode():
                fn(x)
            log(f"[precompile] {job} ok")
        except Exception as e:
            log(f"[precompile] {job} failed: {type(e).__name__}: {str(e)[:200]}")
    return 0


def precompile(args: argparse.Namespace, jobs: list[str], doc: dict[str, Any]) -> None:
    """Compile ``jobs`` in ``--precompile-workers`` parallel processes (best effort, bounded time)."""
    import os
    import subprocess

    n = min(args.precompile_workers, len(jobs))
    if n <= 0:
        return
    t0 = time.perf_counter()
    threads = max(1, (os.cpu_count() or 8) // n)
    env = dict(os.environ, TORCHINDUCTOR_COMPILE_THREADS=str(threads))
    by_arch: dict[str, list[str]] = {}
    for job in jobs:
        by_arch.setdefault(job.split("/")[0], []).append(job)
    shares: list[list[str]] = []  # each worker builds the models of one architecture only
    for arch_jobs in by_arch.values():
        k = max(1, min(len(arch_jobs), round(n * len(arch_jobs) / len(jobs))))
        shares += [arch_jobs[w::k] for w in range(k)]
    procs = []
    for mine in shares:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--compile-only",
            ",".join(mine),
            "--batch-size",
            str(args.batch_size),
            "--seed",
            str(args.seed),
            "--reductions",
            args.reductions,
            "--device",
            args.device,
        ]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
    deadline = t0 + args.precompile_timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    doc["precompile"] = {
        "workers": len(shares),
        "jobs": len(jobs),
        "seconds": round(time.perf_counter() - t0, 1),
        "exit_codes": [p.returncode for p in procs],
    }
    log(f"precompile: {doc['precompile']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="deit-base,deit-small")
    p.add_argument("--reductions", default="0.75,0.9", help="whole-model parameter reductions")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-budget", type=float, default=540.0, help="seconds; later items are skipped")
    p.add_argument("--no-extras", action="store_true")
    p.add_argument(
        "--variants",
        default="eager,fast,compiled",
        help="first one is the 'as measured by the paper' one; fast/compiled use optimize_for_inference's "
        "defaults (widths zero-padded to multiples of 8 on CUDA); append +noround etc. (bench variants)",
    )
    p.add_argument("--device", default="cuda", help="cpu only for a smoke test of this script")
    p.add_argument(
        "--precompile-workers",
        type=int,
        default=8,
        help="compile the models first in this many parallel processes (on-disk caches); 0 = off",
    )
    p.add_argument("--precompile-timeout", type=float, default=240.0)
    p.add_argument("--compile-only", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.compile_only is not None:
        return compile_only(args, args.compile_only.split(","))
    if args.device == "cuda" and not torch.cuda.is_available():
        log("No CUDA device: this script measures the GPU half of P3B Table 7.")
        return 2
    budget = Budget(args.time_budget)
    dev, dtype = torch.device(args.device), torch.bfloat16
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    reductions = [float(r) for r in args.reductions.split(",")]
    doc: dict[str, Any] = {
        "schema": "p3b_hf.gpu_bench/1",
        "env": environment(dev),
        "settings": {
            "dtype": "bf16",
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "image_size": 224,
            "plan": f"random P3B-like (residual in/out subsets), seed {args.seed}",
            "statistic": "median images/s, round-robin per architecture",
        },
        "paper_table7_rtx3090": PAPER_TABLE7_GPU,
        "rows": [],
        "extras": {},
        "skipped": [],
        "errors": [],
        "compile_s": {},
    }
    precompile(args, compile_jobs(archs, reductions, variants, not args.no_extras), doc)
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, 224, 224, device=dev, dtype=dtype)
    kept_for_extras: dict[str, Any] = {}
    for arch in archs:
        extras_here = not args.no_extras and arch == archs[0]
        models = build_models(
            arch, reductions, args.seed, dev, dtype, uniform_for=reductions[0] if extras_here else None
        )
        runners: dict[str, Any] = {}
        call_s: dict[str, float] = {}
        inner: dict[str, int] = {}
        main_models = {k: m for k, m in models.items() if not k.endswith("uniform")}
        for j, v in enumerate(variants):
            group = {f"{arch}/{k}/{v}": (m, v) for k, m in main_models.items()}
            add_runners(
                group,
                runners,
                x,
                args,
                budget,
                timing_reserve(call_s, args.repeats, (len(variants) - j) * len(main_models)),
                doc,
                call_s,
                inner,
            )
        log(f"timing {len(runners)} runners of {arch} at {budget.elapsed():.0f} s")
        timed = robust_time(runners, x, args, inner, doc)
        ips = {k: v["images_per_s"] for k, v in timed.items()}
        for k, m in main_models.items():
            if k.endswith("ideal"):
                continue
            row: dict[str, Any] = {
                "arch": arch,
                "pruned": k,
                "params_M": round(count_cost(m)["params"] / 1e6, 2),
                "gmacs": round(count_cost(m)["macs"] / 1e9, 2),
            }
            for v in variants:
                mine, base = ips.get(f"{arch}/{k}/{v}"), ips.get(f"{arch}/0%/{v}")
                ideal = ips.get(f"{arch}/{k} ideal/{v}")
                row[f"{v}_images_per_s"] = mine
                row[f"{v}_speedup_vs_dense"] = mine / base if mine and base else None
                if k != "0%":
                    row[f"{v}_ideal_images_per_s"] = ideal
                    row[f"{v}_pruned_vs_ideal"] = mine / ideal if mine and ideal else None
            dense_first = ips.get(f"{arch}/0%/{variants[0]}")
            for v in variants[1:]:
                mine = ips.get(f"{arch}/{k}/{v}")
                row[f"{v}_speedup_vs_dense_{variants[0]}"] = (
                    mine / dense_first if mine and dense_first else None
                )
            doc["rows"].append(row)
            log(json.dumps(row))
        if extras_here:
            kept_for_extras = {
                "arch": arch,
                "models": models,
                "runners": runners,
                "inner": inner,
                "call_s": call_s,
            }
        else:
            del runners, models
        doc["elapsed_s"] = round(budget.elapsed(), 1)
    if kept_for_extras:
        run_extras(kept_for_extras, reductions[0], variants[-1], x, args, budget, doc)
    doc["elapsed_s"] = round(budget.elapsed(), 1)
    print(json.dumps(doc, indent=1))
    return 0


def run_extras(
    kept: dict[str, Any],
    red: float,
    ref: str,
    x: torch.Tensor,
    args: argparse.Namespace,
    budget: Budget,
    doc: dict[str, Any],
) -> None:
    """Formulation choices on one pruned model, timed against its ``ref`` (compiled) ideal and pruned runners."""
    arch, models = kept["arch"], kept["models"]
    key = f"{red:.0%}"
    runners = {
        k: v
        for k, v in kept["runners"].items()
        if k.endswith(f"/{key}/{ref}") or k.endswith(f"/{key} ideal/{ref}")
    }
    if not runners:
        return
    call_s = {k: kept["call_s"][k] for k in runners}
    inner = {k: kept["inner"][k] for k in runners}
    group = {f"{arch}/{k}/{v}": (models[k], v) for k, v in extras_group(arch, red, ref)}
    group = {k: v for k, v in group.items() if k not in runners}
    add_runners(group, runners, x, args, budget, timing_reserve(call_s, args.repeats, 2), doc, call_s, inner)
    if len(runners) <= 2 or not budget.fits(timing_reserve(call_s, args.repeats, 0)):
        return
    timed = robust_time(runners, x, args, inner, doc)
    ideal_ref = timed.get(f"{arch}/{key} ideal/{ref}", {}).get("images_per_s")
    doc["extras"] = {
        "model": f"{arch} {key} ('uniform': same size, uniformly slimmed, no residual subsets)",
        "images_per_s": {k.split("/", 1)[1]: round(v["images_per_s"], 1) for k, v in timed.items()},
        f"vs_ideal_{ref}": {
            k.split("/", 1)[1]: round(v["images_per_s"] / ideal_ref, 3) for k, v in timed.items()
        }
        if ideal_ref
        else {},
        "uniform_params_M": round(count_cost(models[f"{key} uniform"])["params"] / 1e6, 2),
    }
    log(json.dumps(doc["extras"]))


if __name__ == "__main__":
    sys.exit(main())
