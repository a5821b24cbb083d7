#!/usr/bin/env python
"""Wall time per optimizer step: dense fine-tune vs P3B (reference BPI/gates) vs P3B fast, equal batch,
plus a short P3B schedule with reference vs fast BPI on the same data and seed (max |Δ keep ratio|).

Every step is a real ``Trainer`` step (``FineTuneTrainer`` for dense, ``P3BTrainer`` for P3B: forward,
task + BPI losses, ΔΨ / Taylor bookkeeping, backward, AdamW), timed between ``on_step_end`` callbacks
(after a device synchronise) and summarised as the median over the timed steps. The batch is one
fixed tensor already on the device (no data loading in the timing). Mask updates are kept out of the
timed window (they are CPU work every ``update_every`` steps, amortised in real runs).

Presets (random-init HF ViT, no downloads, no ``datasets``):

* ``devbench``: hidden 192, 12 layers, 3 heads, 8x8 patch grid (32 px / patch 4), 200 classes (the
  dev-bench model's shape); default on CPU, fp32, batch 64.
* ``deit-s`` / ``deit-t``: DeiT-S / DeiT-T shapes at 224 px (14x14 grid), 100 classes; default on GPU,
  bf16 autocast, batches 64 and 256.

The keep-ratio comparison trains the ``devbench`` shape for ``--compare-steps`` steps on learnable
synthetic data (class prototypes + noise) with P3B at ``--compare-ratio``, once with the reference BPI
path (``bpi_mode=reference, bpi_subbatch=1, bpi_every=1, gate_mode=hooks``) and once with the fast
defaults, both otherwise in the clean mode and from the same seed, and reports the final per-block keep
ratios and their max absolute difference.

Prints one JSON document (also written to ``--out``). Examples::

    python scripts/p3b_step_cost.py                       # CPU: devbench shape, fp32, batch 64
    python scripts/p3b_step_cost.py --device cuda         # GPU: DeiT-S/T, bf16, batch 64 + 256 (< 4 min, H100)
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import TrainerCallback, TrainingArguments, ViTConfig, ViTForImageClassification  # noqa: E402

from p3b_hf.trainer import P3BConfig, P3BTrainer  # noqa: E402
from p3b_hf.training import FineTuneTrainer  # noqa: E402

PRESETS: dict[str, dict[str, int]] = {
    "devbench": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                     image_size=32, patch_size=4, num_labels=200),
    "small": dict(hidden_size=96, num_hidden_layers=6, num_attention_heads=3, intermediate_size=384,
                  image_size=32, patch_size=4, num_labels=200),
    "deit-t": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                   image_size=224, patch_size=16, num_labels=100),
    "deit-s": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                   image_size=224, patch_size=16, num_labels=100),
}
#: the reference BPI / gate path inside an otherwise clean config
REFERENCE_PATH = dict(bpi_mode="reference", bpi_subbatch=1.0, bpi_every=1, gate_mode="hooks")


def variants(breakdown: bool) -> dict[str, P3BConfig | None]:
    """Name -> P3B config (None = dense). Timing runs never reach a mask update or finalisation."""
    far = dict(prune_start_step=0, prune_sparse_step=10_000, prune_finalize_step=20_000, update_every=10_000,
               evaluate_pruned=False, save_dir=None)
    out: dict[str, P3BConfig | None] = {
        "dense": None,
        "p3b_reference": P3BConfig(prune_ratio=0.5, reference=True, **far),
        "p3b_fast": P3BConfig(prune_ratio=0.5, **far),
    }
    if breakdown:
        out["p3b_ref_path_clean"] = P3BConfig(prune_ratio=0.5, **REFERENCE_PATH, **far)
        out["p3b_grouped_full_batch"] = P3BConfig(prune_ratio=0.5, bpi_subbatch=1.0, bpi_every=1, **far)
        out["gates_hooks_only"] = P3BConfig(prune_ratio=0.5, handcrafted_keep=[0.5] * 24, gate_mode="hooks", **far)
        out["gates_fused_only"] = P3BConfig(prune_ratio=0.5, handcrafted_keep=[0.5] * 24, gate_mode="fused", **far)
    return out


class _Fixed(torch.utils.data.Dataset):
    """``n`` dummy items; the collator returns one fixed on-device batch (no loading in the timing)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class _StepTimer(TrainerCallback):
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_begin(self, *a: Any, **k: Any) -> None:
        self._sync()
        self.times.append(time.perf_counter())

    def on_step_end(self, *a: Any, **k: Any) -> None:
        self._sync()
        self.times.append(time.perf_counter())


def _args(out: str, batch: int, steps: int, device: torch.device, bf16: bool, seed: int = 0,
          lr: float = 5e-4) -> TrainingArguments:
    return TrainingArguments(
        output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr, weight_decay=0.05,
        lr_scheduler_type="constant", max_grad_norm=0.0, report_to="none", save_strategy="no", eval_strategy="no",
        logging_steps=100_000, disable_tqdm=True, seed=seed, data_seed=seed, remove_unused_columns=False,
        dataloader_num_workers=0, dataloader_pin_memory=False, use_cpu=device.type == "cpu", bf16=bf16,
        label_names=["labels"])


def _model(preset: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ViTForImageClassification(ViTConfig(**PRESETS[preset]))


def time_variant(preset: str, cfg: P3BConfig | None, batch: int, device: torch.device, bf16: bool,
                 warmup: int, steps: int) -> dict[str, Any]:
    """Mean wall seconds per optimizer step of one variant (first ``warmup`` steps dropped)."""
    shape = PRESETS[preset]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, shape["image_size"], shape["image_size"], generator=g).to(device)
    y = torch.randint(0, shape["num_labels"], (batch,), generator=g).to(device)
    timer = _StepTimer(device)
    model = _model(preset)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        kw = dict(model=model, args=_args(tmp, batch, warmup + steps, device, bf16),
                  train_dataset=_Fixed(batch * (warmup + steps)),
                  data_collator=lambda _items: {"pixel_values": x, "labels": y}, callbacks=[timer])
        trainer = FineTuneTrainer(**kw) if cfg is None else P3BTrainer(p3b=cfg, **kw)
        trainer.train()
    dts = [b - a for a, b in zip(timer.times, timer.times[1:])][warmup:]
    # mean, not median: with bpi_every=k the cost alternates, so the timed steps are a multiple of k
    out = {"step_s": statistics.fmean(dts), "step_s_median": statistics.median(dts), "step_s_min": min(dts),
           "timed_steps": len(dts)}
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del trainer, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


# ---------------------------------------------------------------------------------- keep-ratio comparison
class _Prototypes(torch.utils.data.Dataset):
    """Learnable synthetic classification: a smooth random prototype per class plus pixel noise."""

    def __init__(self, n: int, size: int, classes: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        protos = torch.nn.functional.interpolate(torch.randn(classes, 3, 4, 4, generator=g), size=size,
                                                 mode="bilinear", align_corners=False)
        self.y = torch.randint(0, classes, (n,), generator=g)
        self.x = protos[self.y] + 1.5 * torch.randn(n, 3, size, size, generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def compare_keep(preset: str, steps: int, batch: int, ratio: float, device: torch.device, bf16: bool,
                 classes: int = 20) -> dict[str, Any]:
    """Final per-block keep ratios of a short P3B run, reference BPI path vs fast defaults."""
    shape = dict(PRESETS[preset], num_labels=classes)
    ds = _Prototypes(batch * 16, shape["image_size"], classes)
    phases = dict(prune_start_step=steps // 10, prune_sparse_step=steps // 2, prune_finalize_step=steps,
                  update_every=max(8, steps // 10), evaluate_pruned=False, save_dir=None)
    runs: dict[str, Any] = {}
    for name, extra in (("reference_path", REFERENCE_PATH), ("fast", {})):
        torch.manual_seed(0)
        model = ViTForImageClassification(ViTConfig(**shape))
        cfg = P3BConfig(prune_ratio=ratio, **phases, **extra)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            trainer = P3BTrainer(model=model, args=_args(tmp, batch, steps, device, bf16, lr=1e-3),
                                 train_dataset=ds, p3b=cfg)
            trainer.train()
        hist = trainer.pruning.history["updates"]
        n_params = sum(p.numel() for p in trainer.pruned_model.parameters())
        runs[name] = {"config": {k: getattr(trainer.p3b, k) for k in REFERENCE_PATH},
                      "keep_target": hist[-1]["keep_target"], "keep_achieved": hist[-1]["keep_achieved"],
                      "model_keep": hist[-1]["model_keep"], "pruned_params": n_params,
                      "wall_s": time.perf_counter() - t0}
    ref, fast = runs["reference_path"], runs["fast"]
    diff = [abs(a - b) for a, b in zip(ref["keep_achieved"], fast["keep_achieved"])]
    return {"model": preset, "classes": classes, "steps": steps, "batch": batch, "prune_ratio": ratio,
            "schedule": phases, "runs": runs, "abs_diff_keep_per_block": diff, "max_abs_diff_keep": max(diff),
            "mean_abs_diff_keep": sum(diff) / len(diff)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--presets", nargs="+", default=None, choices=sorted(PRESETS),
                   help="model shapes (default: devbench on CPU, deit-s deit-t on GPU)")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="default: 64 on CPU, 64 256 on GPU")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default: fp32 on CPU, bf16 on GPU")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per variant (default 2)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per variant, a multiple of bpi_every (default 4 CPU, 8 GPU)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the reference BPI path in clean mode, grouped heads on the full batch, "
                        "and the gates alone (hooks vs fused, no BPI)")
    p.add_argument("--compare-steps", type=int, default=None,
                   help="length of the keep-ratio comparison runs (default 60 CPU, 120 GPU; 0 = skip)")
    p.add_argument("--no-timing", action="store_true", help="only run the keep-ratio comparison")
    p.add_argument("--compare-batch", type=int, default=64)
    p.add_argument("--compare-preset", default=None, choices=sorted(PRESETS),
                   help="model shape of the comparison (default: devbench on GPU, small on CPU)")
    p.add_argument("--rounds", type=int, default=None,
                   help="repeat the variants in interleaved rounds (shared/noisy CPUs; default 3 CPU, 1 GPU); "
                        "x_dense is the median of the per-round ratios")
    p.add_argument("--compare-ratio", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default=None, help="also write the JSON here")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    gpu = device.type == "cuda"
    if a.threads:
        torch.set_num_threads(a.threads)
    presets = a.presets or (["deit-s", "deit-t"] if gpu else ["devbench"])
    batches = a.batches or ([64, 256] if gpu else [64])
    bf16 = (a.dtype or ("bf16" if gpu else "fp32")) == "bf16"
    warmup = a.warmup if a.warmup is not None else (3 if gpu else 2)
    steps = a.steps if a.steps is not None else (10 if gpu else 4)
    rounds = a.rounds or (1 if gpu else 3)
    compare_steps = a.compare_steps if a.compare_steps is not None else (200 if gpu else 60)
    fast_defaults = P3BConfig().resolved()
    t_start = time.perf_counter()
    doc: dict[str, Any] = {
        "hardware": torch.cuda.get_device_name(device) if gpu else f"{platform.processor() or platform.machine()} "
                                                                  f"({torch.get_num_threads()} torch threads)",
        "torch": torch.__version__, "dtype": "bf16 autocast" if bf16 else "fp32", "warmup": warmup, "steps": steps, "rounds": rounds,
        "fast_defaults": {k: getattr(fast_defaults, k) for k in REFERENCE_PATH}, "timing": [],
    }
    for preset in ([] if a.no_timing else presets):
        for batch in batches:
            row: dict[str, Any] = {"preset": preset, "batch": batch, **{k: PRESETS[preset][k] for k in
                                                                      ("hidden_size", "image_size", "patch_size")}}
            per_round: list[dict[str, Any]] = []
            for _ in range(rounds):  # interleaved: contention on a shared CPU hits every variant alike
                res: dict[str, Any] = {}
                for name, cfg in variants(a.breakdown).items():
                    try:
                        res[name] = time_variant(preset, cfg, batch, device, bf16, warmup, steps)
                    except torch.OutOfMemoryError as e:  # report, do not lose the other rows
                        res[name] = {"error": f"out of memory: {str(e)[:200]}"}
                        torch.cuda.empty_cache()
                per_round.append(res)
            for name in per_round[0]:
                ok = [r[name] for r in per_round if "step_s" in r[name]]
                row[name] = ({"step_s": statistics.fmean(r["step_s"] for r in ok),
                              "rounds": [round(r["step_s"], 4) for r in ok],
                              **({"peak_mem_gib": max(r["peak_mem_gib"] for r in ok)} if gpu else {})}
                             if ok else per_round[0][name])
            row["x_dense"] = {}
            for name in per_round[0]:
                ratios = [r[name]["step_s"] / r["dense"]["step_s"] for r in per_round
                          if "step_s" in r[name] and "step_s" in r["dense"]]
                if ratios:
                    row["x_dense"][name] = round(statistics.median(ratios), 3)
            doc["timing"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    if compare_steps > 0:
        doc["keep_ratio_comparison"] = compare_keep(a.compare_preset or ("devbench" if gpu else "small"),
                                                    compare_steps, a.compare_batch, a.compare_ratio, device, bf16)
    doc["total_wall_s"] = time.perf_counter() - t_start
    text = json.dumps(doc, indent=1, default=lambda o: round(o, 5) if isinstance(o, float) else str(o))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

