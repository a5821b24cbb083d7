"""The ``pruning_report.json`` every run writes: dense vs pruned cost, widths, accuracy (per eval set and
domain, with the source-vs-target gap), method history; its one-screen summary and the widths plot.
(Writing model directories: :mod:`p3b_hf.checkpoints`.)"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from torch import nn

from .cost import count_cost
from .models.families import dense_intermediate_size, stage_family_of_config
from .plan import WidthPlan

REPORT_NAME = "pruning_report.json"
#: an absolute POSIX path inside a longer string (a command line, "--model=/x/y"): after the start, a blank,
#: "=", a quote or a bracket -- not after ":" so that URLs (https://...) are left alone
_ABS_IN_TEXT = re.compile(r"""(?:(?<=^)|(?<=[\s='"(\[,]))(/[^\s'",)\]]+)""")


def model_ref(name: Any) -> Any:
    """How a model / data set reference is *recorded* in anything meant to be read elsewhere (reports, the
    model card, committed results): a Hub id or relative path as given, an absolute local path as its last
    component -- the path of the machine that wrote it means nothing elsewhere and leaks its layout. Tools
    that must find the model again read the resolved path from ``config.json`` instead."""
    if not isinstance(name, (str, os.PathLike)):
        return name
    text = os.fspath(name)
    if os.path.isabs(text):
        return Path(text).name or text
    return text


def portable(obj: Any) -> Any:
    """``obj`` (a JSON-able report) with every absolute path replaced by its last component
    (:func:`model_ref`), also inside longer strings such as the recorded command line."""
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        obj = os.fspath(obj)
    if isinstance(obj, str) and "/" in obj:
        if os.path.isabs(obj) and not any(c.isspace() for c in obj):
            return model_ref(obj)
        return _ABS_IN_TEXT.sub(lambda m: Path(m.group(1)).name or m.group(1), obj)
    return obj


def _block_widths(cfg: Any) -> list[dict[str, int]] | None:
    """Swin / ConvNeXt: ``{"stage", "block", "dim", "mlp"}`` per block (only MLP widths are pruned); else None."""
    fam = stage_family_of_config(cfg)
    if fam is None:
        return None
    widths = getattr(cfg, "block_intermediate_sizes", None) or fam.dense_widths(cfg)
    return [
        {"stage": s, "block": b, "dim": dim, "mlp": int(f)}
        for s, (dim, stage) in enumerate(zip(fam.stage_dims(cfg), widths))
        for b, f in enumerate(stage)
    ]


def layer_widths(model_or_config: Any) -> list[dict[str, int]]:
    """Per-layer widths of a P3B model/config (or a dense stock config); per block for Swin / ConvNeXt."""
    cfg = getattr(model_or_config, "config", model_or_config)
    blocks = _block_widths(cfg)
    if blocks is not None:
        return blocks
    c = cfg.hidden_size
    n = cfg.num_hidden_layers
    if not hasattr(cfg, "layer_num_heads"):
        h = cfg.num_attention_heads
        return [
            {
                "heads": h,
                "head_dim": c // h,
                "mlp": dense_intermediate_size(cfg),
                "attn_in": c,
                "attn_out": c,
                "mlp_in": c,
                "mlp_out": c,
            }
            for _ in range(n)
        ]

    def w(s: list[int] | None) -> int:
        return c if s is None else len(s)

    return [
        {
            "heads": cfg.layer_num_heads[i],
            "head_dim": cfg.layer_head_dims[i],
            "mlp": cfg.layer_intermediate_sizes[i],
            "attn_in": w(cfg.layer_attn_in[i]),
            "attn_out": w(cfg.layer_attn_out[i]),
            "mlp_in": w(cfg.layer_mlp_in[i]),
            "mlp_out": w(cfg.layer_mlp_out[i]),
        }
        for i in range(n)
    ]


def domain_gap(
    eval_sets: dict[str, dict[str, Any]] | None,
    dense_eval_sets: dict[str, dict[str, Any]] | None = None,
    *,
    source: str | None,
    target: str | None,
) -> dict[str, Any] | None:
    """The source-vs-target gap ``acc(source) - acc(target)`` (in-domain minus held-out-domain accuracy, as
    fractions) and, when the dense model's accuracies on the same sets are given, its change against the
    dense model (``gap_change`` > 0: pruning widened the gap). None without both sets."""

    def acc(sets: dict[str, dict[str, Any]] | None, name: str | None) -> float | None:
        value = ((sets or {}).get(name) or {}).get("accuracy") if name is not None else None
        return None if value is None else float(value)

    s, t = acc(eval_sets, source), acc(eval_sets, target)
    if s is None or t is None:
        return None
    out: dict[str, Any] = {"source_set": source, "target_set": target, "source": s, "target": t, "gap": s - t}
    ds, dt = acc(dense_eval_sets, source), acc(dense_eval_sets, target)
    if ds is not None and dt is not None:
        out.update(dense_source=ds, dense_target=dt, dense_gap=ds - dt, gap_change=(s - t) - (ds - dt))
    return out


def base_report(
    dense_model: nn.Module,
    pruned_model: nn.Module,
    *,
    method: str,
    prune_ratio: float | None,
    plan: WidthPlan | None,
    eval_metrics: dict[str, float] | None,
    dense_eval_metrics: dict[str, float] | None = None,
    wall_time_s: float | None = None,
    extra: dict[str, Any] | None = None,
    eval_sets: dict[str, dict[str, Any]] | None = None,
    dense_eval_sets: dict[str, dict[str, Any]] | None = None,
    domains: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields every method reports, so ``p3b-hf compare`` can put runs side by side.

    With several eval sets (``eval_sets``: ``{name: {accuracy, loss, samples}}``, the first = ``eval``) the
    report also carries them, the dense model's (``dense_eval_sets``, when measured), the domain split
    (``domains``) and the source-vs-target gap with its change against the dense model (``domain_gap``)."""
    dense = count_cost(dense_model)
    pruned = count_cost(pruned_model)
    report: dict[str, Any] = {
        "method": method,
        "prune_ratio_requested": prune_ratio,
        "base_model": getattr(dense_model.config, "_name_or_path", None),
        "dense": {"params": dense["params"], "macs": dense["macs"]},
        "pruned": {"params": pruned["params"], "macs": pruned["macs"]},
        "achieved_param_reduction": 1.0 - pruned["params"] / dense["params"],
        "achieved_mac_reduction": 1.0 - pruned["macs"] / dense["macs"],
        "widths": layer_widths(pruned_model),
        "removed_sub_blocks": _removed(pruned_model),
        "eval": dict(eval_metrics or {}),
        "dense_eval": dict(dense_eval_metrics) if dense_eval_metrics is not None else None,
        "wall_time_s": wall_time_s,
        "plan_meta": dict(plan.meta) if plan is not None else {},
    }
    if eval_sets:
        report["eval_sets"] = {k: dict(v) for k, v in eval_sets.items()}
        report["dense_eval_sets"] = (
            {k: dict(v) for k, v in dense_eval_sets.items()} if dense_eval_sets else None
        )
        report["domains"] = dict(domains) if domains else None
        report["domain_gap"] = domain_gap(
            eval_sets,
            dense_eval_sets,
            source=(domains or {}).get("source_set"),
            target=(domains or {}).get("target_set"),
        )
    if extra:
        report.update(extra)
    return report


def _removed(model: nn.Module) -> list[str]:
    cfg = model.config
    out: list[str] = []
    if stage_family_of_config(cfg) is not None:  # every Swin / ConvNeXt block keeps >= 1 MLP unit
        return out
    for i in range(cfg.num_hidden_layers):
        if (
            getattr(cfg, "layer_head_dims", [1] * (i + 1))[i]
            * getattr(cfg, "layer_num_heads", [1] * (i + 1))[i]
            == 0
        ):
            out.append(f"attn{i}")
        if getattr(cfg, "layer_intermediate_sizes", [1] * (i + 1))[i] == 0:
            out.append(f"mlp{i}")
    return out


def write_report(output_dir: str | os.PathLike, report: dict[str, Any]) -> Path:
    """Write ``pruning_report.json`` atomically, with machine paths reduced to names (:func:`portable`):
    the report is pushed with the model and quoted in model cards."""
    path = Path(output_dir) / REPORT_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(portable(json.loads(json.dumps(report, default=_json_default))), indent=1))
    os.replace(tmp, path)
    return path


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def plot_widths(model_or_config: Any, path: str | os.PathLike, dense_config: Any = None) -> Path:
    """Bar chart of the kept widths per layer (attention inner width, MLP width, residual subsets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = layer_widths(model_or_config)
    cfg = getattr(model_or_config, "config", model_or_config)
    n = len(widths)
    if stage_family_of_config(cfg) is not None:  # Swin / ConvNeXt: MLP widths per block only
        dense = [f for stage in stage_family_of_config(cfg).dense_widths(cfg) for f in stage]
        fig, ax = plt.subplots(figsize=(max(6, 0.3 * n), 3.6))
        ax.bar(
            range(n), [w["mlp"] / d for w, d in zip(widths, dense)], color=[f"C{w['stage']}" for w in widths]
        )
        ax.set(
            title="Kept MLP hidden units per block (fraction of dense; colour = stage)",
            xlabel="block",
            ylim=(0, 1.05),
        )
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
    xs = list(range(n))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    attn = [w["heads"] * w["head_dim"] for w in widths]
    mlp = [w["mlp"] for w in widths]
    dense_attn = cfg.hidden_size if dense_config is None else dense_config.hidden_size
    dense_mlp = dense_intermediate_size(cfg)
    axes[0].bar(
        [x - 0.2 for x in xs], [a / dense_attn for a in attn], width=0.4, label="attention q/k/v width"
    )
    axes[0].bar([x + 0.2 for x in xs], [m / dense_mlp for m in mlp], width=0.4, label="MLP hidden width")
    axes[0].set(title="Kept inner widths (fraction of dense)", xlabel="layer", ylim=(0, 1.05), xticks=xs)
    axes[0].legend(fontsize=8)
    c = cfg.hidden_size
    for k, key in enumerate(("attn_in", "attn_out", "mlp_in", "mlp_out")):
        axes[1].bar([x - 0.3 + 0.2 * k for x in xs], [w[key] / c for w in widths], width=0.2, label=key)
    axes[1].set(title="Residual channels read / written", xlabel="layer", ylim=(0, 1.05), xticks=xs)
    axes[1].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summarize(report: dict[str, Any]) -> str:
    d, p = report["dense"], report["pruned"]
    acc = report.get("eval", {}).get("accuracy")
    dacc = (report.get("dense_eval") or {}).get("accuracy")
    lines = [
        f"method            {report['method']}",
        f"params            {d['params'] / 1e6:8.3f} M -> {p['params'] / 1e6:8.3f} M "
        f"({100 * report['achieved_param_reduction']:.1f} % removed)",
        f"MACs/image        {d['macs'] / 1e9:8.3f} G -> {p['macs'] / 1e9:8.3f} G "
        f"({100 * report['achieved_mac_reduction']:.1f} % removed)",
    ]
    if acc is not None:
        lines.append(
            f"accuracy          dense {dacc if dacc is None else f'{100 * dacc:.2f} %'} -> pruned "
            f"{100 * acc:.2f} %"
        )
    lines += eval_set_lines(report.get("eval_sets"), report.get("dense_eval_sets"), report.get("domain_gap"))
    from .latency.report import summary_lines

    lines += summary_lines(report.get("latency"))
    if report.get("wall_time_s") is not None:
        lines.append(f"wall time         {report['wall_time_s']:.1f} s")
    return "\n".join(lines)


def eval_set_lines(
    eval_sets: dict[str, Any] | None,
    dense_eval_sets: dict[str, Any] | None = None,
    gap: dict[str, Any] | None = None,
) -> list[str]:
    """Summary lines: accuracy per eval set (dense in brackets when measured) and the domain gap."""
    lines = []
    for name, m in (eval_sets or {}).items():
        d = (dense_eval_sets or {}).get(name) or {}
        dense = f" (dense {100 * d['accuracy']:.2f} %)" if d.get("accuracy") is not None else ""
        lines.append(
            f"  eval {name:<12} {100 * m.get('accuracy', float('nan')):6.2f} % of {m.get('samples')} images"
            f"{dense}"
        )
    if gap:
        change = (
            f", dense {100 * gap['dense_gap']:+.2f} pp, change {100 * gap['gap_change']:+.2f} pp"
            if gap.get("gap_change") is not None
            else ""
        )
        lines.append(
            f"domain gap        {gap['source_set']} - {gap['target_set']} = {100 * gap['gap']:+.2f} pp{change}"
        )
    return lines


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """Per-layer widths + sha256 over every tensor (name, shape, bytes): equal iff the models are equal."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return {"widths": layer_widths(model), "sha256": h.hexdigest()}
