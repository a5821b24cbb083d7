#!/usr/bin/env python
"""Eager images/s of a random P3B-like pruned model vs its ``pad_widths(model, 8)`` copy (CPU, 1 thread,
fp32, batch 1, round-robin medians), plus the max |logit difference|. Writes the JSON to OUT (default
runs/padbench.json).

    python -m scripts.pad_widths_bench [OUT]
"""

import json
import sys
from pathlib import Path

import torch

from p3b_hf.bench import make_runner, random_models, time_round_robin, warm_up
from p3b_hf.cost import count_cost
from p3b_hf.padding import pad_widths

torch.set_num_threads(1)

out_path = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/padbench.json")
out = {}
for arch, keep in (("deit-small", 0.25), ("deit-small", 0.10), ("deit-base", 0.10)):
    _, pruned = random_models(arch, keep, "p3b", 0)
    padded = pad_widths(pruned, 8).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        d = (pruned(pixel_values=x).logits - padded(pixel_values=x).logits).abs().max().item()
    runners = {"pruned": make_runner(pruned, "eager"), "padded": make_runner(padded, "eager")}
    with torch.inference_mode():
        inner = warm_up(runners, x, 3, 0.2, {})
        res = time_round_robin(runners, x, 15, 0, 0.2, inner)
    r = {k: round(v["images_per_s"], 2) for k, v in res.items()}
    r["padded_over_pruned"] = round(r["padded"] / r["pruned"], 3)
    r["params_M"] = (
        round(count_cost(pruned)["params"] / 1e6, 3),
        round(count_cost(padded)["params"] / 1e6, 3),
    )
    r["max_abs_logit_diff"] = d
    out[f"{arch} keep {keep}"] = r
    print(arch, keep, r, flush=True)
out_path.parent.mkdir(parents=True, exist_ok=True)
out_path.write_text(
    json.dumps(
        {"hardware": "2 vCPU AMD EPYC, 1 thread, fp32, batch 1, eager HF module", "results": out}, indent=1
    )
)
