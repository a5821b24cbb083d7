#!/usr/bin/env python
"""P3B Table 7 (GPU half), reproduced in shape on one GPU with random-weight models; prints ONE JSON
document on stdout (progress goes to stderr).

    python scripts/gpu_bench.py > gpu_bench.json        # from the repository root, < 6 min on one H100

For DeiT-B and DeiT-S shapes (12 layers, 224 px, 1000 classes) it builds the dense model and random
P3B-like pruned models at 75 % and 90 % whole-model parameter reduction (residual in/out subsets,
per-layer head dims and MLP widths: :func:`p3b_hf.bench.random_plan`), plus each pruned model's ideal
plain ViT (same Linear shapes, no gathers/scatters). It times bf16, batch 1024, images/s (median of
the repeats, round-robin over all models of one architecture, CUDA-synchronised) for

- ``eager``: the HF / p3b_hf module as is (what the paper measured, on an RTX 3090),
- ``compiled``: :func:`p3b_hf.optimize.optimize_for_inference` (patch embedding as a matmul, fused
  q/k/v, folded norms, gather-formulated scatter, cls-only last layer) under ``torch.compile``,

and reports speed-ups over dense and the pruned / ideal ratio (target >= 0.95). Then, time
permitting, extras on DeiT-B 75 %: the optimised path without compile, exact zero padding to
multiples of 8 (``+round8``), other scatter formulations (``+index_add``, ``+dense``), and a uniformly
slimmed plan of the same size. A wall-clock budget (``--time-budget``, default 320 s) skips what
would not fit; skipped items are listed in the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import ViTForImageClassification  # noqa: E402

from p3b_hf.bench import (  # noqa: E402
    count_cost,
    dense_arch_config,
    environment,
    make_runner,
    random_plan,
    time_round_robin,
    warm_up,
)
from p3b_hf.models.plain_vit import plain_like  # noqa: E402
from p3b_hf.plan import apply_width_plan  # noqa: E402

# P3B appendix Table 7, RTX 3090, batch 1024 (GPU) -- FPS and speed-up over dense
PAPER_TABLE7_GPU = {
    "deit-base": {"0%": {"fps": 536, "speedup": 1.0}, "75%": {"fps": 1156, "speedup": 2.16},
                  "90%": {"fps": 1674, "speedup": 3.12}},
    "deit-small": {"0%": {"fps": 1676, "speedup": 1.0}, "75%": {"fps": 2473, "speedup": 1.48},
                   "90%": {"fps": 3157, "speedup": 1.88}},
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


def add_runners(group: dict[str, tuple[torch.nn.Module, str]], runners: dict[str, Any], x: torch.Tensor,
                args: argparse.Namespace, budget: Budget, reserve_s: float, doc: dict[str, Any],
                call_s: dict[str, float], inner: dict[str, int]) -> None:
    """Build and warm up (compile) each runner of ``group`` that fits the budget."""
    for key, (model, variant) in group.items():
        compiled = variant.startswith("compiled")
        need = (budget.compile_estimate() if compiled else 5.0) + reserve_s
        if not budget.fits(need):
            doc["skipped"].append({"runner": key, "reason": f"time budget ({budget.elapsed():.0f} s used, "
                                                           f"~{need:.0f} s needed)"})
            log(f"skip {key}")
            continue
        t0 = time.perf_counter()
        fn = make_runner(model, variant)
        inner.update(warm_up({key: fn}, x, args.warmup, 0.0, call_s))
        dt = time.perf_counter() - t0
        if compiled:
            budget.compile_s.append(dt)
            doc["compile_s"][key] = round(dt, 1)
        runners[key] = fn
        log(f"ready {key} ({dt:.1f} s, {x.shape[0] / call_s[key]:.0f} img/s) at {budget.elapsed():.0f} s")


def timing_reserve(call_s: dict[str, float], repeats: int, pending: int) -> float:
    per_call = max(call_s.values(), default=0.5)
    return repeats * (sum(call_s.values()) + pending * per_call) + 5.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="deit-base,deit-small")
    p.add_argument("--reductions", default="0.75,0.9", help="whole-model parameter reductions")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-budget", type=float, default=320.0, help="seconds; later items are skipped")
    p.add_argument("--no-extras", action="store_true")
    p.add_argument("--variants", default="eager,compiled", help="first one is the 'as measured by the paper' one")
    p.add_argument("--device", default="cuda", help="cpu only for a smoke test of this script")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        log("No CUDA device: this script measures the GPU half of P3B Table 7.")
        return 2
    budget = Budget(args.time_budget)
    dev, dtype = torch.device(args.device), torch.bfloat16
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    reductions = [float(r) for r in args.reductions.split(",")]
    doc: dict[str, Any] = {
        "schema": "p3b_hf.gpu_bench/1", "env": environment(dev),
        "settings": {"dtype": "bf16", "batch_size": args.batch_size, "repeats": args.repeats, "warmup": args.warmup,
                     "image_size": 224, "plan": "random P3B-like (residual in/out subsets), seed "
                     f"{args.seed}", "statistic": "median images/s, round-robin per architecture"},
        "paper_table7_rtx3090": PAPER_TABLE7_GPU, "rows": [], "extras": {}, "skipped": [], "compile_s": {},
    }
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, 224, 224, device=dev, dtype=dtype)
    kept_for_extras: dict[str, Any] = {}
    for arch in archs:
        cfg = dense_arch_config(arch)
        torch.manual_seed(args.seed)
        dense = ViTForImageClassification(cfg).eval()
        models: dict[str, torch.nn.Module] = {"0%": dense}
        for red in reductions:
            plan = random_plan(cfg, 1 - red, "p3b", args.seed)
            pruned = apply_width_plan(dense, plan).eval()
            models[f"{red:.0%}"], models[f"{red:.0%} ideal"] = pruned, plain_like(pruned)
        for m in models.values():
            m.to(dev, dtype)
        runners: dict[str, Any] = {}
        call_s: dict[str, float] = {}
        inner: dict[str, int] = {}
        for j, v in enumerate(variants):
            group = {f"{arch}/{k}/{v}": (m, v) for k, m in models.items()}
            add_runners(group, runners, x, args, budget,
                        timing_reserve(call_s, args.repeats, (len(variants) - j) * len(models)), doc, call_s, inner)
        log(f"timing {len(runners)} runners of {arch} at {budget.elapsed():.0f} s")
        timed = time_round_robin(runners, x, args.repeats, args.warmup, 0.0, inner)
        ips = {k: v["images_per_s"] for k, v in timed.items()}
        for k, m in models.items():
            if k.endswith("ideal"):
                continue
            row: dict[str, Any] = {"arch": arch, "pruned": k, "params_M": round(count_cost(m)["params"] / 1e6, 2),
                                   "gmacs": round(count_cost(m)["macs"] / 1e9, 2)}
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
                row[f"{v}_speedup_vs_dense_{variants[0]}"] = mine / dense_first if mine and dense_first else None
            doc["rows"].append(row)
            log(json.dumps(row))
        if arch == archs[0]:
            kept_for_extras = {"arch": arch, "cfg": cfg, "dense": dense, "models": models, "runners": runners,
                               "inner": inner, "call_s": call_s}
        else:
            del runners
        doc["elapsed_s"] = round(budget.elapsed(), 1)
    if not args.no_extras and kept_for_extras:
        run_extras(kept_for_extras, reductions[0], variants[-1], x, args, budget, doc)
    doc["elapsed_s"] = round(budget.elapsed(), 1)
    print(json.dumps(doc, indent=1))
    return 0


def run_extras(kept: dict[str, Any], red: float, ref: str, x: torch.Tensor, args: argparse.Namespace,
               budget: Budget, doc: dict[str, Any]) -> None:
    """Formulation choices on one pruned model, timed against its compiled ideal and pruned runners."""
    arch, models = kept["arch"], kept["models"]
    key = f"{red:.0%}"
    pruned, ideal = models[key], models[f"{key} ideal"]
    runners = {k: v for k, v in kept["runners"].items() if k.endswith(f"/{key}/{ref}")
               or k.endswith(f"/{key} ideal/{ref}")}
    if not runners:
        return
    call_s = {k: kept["call_s"][k] for k in runners}
    inner = {k: kept["inner"][k] for k in runners}
    torch.manual_seed(args.seed)
    uniform = apply_width_plan(kept["dense"], random_plan(kept["cfg"], 1 - red, "uniform", args.seed)).eval()
    uniform.to(x.device, x.dtype)
    base = ref.split("+")[0]
    group = {f"{arch}/{key}/fast": (pruned, "fast"), f"{arch}/{key} ideal/fast": (ideal, "fast"),
             f"{arch}/{key}/{base}+round8": (pruned, f"{base}+round8"),
             f"{arch}/{key} ideal/{base}+round8": (ideal, f"{base}+round8"),
             f"{arch}/{key}/{base}+index_add": (pruned, f"{base}+index_add"),
             f"{arch}/{key} uniform/eager": (uniform, "eager"), f"{arch}/{key} uniform/{ref}": (uniform, ref),
             f"{arch}/{key}/{base}+dense": (pruned, f"{base}+dense")}
    group = {k: v for k, v in group.items() if k not in runners}
    add_runners(group, runners, x, args, budget, timing_reserve(call_s, args.repeats, 2), doc, call_s, inner)
    if len(runners) <= 2 or not budget.fits(timing_reserve(call_s, args.repeats, 0)):
        return
    timed = time_round_robin(runners, x, args.repeats, args.warmup, 0.0, inner)
    ideal_c = timed.get(f"{arch}/{key} ideal/{ref}", {}).get("images_per_s")
    doc["extras"] = {
        "model": f"{arch} {key} (uniform: same size, uniformly slimmed, no subsets)",
        "images_per_s": {k.split("/", 1)[1]: round(v["images_per_s"], 1) for k, v in timed.items()},
        f"vs_ideal_{ref}": {k.split("/", 1)[1]: round(v["images_per_s"] / ideal_c, 3)
                              for k, v in timed.items()} if ideal_c else {},
        "uniform_params_M": round(count_cost(uniform)["params"] / 1e6, 2),
    }
    log(json.dumps(doc["extras"]))


if __name__ == "__main__":
    sys.exit(main())
