#!/usr/bin/env python
"""Wall time per optimizer step: dense fine-tune vs P3B (reference BPI/gates) vs P3B fast, equal batch,
plus a short P3B schedule with reference vs fast BPI on the same data and seed (max |Δ keep ratio|).

Every step is the Trainer's own ``training_step`` (``FineTuneTrainer`` for dense, ``P3BTrainer`` for P3B:
forward, task + BPI losses, ΔΨ bookkeeping, backward) + the Taylor read + AdamW ``step`` + ``zero_grad``,
i.e. a Trainer step without the loop's logging/callbacks. The variants are built side by side and timed
**interleaved step by step** (step i runs them in an order rotated by i), each step between device
synchronisations, so load changes on a shared machine hit every variant alike; the figure is the mean
over the timed steps (a multiple of ``bpi_every``: with every-k the cost alternates). The batch is one
fixed tensor already on the device (no data loading). Mask updates stay out of the timing (CPU work every
``update_every`` steps, amortised in real runs). bf16 = ``torch.autocast(bfloat16)`` around the step.

Presets (random-init HF ViT, no downloads, no ``datasets``):

* ``devbench``: hidden 192, 12 layers, 3 heads, 8x8 patch grid (32 px / patch 4), 200 classes (the
  dev-bench model's shape); default on CPU, fp32, batch 64.
* ``deit-s`` / ``deit-t``: DeiT-S / DeiT-T shapes at 224 px (14x14 grid), 100 classes; default on GPU,
  bf16 autocast, batches 64 and 256.

The keep-ratio comparison trains a small ViT (``devbench`` shape on GPU, ``small`` on CPU) for
``--compare-steps`` steps on learnable synthetic data (class prototypes + noise) with P3B at
``--compare-ratio``, once with the reference BPI path (``bpi_mode=reference, bpi_subbatch=1,
bpi_every=1, gate_mode=hooks``) and once with the fast defaults (plus any ``--compare-fast`` configs),
otherwise in the clean mode from the same seed and data order, and reports the final per-block keep
ratios and their max absolute difference -- next to the same difference between two reference runs
that differ only in data order (the noise floor of such a short run). The reference run also carries
every sub-sampled setting as a *shadow* BPI estimator (``P3BConfig.bpi_shadows``), so each fast setting
is also compared with the reference on the same run (``same_run_*``: target keep ratios at the last
update), free of the divergence between separate runs.

Prints one JSON document (also written to ``--out``). Examples::

    python -m scripts.p3b_step_cost                       # CPU: devbench shape, fp32, batch 64
    python -m scripts.p3b_step_cost --device cuda         # GPU: DeiT-S/T, bf16, batch 64 + 256 (< 4 min, H100)
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
from transformers import TrainingArguments, ViTConfig, ViTForImageClassification

from p3b_hf.methods.p3b.estimator import shadow_summary
from p3b_hf.methods.p3b.local import MASK_FLOOR
from p3b_hf.methods.p3b.schedule import Schedule
from p3b_hf.trainer import P3BConfig, P3BTrainer
from p3b_hf.training import FineTuneTrainer

PRESETS: dict[str, dict[str, int]] = {
    "devbench": dict(
        hidden_size=192,
        num_hidden_layers=12,
        num_attention_heads=3,
        intermediate_size=768,
        image_size=32,
        patch_size=4,
        num_labels=200,
    ),
    "small": dict(
        hidden_size=96,
        num_hidden_layers=6,
        num_attention_heads=3,
        intermediate_size=384,
        image_size=32,
        patch_size=4,
        num_labels=200,
    ),
    "deit-t": dict(
        hidden_size=192,
        num_hidden_layers=12,
        num_attention_heads=3,
        intermediate_size=768,
        image_size=224,
        patch_size=16,
        num_labels=100,
    ),
    "deit-s": dict(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        image_size=224,
        patch_size=16,
        num_labels=100,
    ),
}
#: the reference BPI / gate path inside an otherwise clean config
REFERENCE_PATH = dict(bpi_mode="reference", bpi_subbatch=1.0, bpi_every=1, gate_mode="hooks")


def variants(
    breakdown: bool, blocks: int = 24, fast_specs: list[str] | None = None
) -> dict[str, P3BConfig | None]:
    """Name -> P3B config (None = dense); ``fast_specs`` (``SUB:EVERY``) add grouped+fused variants.
    Timing runs never reach a mask update or finalisation."""
    far = dict(
        prune_start_step=0,
        prune_sparse_step=10_000,
        prune_finalize_step=20_000,
        update_every=10_000,
        evaluate_pruned=False,
        save_dir=None,
    )
    out: dict[str, P3BConfig | None] = {
        "dense": None,
        "p3b_reference": P3BConfig(prune_ratio=0.5, reference=True, **far),
        "p3b_fast": P3BConfig(prune_ratio=0.5, **far),
    }
    for spec in fast_specs or []:
        out[f"p3b_fast_{spec}"] = P3BConfig(prune_ratio=0.5, **_parse_fast(spec), **far)
    if breakdown:
        out["p3b_ref_path_clean"] = P3BConfig(prune_ratio=0.5, **REFERENCE_PATH, **far)
        out["p3b_grouped_full_batch"] = P3BConfig(prune_ratio=0.5, bpi_subbatch=1.0, bpi_every=1, **far)
        out["gates_hooks_only"] = P3BConfig(
            prune_ratio=0.5, handcrafted_keep=[0.5] * blocks, gate_mode="hooks", **far
        )
        out["gates_fused_only"] = P3BConfig(
            prune_ratio=0.5, handcrafted_keep=[0.5] * blocks, gate_mode="fused", **far
        )
    return out


def _args(
    out: str, batch: int, steps: int, device: torch.device, bf16: bool, seed: int = 0, lr: float = 5e-4
) -> TrainingArguments:
    return TrainingArguments(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=lr,
        weight_decay=0.05,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=100_000,
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        use_cpu=device.type == "cpu",
        bf16=bf16,
        label_names=["labels"],
    )


def _model(preset: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ViTForImageClassification(ViTConfig(**PRESETS[preset]))


class StepRunner:
    """One variant, ready to take optimizer steps: the Trainer's own ``training_step`` (compute_loss with
    the BPI losses and ΔΨ bookkeeping, backward), the Taylor read, ``optimizer.step``, ``zero_grad`` --
    i.e. a Trainer step without the loop's logging / callbacks, so that variants can be interleaved step by
    step (contention on a shared CPU then hits all of them alike)."""

    def __init__(
        self, preset: str, cfg: P3BConfig | None, batch: int, device: torch.device, bf16: bool, tmp: str
    ) -> None:
        shape = PRESETS[preset]
        g = torch.Generator().manual_seed(1)
        self.inputs = {
            "pixel_values": torch.randn(batch, 3, shape["image_size"], shape["image_size"], generator=g).to(
                device
            ),
            "labels": torch.randint(0, shape["num_labels"], (batch,), generator=g).to(device),
        }
        self.device, self.bf16 = device, bf16
        model = _model(preset).to(device)
        kw = dict(model=model, args=_args(tmp, batch, 1, device, bf16))
        self.trainer = FineTuneTrainer(**kw) if cfg is None else P3BTrainer(p3b=cfg, **kw)
        self.trainer.create_optimizer()
        self.trainer.current_gradient_accumulation_steps = 1
        if cfg is not None:  # scoring window open for good, no update / finalisation in the timing
            pr = self.trainer.pruner
            pr.schedule = Schedule(0, 10_000, 20_000, 10_000)
            pr.sync_device()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self) -> tuple[float, float | None]:
        """Wall seconds of one optimizer step (synchronised), and its transient peak memory (GiB, GPU)."""
        tr = self.trainer
        self._sync()
        base = None
        if self.device.type == "cuda":
            base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            tr.training_step(tr.model, dict(self.inputs))
        if isinstance(tr, P3BTrainer):
            tr._p3b_taylor()
        tr.optimizer.step()
        tr.optimizer.zero_grad(set_to_none=True)
        tr.state.global_step += 1
        self._sync()
        dt = time.perf_counter() - t0
        peak = None if base is None else (torch.cuda.max_memory_allocated(self.device) - base) / 2**30
        return dt, peak


def time_variants(
    preset: str,
    cfgs: dict[str, P3BConfig | None],
    batch: int,
    device: torch.device,
    bf16: bool,
    warmup: int,
    steps: int,
) -> dict[str, Any]:
    """Mean wall seconds per optimizer step of every variant, measured interleaved (step i runs the variants
    in an order rotated by i). ``steps`` should be a multiple of ``bpi_every`` (the cost alternates)."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runners: dict[str, StepRunner] = {}
        for name, cfg in cfgs.items():
            try:
                runners[name] = StepRunner(preset, cfg, batch, device, bf16, tmp)
                for _ in range(warmup):
                    runners[name].step()
            except torch.OutOfMemoryError as e:  # report, do not lose the other variants
                runners.pop(name, None)
                out[name] = {"error": f"out of memory: {str(e)[:200]}"}
                gc.collect()
                torch.cuda.empty_cache()
        times: dict[str, list[float]] = {n: [] for n in runners}
        peaks: dict[str, list[float]] = {n: [] for n in runners}
        names = list(runners)
        for i in range(steps):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                dt, peak = runners[name].step()
                times[name].append(dt)
                if peak is not None:
                    peaks[name].append(peak)
        for name in names:
            dts = times[name]
            out[name] = {
                "step_s": statistics.fmean(dts),
                "step_s_median": statistics.median(dts),
                "step_s_min": min(dts),
                "timed_steps": len(dts),
            }
            if peaks[name]:
                out[name]["step_peak_gib"] = max(peaks[name])
        del runners
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


# ---------------------------------------------------------------------------------- late-run masks
#: the soft-mask width of the last update before S2 in the README schedule: tau_max * U / (S2 - S1)
LATE_TAU = 0.1 * 100 / 4875


def _set_masks(runner: StepRunner, tau: float) -> None:
    """Give the runner's gates the masks one mask update at ``tau`` and the full ratio would set (random
    Taylor scores, zero ΔΨ), as early (tau_max) or late (tau -> 0) in a run."""
    pr = runner.trainer.pruner
    g = torch.Generator().manual_seed(3)
    pr.state.taylor_sum.copy_(torch.rand(pr.state.taylor_sum.numel(), generator=g, dtype=torch.float64))
    pr.state.taylor_count.fill_(1)
    pr.update(1, rho=1.0, tau=tau)


def time_late_masks(
    preset: str,
    batch: int,
    device: torch.device,
    bf16: bool,
    warmup: int,
    steps: int,
    late_tau: float = LATE_TAU,
) -> dict[str, Any]:
    """Step time with the masks of a run's start (tau_max) vs its end (tau -> 0), with and without the mask
    floor, all interleaved step by step in one process. Late masks without the floor hold subnormal floats
    (sigmoid values like 1e-37 just below the threshold), whose products make x86 GEMMs slower."""
    far = dict(
        prune_start_step=0,
        prune_sparse_step=10_000,
        prune_finalize_step=20_000,
        update_every=10_000,
        evaluate_pruned=False,
        save_dir=None,
    )
    setups = {
        "early_tau_max": (0.1, MASK_FLOOR),
        "late_floor": (late_tau, MASK_FLOOR),
        "late_no_floor": (late_tau, 0.0),
    }
    out: dict[str, Any] = {"late_tau": late_tau}
    with tempfile.TemporaryDirectory() as tmp:
        runners = {}
        for name, (tau, floor) in setups.items():
            runners[name] = StepRunner(
                preset, P3BConfig(prune_ratio=0.5, mask_floor=floor, **far), batch, device, bf16, tmp
            )
            _set_masks(runners[name], tau)
            masks = torch.cat(
                [m.detach().reshape(-1) for _, _, m in runners[name].trainer.pruner.gates.named_masks()]
            )
            tiny = torch.finfo(torch.float32).tiny
            out.setdefault("subnormal_mask_values", {})[name] = int(
                ((masks != 0) & (masks.abs() < tiny)).sum()
            )
            for _ in range(warmup):
                runners[name].step()
        times: dict[str, list[float]] = {n: [] for n in runners}
        names = list(runners)
        for i in range(steps):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                times[name].append(runners[name].step()[0])
    for name, dts in times.items():
        out[name] = {"step_s": statistics.fmean(dts), "step_s_median": statistics.median(dts)}
    early = out["early_tau_max"]["step_s_median"]
    out["late_vs_early"] = {
        n: round(out[n]["step_s_median"] / early, 3) for n in ("late_floor", "late_no_floor")
    }
    return out


# ---------------------------------------------------------------------------------- keep-ratio comparison
class _Prototypes(torch.utils.data.Dataset):
    """Learnable synthetic classification: a smooth random prototype per class plus pixel noise."""

    def __init__(self, n: int, size: int, classes: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        protos = torch.nn.functional.interpolate(
            torch.randn(classes, 3, 4, 4, generator=g), size=size, mode="bilinear", align_corners=False
        )
        self.y = torch.randint(0, classes, (n,), generator=g)
        self.x = protos[self.y] + 1.5 * torch.randn(n, 3, size, size, generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def _parse_fast(spec: str) -> dict[str, Any]:
    """``"SUB:EVERY"`` -> grouped heads + fused gates with that BPI sub-batch fraction and period."""
    sub, _, every = spec.partition(":")
    return dict(bpi_mode="grouped", gate_mode="fused", bpi_subbatch=float(sub), bpi_every=int(every or 1))


def compare_keep(
    preset: str,
    steps: int,
    batch: int,
    ratio: float,
    device: torch.device,
    bf16: bool,
    fast_specs: list[str],
    noise_floor: bool = True,
    classes: int = 20,
) -> dict[str, Any]:
    """Final per-block keep ratios of a short P3B run: the reference BPI path vs the fast defaults (and
    ``fast_specs``), same data and seed. ``noise_floor`` adds the reference path with another data order
    (training seed 1), i.e. how much the keep ratios of such a short run move by chance alone."""
    shape = dict(PRESETS[preset], num_labels=classes)
    ds = _Prototypes(batch * 16, shape["image_size"], classes)
    phases = dict(
        prune_start_step=steps // 10,
        prune_sparse_step=steps // 2,
        prune_finalize_step=steps,
        update_every=max(8, steps // 10),
        evaluate_pruned=False,
        save_dir=None,
    )
    # the reference run also carries every fast setting as a shadow estimator: the same-run comparison
    fast_default = P3BConfig().resolved()
    shadow_specs = [f"{fast_default.bpi_subbatch}:{fast_default.bpi_every}"]
    shadow_specs += [
        spec for spec in fast_specs if _parse_fast(spec)["bpi_subbatch"] < 1.0 and spec not in shadow_specs
    ]
    reference = dict(REFERENCE_PATH, bpi_shadows=shadow_specs)
    shadow_of_run = {"fast_default": shadow_specs[0], **{f"fast_{sp}": sp for sp in shadow_specs[1:]}}
    todo: list[tuple[str, dict[str, Any], int]] = [("reference_path", reference, 0), ("fast_default", {}, 0)]
    todo += [(f"fast_{spec}", _parse_fast(spec), 0) for spec in fast_specs]
    if noise_floor:
        todo.append(("reference_path_seed1", REFERENCE_PATH, 1))
    runs: dict[str, Any] = {}
    same_run: dict[str, Any] = {}
    for name, extra, seed in todo:
        torch.manual_seed(0)
        model = ViTForImageClassification(ViTConfig(**shape))
        cfg = P3BConfig(prune_ratio=ratio, **phases, **extra)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            trainer = P3BTrainer(
                model=model,
                args=_args(tmp, batch, steps, device, bf16, seed=seed, lr=1e-3),
                train_dataset=ds,
                p3b=cfg,
            )
            trainer.train()
        hist = trainer.pruning.history["updates"]
        if name == "reference_path":
            same_run = shadow_summary(hist)
        runs[name] = {
            "config": {k: getattr(trainer.p3b, k) for k in REFERENCE_PATH},
            "data_seed": seed,
            "keep_target": hist[-1]["keep_target"],
            "keep_achieved": hist[-1]["keep_achieved"],
            "model_keep": hist[-1]["model_keep"],
            "pruned_params": sum(p.numel() for p in trainer.pruned_model.parameters()),
            "wall_s": time.perf_counter() - t0,
        }
        del trainer, model
        gc.collect()
    ref = runs["reference_path"]["keep_achieved"]
    for name, r in runs.items():
        if name != "reference_path":
            diff = [abs(x - y) for x, y in zip(ref, r["keep_achieved"])]
            r["abs_diff_keep_vs_reference"] = diff
            r["max_abs_diff_keep_vs_reference"] = max(diff)
            r["mean_abs_diff_keep_vs_reference"] = sum(diff) / len(diff)
        spec = shadow_of_run.get(name)
        if spec in same_run:
            r["same_run_shadow"] = spec
            r["same_run_max_abs_diff_target"] = same_run[spec]["final_max_abs_diff"]
            r["same_run_mean_abs_diff_target"] = same_run[spec]["final_mean_abs_diff"]
    return {
        "model": preset,
        "classes": classes,
        "steps": steps,
        "batch": batch,
        "prune_ratio": ratio,
        "schedule": phases,
        "runs": runs,
        "same_run_shadows": same_run,
        "max_abs_diff_keep": runs["fast_default"]["max_abs_diff_keep_vs_reference"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--presets",
        nargs="+",
        default=None,
        choices=sorted(PRESETS),
        help="model shapes (default: devbench on CPU, deit-s deit-t on GPU)",
    )
    p.add_argument("--batches", type=int, nargs="+", default=None, help="default: 64 on CPU, 64 256 on GPU")
    p.add_argument(
        "--dtype", choices=["fp32", "bf16"], default=None, help="default: fp32 on CPU, bf16 on GPU"
    )
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per variant (default 2)")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per variant, a multiple of bpi_every (default 4 CPU, 8 GPU)",
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the reference BPI path in clean mode, grouped heads on the full batch, "
        "and the gates alone (hooks vs fused, no BPI)",
    )
    p.add_argument(
        "--time-fast",
        nargs="*",
        default=[],
        metavar="SUB:EVERY",
        help="extra grouped+fused variants in the timing, e.g. 0.125:1 0.25:4",
    )
    p.add_argument(
        "--compare-steps",
        type=int,
        default=None,
        help="length of the keep-ratio comparison runs (default 60 CPU, 120 GPU; 0 = skip)",
    )
    p.add_argument("--no-timing", action="store_true", help="only run the keep-ratio comparison")
    p.add_argument(
        "--late-masks",
        action="store_true",
        help="also time steps with early (tau_max) vs late (tau -> 0) masks, with and without the "
        "mask floor, interleaved (the subnormal-float slowdown of late P3B steps)",
    )
    p.add_argument(
        "--compare-fast",
        nargs="*",
        default=[],
        metavar="SUB:EVERY",
        help="extra grouped+fused configs in the comparison, e.g. 1:1 (grouped only) 0.5:2",
    )
    p.add_argument(
        "--no-noise-floor",
        action="store_true",
        help="skip the reference run with another data order (the chance variation of the keep ratios)",
    )
    p.add_argument("--compare-batch", type=int, default=64)
    p.add_argument(
        "--compare-preset",
        default=None,
        choices=sorted(PRESETS),
        help="model shape of the comparison (default: devbench on GPU, small on CPU)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="repeat the (step-interleaved) measurement with fresh models (default 1); "
        "x_dense is the median of the per-round ratios",
    )
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
    rounds = a.rounds or 1
    compare_steps = a.compare_steps if a.compare_steps is not None else (200 if gpu else 60)
    fast_defaults = P3BConfig().resolved()
    t_start = time.perf_counter()
    doc: dict[str, Any] = {
        "hardware": torch.cuda.get_device_name(device)
        if gpu
        else f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} torch threads)",
        "torch": torch.__version__,
        "dtype": "bf16 autocast" if bf16 else "fp32",
        "warmup": warmup,
        "steps": steps,
        "rounds": rounds,
        "fast_defaults": {k: getattr(fast_defaults, k) for k in REFERENCE_PATH},
        "timing": [],
    }
    for preset in [] if a.no_timing else presets:
        for batch in batches:
            row: dict[str, Any] = {
                "preset": preset,
                "batch": batch,
                **{k: PRESETS[preset][k] for k in ("hidden_size", "image_size", "patch_size")},
            }
            per_round = [
                time_variants(
                    preset,
                    variants(a.breakdown, 2 * PRESETS[preset]["num_hidden_layers"], a.time_fast),
                    batch,
                    device,
                    bf16,
                    warmup,
                    steps,
                )
                for _ in range(rounds)
            ]
            for name in per_round[0]:
                ok = [r[name] for r in per_round if "step_s" in r[name]]
                row[name] = (
                    {
                        "step_s": statistics.fmean(r["step_s"] for r in ok),
                        "rounds": [round(r["step_s"], 4) for r in ok],
                        **({"step_peak_gib": max(r["step_peak_gib"] for r in ok)} if gpu else {}),
                    }
                    if ok
                    else per_round[0][name]
                )
            row["x_dense"] = {}
            for name in per_round[0]:
                ratios = [
                    r[name]["step_s"] / r["dense"]["step_s"]
                    for r in per_round
                    if "step_s" in r[name] and "step_s" in r.get("dense", {})
                ]
                if ratios:
                    row["x_dense"][name] = round(statistics.median(ratios), 3)
            doc["timing"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    if a.late_masks:
        doc["late_masks"] = [
            dict(
                preset=preset,
                batch=batch,
                **time_late_masks(preset, batch, device, bf16, warmup, max(steps, 4)),
            )
            for preset in presets
            for batch in batches
        ]
        print(json.dumps(doc["late_masks"]), file=sys.stderr, flush=True)
    if compare_steps > 0:
        doc["keep_ratio_comparison"] = compare_keep(
            a.compare_preset or ("devbench" if gpu else "small"),
            compare_steps,
            a.compare_batch,
            a.compare_ratio,
            device,
            bf16,
            a.compare_fast,
            not a.no_noise_floor,
        )
    doc["total_wall_s"] = time.perf_counter() - t_start
    text = json.dumps(doc, indent=1, default=lambda o: round(o, 5) if isinstance(o, float) else str(o))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
