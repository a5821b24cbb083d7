"""Saving pruned models and the common ``pruning_report.json`` every method writes.

Everything is written atomically: into a temporary sibling directory first, then renamed, so a
crash mid-save leaves the previous good state (or nothing) -- never a half-written model dir.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from .cost import count_cost
from .models.families import dense_intermediate_size
from .plan import WidthPlan

REPORT_NAME = "pruning_report.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_staging_dir(target: str | os.PathLike) -> Path:
    """A fresh ``.<name>.staging-<pid>-*`` dir beside ``target``.

    Staging dirs left behind by a killed process (SIGKILL runs no cleanup) are removed first; the pid in
    the name tells whether their owner is still alive, so concurrent ranks never delete each other's.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for old in target.parent.glob(f".{target.name}.staging-*"):
        pid = old.name.rsplit(".staging-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-{os.getpid()}-", dir=target.parent))


def last_complete_checkpoint(folder: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` in ``folder`` that was completely written, or None.

    The Trainer writes ``trainer_state.json`` last; a checkpoint without it was interrupted mid-save
    (transformers' ``get_last_checkpoint`` would pick it anyway and the resume would fail).
    """
    folder = Path(folder)
    done = [(int(d.name.split("-")[1]), d) for d in folder.glob("checkpoint-*")
            if d.name.split("-")[1].isdigit() and (d / "trainer_state.json").is_file()]
    return str(max(done)[1]) if done else None


@contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a staging directory that replaces ``target`` only if the block finishes."""
    target = Path(target)
    staging = make_staging_dir(target)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if target.exists():
        if not overwrite:
            shutil.rmtree(staging, ignore_errors=True)
            raise FileExistsError(f"{target} exists")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_model(model: nn.Module, out: Path, image_processor: Any, plan: WidthPlan | None) -> None:
    model.save_pretrained(out)
    if image_processor is not None:
        image_processor.save_pretrained(out)
    if plan is not None:
        plan.to_json(out / "width_plan.json")


def save_pruned_model(model: nn.Module, output_dir: str | os.PathLike, image_processor: Any = None,
                      plan: WidthPlan | None = None, atomic: bool = True) -> Path:
    """Save a (pruned) model dir: safetensors + config with per-layer widths + the two auto_map code
    files + the image processor + ``width_plan.json``. Loadable with ``AutoModelForImageClassification``."""
    output_dir = Path(output_dir)
    if not atomic:
        output_dir.mkdir(parents=True, exist_ok=True)
        _write_model(model, output_dir, image_processor, plan)
        return output_dir
    with atomic_dir(output_dir) as staging:
        _write_model(model, staging, image_processor, plan)
    return output_dir


def layer_widths(model_or_config: Any) -> list[dict[str, int]]:
    """Per-layer widths of a P3B model/config (or a dense stock config)."""
    cfg = getattr(model_or_config, "config", model_or_config)
    c = cfg.hidden_size
    n = cfg.num_hidden_layers
    if not hasattr(cfg, "layer_num_heads"):
        h = cfg.num_attention_heads
        return [{"heads": h, "head_dim": c // h, "mlp": dense_intermediate_size(cfg), "attn_in": c, "attn_out": c,
                 "mlp_in": c, "mlp_out": c} for _ in range(n)]

    def w(s: list[int] | None) -> int:
        return c if s is None else len(s)

    return [{"heads": cfg.layer_num_heads[i], "head_dim": cfg.layer_head_dims[i],
             "mlp": cfg.layer_intermediate_sizes[i], "attn_in": w(cfg.layer_attn_in[i]),
             "attn_out": w(cfg.layer_attn_out[i]), "mlp_in": w(cfg.layer_mlp_in[i]),
             "mlp_out": w(cfg.layer_mlp_out[i])} for i in range(n)]


def base_report(dense_model: nn.Module, pruned_model: nn.Module, *, method: str, prune_ratio: float | None,
                plan: WidthPlan | None, eval_metrics: dict[str, float] | None,
                dense_eval_metrics: dict[str, float] | None = None, wall_time_s: float | None = None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fields every method reports, so ``p3b-hf compare`` can put runs side by side."""
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
    if extra:
        report.update(extra)
    return report


def _removed(model: nn.Module) -> list[str]:
    cfg = model.config
    out = []
    for i in range(cfg.num_hidden_layers):
        if getattr(cfg, "layer_head_dims", [1] * (i + 1))[i] * getattr(cfg, "layer_num_heads", [1] * (i + 1))[i] == 0:
            out.append(f"attn{i}")
        if getattr(cfg, "layer_intermediate_sizes", [1] * (i + 1))[i] == 0:
            out.append(f"mlp{i}")
    return out


def write_report(output_dir: str | os.PathLike, report: dict[str, Any]) -> Path:
    path = Path(output_dir) / REPORT_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=_json_default))
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
    xs = list(range(n))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    attn = [w["heads"] * w["head_dim"] for w in widths]
    mlp = [w["mlp"] for w in widths]
    dense_attn = cfg.hidden_size if dense_config is None else dense_config.hidden_size
    dense_mlp = dense_intermediate_size(cfg)
    axes[0].bar([x - 0.2 for x in xs], [a / dense_attn for a in attn], width=0.4, label="attention q/k/v width")
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
