"""Throughput measurement: a pruned model vs its dense original vs the ideal plain ViT of equal shapes.

One run builds the three models, optionally turns each into a fast inference module
(:func:`p3b_hf.optimize.optimize_for_inference`), and times them **round-robin** (one repeat of
every model, then the next repeat ...), so that load drift on a shared machine hits all models
alike. Each repeat runs ``inner`` forward passes (calibrated so a repeat lasts at least
``min_repeat_s``; 1 on a GPU at batch 1024), synchronising CUDA around it; images/s comes from the
median repeat. Defaults follow the P3B paper (Table 7): GPU batch 1024, CPU batch 1.

Variant names: ``eager`` (the HF module as is), ``fast`` (optimised, not compiled), ``compiled``
(optimised + ``torch.compile``), each optionally followed by modifiers ``+round8`` (exact zero
padding of widths to multiples of 8), ``+gather`` / ``+index_add`` / ``+dense`` (scatter-add
formulation), ``+conv`` (keep the patch conv), ``+nofold`` (keep the norm affine),
``+alltokens`` (no cls-only last layer), ``+denseread`` (gathers as zero columns of full-width Linears).

Random-weight models for speed work: :func:`random_plan` draws P3B-like plans (residual in/out
subsets per sub-block, random head dims and MLP neurons, per-block budgets) or uniformly slimmed
ones (inner widths only), bisected to a whole-model parameter keep ratio with :func:`count_cost`.
"""

from __future__ import annotations

import math
import platform
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import (
    DeiTConfig,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    ViTConfig,
    ViTForImageClassification,
)

from .cost import count_cost
from .errors import P3BError
from .models import P3BViTConfig
from .models.plain_vit import plain_like
from .optimize import optimize_for_inference
from .plan import WidthPlan
from .slicing import apply_width_plan, pruned_config

SCHEMA = "p3b_hf.bench/1"
ARCHS: dict[str, dict[str, int]] = {  # timm/HF DeiT shapes (the non-distilled DeiT is a plain ViT)
    "deit-tiny": {"hidden_size": 192, "num_attention_heads": 3},
    "deit-small": {"hidden_size": 384, "num_attention_heads": 6},
    "deit-base": {"hidden_size": 768, "num_attention_heads": 12},
}
PLAN_STYLES = ("p3b", "uniform")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_MODIFIERS: dict[str, dict[str, Any]] = {
    "round8": {"round_to": 8},
    "noround": {"round_to": None},
    "gather": {"scatter": "gather"},
    "index_add": {"scatter": "index_add"},
    "dense": {"scatter": "dense"},
    "conv": {"patch_embed_as_matmul": False},
    "nofold": {"fold_norms": False},
    "alltokens": {"prune_last_layer_tokens": False},
    "denseread": {"dense_reads": True},
}


# ------------------------------------------------------------------------------------- variants
def parse_variant(name: str) -> dict[str, Any] | None:
    """``None`` for ``eager``, else the ``optimize_for_inference`` keyword arguments of a variant."""
    base, *mods = name.split("+")
    if base == "eager" and not mods:
        return None
    if base not in ("fast", "compiled"):
        raise P3BError(
            f"Unknown bench variant {name!r}: use eager, fast or compiled, optionally with "
            f"+{' +'.join(_MODIFIERS)} (e.g. compiled+round8)."
        )
    kwargs: dict[str, Any] = {"compile": base == "compiled"}
    for m in mods:
        if m not in _MODIFIERS:
            raise P3BError(
                f"Unknown modifier +{m} in bench variant {name!r}; known: {', '.join(_MODIFIERS)}."
            )
        kwargs.update(_MODIFIERS[m])
    return kwargs


def make_runner(model: nn.Module, variant: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function ``pixel_values -> logits`` for ``model`` in the given variant."""
    kwargs = parse_variant(variant)
    if kwargs is None:
        model.eval()
        return lambda x: model(pixel_values=x).logits
    fast = optimize_for_inference(model, **kwargs)
    return fast


# ------------------------------------------------------------------------------------- models
def dense_arch_config(
    arch: str, num_labels: int = 1000, image_size: int = 224, patch_size: int = 16
) -> ViTConfig:
    """The HF ``ViTConfig`` of a DeiT-{tiny,small,base}-shaped model (12 layers, MLP ratio 4)."""
    if arch not in ARCHS:
        raise P3BError(f"Unknown --random-arch {arch!r}; choose one of {', '.join(ARCHS)}.")
    a = ARCHS[arch]
    return ViTConfig(
        hidden_size=a["hidden_size"],
        num_attention_heads=a["num_attention_heads"],
        intermediate_size=4 * a["hidden_size"],
        num_hidden_layers=12,
        image_size=image_size,
        patch_size=patch_size,
        num_labels=num_labels,
        layer_norm_eps=1e-6,
    )


def _rounded(n: int, full: int, round_to: int | None) -> int:
    n = max(1, min(full, n))
    if round_to:
        n = min(full, max(round_to, round_to * round(n / round_to)))
    return n


def random_plan(
    dense_config: Any, keep: float, style: str = "p3b", seed: int = 0, round_to: int | None = None
) -> WidthPlan:
    """A random plan keeping ``keep`` of the whole model's parameters (within one width step).

    ``style="p3b"``: like P3B's output -- all heads kept, per-layer head dims and MLP neurons, and
    every sub-block reads/writes a random residual subset (fractions in ``[max(0.3, sqrt(keep)), 1]``);
    per-sub-block budgets vary randomly (x0.5..1.5) around a common scale found by bisection.
    ``style="uniform"``: every layer keeps the same fraction of head dims and MLP neurons, no subsets.
    ``round_to`` rounds every kept width to a multiple (the plan itself is rounded, unlike the exact
    zero padding of ``optimize_for_inference(round_to=...)``).
    """
    if style not in PLAN_STYLES:
        raise P3BError(f"Unknown plan style {style!r}; choose one of {PLAN_STYLES}.")
    if not 0.0 < keep <= 1.0:
        raise P3BError(f"--keep {keep} must be in (0, 1]: the fraction of parameters to keep.")
    base = WidthPlan.full(dense_config)
    c, d, f, n = base.hidden_size, base.head_dim, base.intermediate_size, base.num_layers
    rng = random.Random(seed)
    lo = max(0.3, math.sqrt(keep))

    def frac() -> float:
        return rng.uniform(lo, 1.0) if style == "p3b" else 1.0

    resid = [[frac() for _ in range(4)] for _ in range(n)]  # attn_in, attn_out, mlp_in, mlp_out
    weight = [[rng.uniform(0.5, 1.5) if style == "p3b" else 1.0 for _ in range(2)] for _ in range(n)]
    picks = [{k: rng.random() for k in ("dims", "mlp", "sub")} for _ in range(n)]

    def build(scale: float) -> WidthPlan:
        plan = WidthPlan.full(dense_config)
        for i, lp in enumerate(plan.layers):
            r = random.Random(int(picks[i]["sub"] * 2**31))
            q = _rounded(round(min(1.0, scale * weight[i][0]) * d), d, round_to)
            h = _rounded(round(min(1.0, scale * weight[i][1]) * f), f, round_to)
            lp.head_dims = (
                None if q == d else sorted(random.Random(int(picks[i]["dims"] * 2**31)).sample(range(d), q))
            )
            lp.mlp = (
                None if h == f else sorted(random.Random(int(picks[i]["mlp"] * 2**31)).sample(range(f), h))
            )
            for k, fr in zip(("attn_in", "attn_out", "mlp_in", "mlp_out"), resid[i]):
                w = _rounded(round(fr * c), c, round_to)
                setattr(lp, k, None if w == c else sorted(r.sample(range(c), w)))
        plan.meta = {
            "method": f"random-{style}",
            "prune_ratio": round(1 - keep, 4),
            "seed": seed,
            "round_to": round_to,
        }
        return plan

    target = keep * count_cost(dense_config)["params"]
    lo_s, hi_s = 0.0, 2.0 / min(min(w) for w in weight)
    if count_cost(pruned_config(dense_config, build(lo_s)))["params"] > target:
        raise P3BError(
            f"--keep {keep} is below what this plan style can reach for this architecture (even the "
            "smallest inner widths keep more); use a larger --keep or --plan-style uniform."
        )
    for _ in range(40):
        mid = (lo_s + hi_s) / 2
        if count_cost(pruned_config(dense_config, build(mid)))["params"] > target:
            hi_s = mid
        else:
            lo_s = mid
    return build(lo_s)


def random_models(
    arch: str,
    keep: float,
    style: str = "p3b",
    seed: int = 0,
    round_to: int | None = None,
    num_labels: int = 1000,
) -> tuple[nn.Module, nn.Module]:
    """``(dense, pruned)`` random-weight models: a DeiT-shaped HF ViT and a random plan applied to it."""
    cfg = dense_arch_config(arch, num_labels=num_labels)
    torch.manual_seed(seed)
    dense = ViTForImageClassification(cfg).eval()
    plan = random_plan(cfg, keep, style, seed, round_to)
    pruned = apply_width_plan(dense, plan, provenance={"base_model_name_or_path": f"random:{arch}"})
    return dense, pruned.eval()


def dense_config_of(config: P3BViTConfig) -> ViTConfig | DeiTConfig:
    """A stock config of the dense model a pruned config came from (its hidden size if embedding
    channels were pruned: the original width is not recorded)."""
    keys = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "layer_norm_eps",
        "image_size",
        "patch_size",
        "num_channels",
        "qkv_bias",
    )
    kwargs = {k: getattr(config, k) for k in keys}
    kwargs.update(id2label=dict(config.id2label), label2id=dict(config.label2id))
    return DeiTConfig(**kwargs) if config.distilled else ViTConfig(**kwargs)


#: ``--dense-model random``: time a random-weight dense model of the pruned config's dense shape (ViT/DeiT)
RANDOM_DENSE = "random"


def dense_model_for(pruned: nn.Module, dense_model: str | None = None) -> tuple[nn.Module, str]:
    """The dense original of a pruned model and its recorded name: ``dense_model`` if given (a model dir or
    Hub id; ``"random"``: random weights of the dense config, ViT/DeiT only), else
    ``config.base_model_name_or_path`` (an absolute path for a local dir, a Hub id as given).

    Never guesses: when the original cannot be loaded this raises one :class:`P3BError` naming the missing
    base and ``--dense-model`` -- a random-weight model silently timed as "dense" made speed-ups look real
    that were not measured against the model the user pruned. The name returned is :func:`model_ref`'s
    (no machine paths)."""
    from .loading import load_model
    from .report import model_ref

    cfg = pruned.config
    if dense_model == RANDOM_DENSE:
        if not isinstance(cfg, P3BViTConfig):
            raise P3BError(
                f"--dense-model random builds a random-weight ViT/DeiT only, not a dense "
                f"{type(pruned).__name__}; give the dense model dir or Hub id with --dense-model."
            )
        dense_cfg = dense_config_of(cfg)
        if cfg.distilled:
            cls = (
                DeiTForImageClassificationWithTeacher if cfg.distillation_head else DeiTForImageClassification
            )
        else:
            cls = ViTForImageClassification
        return cls(
            dense_cfg
        ).eval(), "random weights, dense config of the pruned model (--dense-model random)"
    base = dense_model or getattr(cfg, "base_model_name_or_path", None)
    if not base or str(base).startswith("random:"):
        raise P3BError(
            f"This pruned {type(pruned).__name__} records no dense original (config.json "
            "base_model_name_or_path); give it with --dense-model DIR_OR_HUB_ID (or --dense-model random "
            "for random weights of the dense shape, ViT/DeiT)."
        )
    flag = "--dense-model" if dense_model else "config.json base_model_name_or_path"
    try:
        return load_model(str(base)).eval(), str(model_ref(base))
    except Exception as e:  # noqa: BLE001 -- any failure is the same refusal, with its reason
        first = str(e).strip().splitlines()[0].split(". ")[0][:200] if str(e).strip() else ""
        reason = f"{type(e).__name__}: {first}" if first else type(e).__name__
        raise P3BError(
            f"Cannot load the dense original {base!r} ({flag}): {reason}. Give the dense model dir or Hub id "
            "with --dense-model."
        ) from e


def bench_image_size(config: Any, processor: Any = None) -> int:
    """The resolution a model is timed at: ``config.image_size``, except DINOv2 (its config holds the 518 px
    pretraining grid): the image processor's crop when there is one, else the config's grid."""
    from .data import model_image_size

    size = model_image_size(config)
    if size is None:
        crop = getattr(processor, "crop_size", None) or {}
        size = crop.get("height") or config.image_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def default_variants(config: Any) -> tuple[str, ...]:
    """``eager,fast`` where :func:`p3b_hf.optimize.optimize_for_inference` has a fast path (ViT/DeiT), else
    ``eager`` (BEiT, DINOv2, Swin, ConvNeXt: their HF module is what runs)."""
    from .optimize import has_fast_path

    return ("eager", "fast") if has_fast_path(config) else ("eager",)


# ------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(
    runners: dict[str, Callable[[torch.Tensor], Any]],
    x: torch.Tensor,
    warmup: int,
    min_repeat_s: float,
    call_s: dict[str, float] | None = None,
) -> dict[str, int]:
    """Run each runner ``warmup`` times (this is where ``torch.compile`` compiles), then time one call
    to choose how many calls one timed repeat makes (at least ``min_repeat_s`` long). The seconds of
    that call are stored in ``call_s`` if given."""
    inner: dict[str, int] = {}
    with torch.no_grad():  # not inference_mode: its tensors poison caches (BEiT's position index)
        for name, fn in runners.items():
            for _ in range(max(1, warmup)):
                fn(x)
            _sync(x.device)
            t0 = time.perf_counter()
            fn(x)
            _sync(x.device)
            dt = max(time.perf_counter() - t0, 1e-9)
            inner[name] = max(1, math.ceil(min_repeat_s / dt))
            if call_s is not None:
                call_s[name] = dt
    return inner


def time_round_robin(
    runners: dict[str, Callable[[torch.Tensor], Any]],
    x: torch.Tensor,
    repeats: int,
    warmup: int,
    min_repeat_s: float,
    inner: dict[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Median images/s of each runner, timed round-robin (see module docstring). ``inner`` (from
    :func:`warm_up`) skips the warm-up."""
    if inner is None:
        inner = warm_up(runners, x, warmup, min_repeat_s)
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.no_grad():  # not inference_mode: its tensors poison caches (BEiT's position index)
        for _ in range(repeats):
            for name, fn in runners.items():
                _sync(x.device)
                t0 = time.perf_counter()
                for _ in range(inner[name]):
                    fn(x)
                _sync(x.device)
                times[name].append((time.perf_counter() - t0) / inner[name])
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {
            "images_per_s": x.shape[0] / med,
            "median_ms": med * 1e3,
            "min_ms": min(ts) * 1e3,
            "max_ms": max(ts) * 1e3,
            "inner_iters": inner[name],
            "times_ms": [t * 1e3 for t in ts],
        }
    return out


def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    env = {
        "device": device.type,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    return env


def _describe(model: nn.Module, source: str) -> dict[str, Any]:
    cost = count_cost(model)
    return {
        "source": source,
        "class": type(model).__name__,
        "params": cost["params"],
        "macs": cost["macs"],
        "measured_params": sum(p.numel() for p in model.parameters()),
    }


def run_bench(
    pruned: nn.Module,
    dense: nn.Module | None = None,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    batch_size: int | None = None,
    repeats: int = 10,
    warmup: int = 3,
    variants: tuple[str, ...] | None = None,
    pruned_variants: tuple[str, ...] = (),
    min_repeat_s: float | None = None,
    sources: dict[str, str] | None = None,
    seed: int = 0,
    dense_model: str | None = None,
    image_size: int | None = None,
) -> dict[str, Any]:
    """Benchmark ``pruned`` vs ``dense`` vs the ideal plain ViT (ViT/DeiT); return the JSON-able report.

    ``variants`` run for all models (default :func:`default_variants`: ``eager,fast`` for ViT/DeiT, ``eager``
    for the other families), ``pruned_variants`` (e.g. ``compiled+round8``) only for the pruned one.
    ``dense``: the dense model, else :func:`dense_model_for` (``dense_model``, then the recorded base;
    refused when it cannot be loaded). ``dtype`` defaults to bf16 on CUDA, fp32 on CPU; ``batch_size`` to
    1024 / 1 (P3B); ``image_size`` to :func:`bench_image_size`.
    """
    variants = tuple(variants) if variants else default_variants(pruned.config)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise P3BError("--device cuda requested but torch sees no CUDA device; use --device cpu.")
    dtype = dtype or ("bf16" if dev.type == "cuda" else "fp32")
    if dtype not in DTYPES:
        raise P3BError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}.")
    batch_size = batch_size or (1024 if dev.type == "cuda" else 1)
    if min_repeat_s is None:
        min_repeat_s = 0.0 if dev.type == "cuda" else 0.2
    for v in (*variants, *pruned_variants):
        parse_variant(v)  # fail before building anything
    vit_like = isinstance(pruned.config, P3BViTConfig)
    if (
        not vit_like
    ):  # BEiT / DINOv2 / Swin / ConvNeXt: no plain "ideal" model, no optimize_for_inference path
        fast = [v for v in (*variants, *pruned_variants) if parse_variant(v) is not None]
        if fast:
            raise P3BError(
                f"bench variants {fast} use optimize_for_inference, which supports ViT/DeiT only; "
                f"bench a {type(pruned).__name__} with the eager variant (--variants eager, the default)."
            )
    sources = dict(sources or {})
    if dense is None:
        dense, sources["dense"] = dense_model_for(pruned, dense_model)
    models = {"pruned": pruned, "dense": dense}
    if vit_like:
        models["ideal"] = plain_like(pruned)
        sources["ideal"] = (
            "plain ViT, same Linear shapes and weights as the pruned model (prefix reads/writes)"
        )
    from .report import model_ref, portable

    sources.setdefault("pruned", str(getattr(pruned.config, "_name_or_path", "") or "in-memory"))
    sources.setdefault("dense", str(getattr(dense.config, "_name_or_path", "") or "in-memory"))
    sources = {k: str(model_ref(v)) for k, v in sources.items()}
    size = image_size or bench_image_size(pruned.config)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "env": environment(dev),
        "settings": {
            "dtype": dtype,
            "batch_size": batch_size,
            "repeats": repeats,
            "warmup": warmup,
            "image_size": size,
            "min_repeat_s": min_repeat_s,
            "variants": list(variants),
            "pruned_variants": list(pruned_variants),
        },
        "models": {name: _describe(m, sources[name]) for name, m in models.items()},
    }
    torch.manual_seed(seed)
    cfg = pruned.config
    x = torch.randn(batch_size, getattr(cfg, "num_channels", 3), size, size).to(dev, DTYPES[dtype])
    runners: dict[str, Callable] = {}
    for name, model in models.items():
        model.to(dev, DTYPES[dtype]).eval()
        for v in (*variants, *(pruned_variants if name == "pruned" else ())):
            runners[f"{name}/{v}"] = make_runner(model, v)
    timed = time_round_robin(runners, x, repeats, warmup, min_repeat_s)
    report["results"] = [
        {"model": k.split("/")[0], "variant": k.split("/")[1], **v} for k, v in timed.items()
    ]
    report["ratios"] = ratios(report["results"])
    return portable(report)


def ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Speed ratios of each pruned variant (images/s of pruned / images/s of the reference):

    ``pruned_vs_dense`` (dense in the same variant, or its base variant), ``pruned_vs_dense_eager``,
    ``pruned_vs_ideal`` (target >= 0.95) -- ratios of medians -- and ``*_paired``: the median over
    repeats of the per-round ratio (round-robin timing makes rounds comparable), robust to load
    drift on a shared machine.
    """
    rows = {(r["model"], r["variant"]): r for r in results}
    keys = (
        "pruned_vs_dense",
        "pruned_vs_dense_eager",
        "pruned_vs_ideal",
        "pruned_vs_dense_paired",
        "pruned_vs_ideal_paired",
    )
    out: dict[str, dict[str, float]] = {k: {} for k in keys}
    for (model, variant), row in rows.items():
        if model != "pruned":
            continue
        base = variant.split("+")[0]
        refs = {
            "dense": rows.get(("dense", variant), rows.get(("dense", base))),
            "dense_eager": rows.get(("dense", "eager")),
            "ideal": rows.get(("ideal", variant), rows.get(("ideal", base))),
        }
        for name, ref in refs.items():
            if ref is None:
                continue
            out[f"pruned_vs_{name}"][variant] = row["images_per_s"] / ref["images_per_s"]
            if name != "dense_eager" and len(ref["times_ms"]) == len(row["times_ms"]):
                out[f"pruned_vs_{name}_paired"][variant] = statistics.median(
                    r / p for r, p in zip(ref["times_ms"], row["times_ms"])
                )
    return out


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of a :func:`run_bench` report."""
    s, env = report["settings"], report["env"]
    lines = [
        f"{env.get('device_name', env['device'])}  torch {env['torch']}  {s['dtype']}  batch {s['batch_size']}  "
        f"median of {s['repeats']} repeats",
        f"{'model':8} {'variant':22} {'params (M)':>10} {'images/s':>12} {'ms/batch':>10} "
        f"{'vs dense':>9} {'vs ideal':>9} {'(paired)':>9}",
    ]
    r = report["ratios"]
    has_ideal = "ideal" in report["models"]  # ViT/DeiT only
    if not has_ideal:
        lines[1] = lines[1].split(" vs ideal")[0].rstrip()
    for row in report["results"]:
        m, v = row["model"], row["variant"]
        cells = ""
        if m == "pruned":
            cells = f"{r['pruned_vs_dense'].get(v, float('nan')):9.2f}"
            if has_ideal:
                cells += (
                    f" {r['pruned_vs_ideal'].get(v, float('nan')):9.3f}"
                    f" {r['pruned_vs_ideal_paired'].get(v, float('nan')):9.3f}"
                )
        lines.append(
            f"{m:8} {v:22} {report['models'][m]['params'] / 1e6:10.2f} {row['images_per_s']:12.1f} "
            f"{row['median_ms']:10.2f} {cells}".rstrip()
        )
    return "\n".join(lines)
