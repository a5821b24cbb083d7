"""Run several pruning methods at equal whole-model parameter budgets and put them side by side.

Each (method, ratio) cell is an ordinary ``p3b-hf prune`` run into its own sub-directory, with the
same model, data, seed and training budget (``--epochs`` epochs of training per method: P3B prunes
during them, VBP uses them for its KD fine-tune, global pruning for its fine-tune). A method that
cannot reach a budget (VBP beyond ~62-66 % param reduction) gets an "unreachable" row, not a crash.
An optional dense fine-tune with the same budget gives the reference accuracy.
Results: ``compare.json``, ``compare.csv``, ``compare.md`` and ``accuracy_vs_params.png``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BudgetError, P3BError
from .report import REPORT_NAME

GLOBAL_CRITERIA = ("hessian", "taylor", "l1", "l2", "random")


@dataclass(frozen=True)
class MethodSpec:
    """One entry of ``--methods``: ``p3b``, ``vbp`` or ``global-<criterion>``."""

    label: str
    method: str
    extra: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        name = text.strip().lower()
        if name in ("p3b", "vbp"):
            return cls(name, name)
        if name == "p3b-reference":  # the reference BPI/gate path: its cost and accuracy next to the fast default
            return cls(name, "p3b", ("--reference",))
        if name.startswith("global-") and name.split("-", 1)[1] in GLOBAL_CRITERIA:
            return cls(name, "global", ("--importance", name.split("-", 1)[1]))
        raise P3BError(f"Unknown method {text!r} in --methods; use p3b, p3b-reference, vbp or global-<criterion> "
                       f"with criterion in {', '.join(GLOBAL_CRITERIA)} (e.g. p3b,vbp,global-taylor).")


def parse_methods(text: str) -> list[MethodSpec]:
    specs = [MethodSpec.parse(t) for t in text.split(",") if t.strip()]
    if not specs:
        raise P3BError("--methods is empty; e.g. --methods p3b,vbp,global-taylor")
    return specs


def parse_ratios(text: str) -> list[float]:
    from .pipeline import check_ratio

    try:
        ratios = [float(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise P3BError(f"--prune-ratio {text!r} must be comma-separated numbers, e.g. 0.5,0.75") from e
    for r in ratios:
        check_ratio(r)
    return ratios


def prune_argv(spec: MethodSpec, ratio: float, common: list[str], out: Path, epochs: float) -> list[str]:
    argv = ["prune", "--method", spec.method, *spec.extra, *common, "--prune-ratio", str(ratio),
            "--output-dir", str(out), "--epochs", str(epochs)]
    if spec.method == "vbp":
        argv += ["--vbp-epochs", str(epochs)]
    return argv


def run_cell(argv: list[str], out: Path) -> dict[str, Any]:
    """Run one ``p3b-hf prune``; reuse an existing finished report (so a compare can be resumed)."""
    from .cli import build_parser

    if (out / REPORT_NAME).exists():
        return json.loads((out / REPORT_NAME).read_text())
    args = build_parser().parse_args(argv)
    try:
        code = args._module.run(args)
    except BudgetError as e:
        print(f"p3b-hf compare: {args.method} at --prune-ratio {args.prune_ratio}: unreachable: {e}")
        return {"status": "unreachable", "error": str(e)}
    except P3BError as e:
        print(f"p3b-hf compare: {args.method} at --prune-ratio {args.prune_ratio}: failed: {e}")
        return {"status": "failed", "error": str(e)}
    if code != 0 or not (out / REPORT_NAME).exists():
        return {"status": "failed", "error": f"p3b-hf {' '.join(argv)} exited with {code}"}
    return json.loads((out / REPORT_NAME).read_text())


def throughput_ratio(model_dir: Path, dense: Any, device: str, batch_size: int | None, repeats: int) -> float | None:
    """Images/s of the pruned model over its dense original (eager, same run, medians)."""
    from .bench import run_bench
    from .loading import load_model

    pruned = load_model(str(model_dir))
    rep = run_bench(pruned, dense, device=device, batch_size=batch_size, repeats=repeats, variants=("eager",))
    return rep["ratios"]["pruned_vs_dense"].get("eager")


def row_of(label: str, ratio: float | None, report: dict[str, Any], speed: float | None) -> dict[str, Any]:
    if report.get("status") in ("unreachable", "failed"):
        return {"method": label, "prune_ratio": ratio, "status": report["status"], "error": report["error"]}
    return {
        "method": label, "prune_ratio": ratio, "status": "ok",
        "accuracy": report.get("eval", {}).get("accuracy"),
        "params": report["pruned"]["params"], "macs": report["pruned"]["macs"],
        "param_reduction": report.get("achieved_param_reduction"),
        "throughput_vs_dense": speed, "deploy_speed_vs_dense": None, "wall_time_s": report.get("wall_time_s"),
    }


def write_outputs(out_dir: Path, rows: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))
    fields = ["method", "prune_ratio", "status", "accuracy", "params", "macs", "param_reduction",
              "throughput_vs_dense", "deploy_speed_vs_dense", "wall_time_s", "error"]
    with open(out_dir / "compare.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (out_dir / "compare.md").write_text(markdown_table(rows) + "\n")
    plot_accuracy_vs_params(rows, out_dir / "accuracy_vs_params.png")


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | target ratio | top-1 (%) | params (M) | param reduction | GMACs | speed vs dense (eager) | "
             "deployable speed vs dense | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['method']} | {_fmt(r['prune_ratio'], '.2f')} | {r['status']}: "
                         f"{r['error'].splitlines()[0][:90]} | | | | | | |")
            continue
        acc = None if r["accuracy"] is None else 100 * r["accuracy"]
        red = None if r["param_reduction"] is None else 100 * r["param_reduction"]
        lines.append(f"| {r['method']} | {_fmt(r['prune_ratio'], '.2f')} | {_fmt(acc, '.2f')} | "
                     f"{r['params'] / 1e6:.3f} | {_fmt(red, '.1f')} % | {r['macs'] / 1e9:.3f} | "
                     f"{_fmt(r['throughput_vs_dense'], '.2f')}× | {_fmt(r.get('deploy_speed_vs_dense'), '.2f')}× | "
                     f"{_fmt(r['wall_time_s'], '.0f')} |")
    return "\n".join(lines)


def plot_accuracy_vs_params(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    by_method: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r["status"] == "ok" and r["accuracy"] is not None:
            by_method.setdefault(r["method"], []).append((r["params"] / 1e6, 100 * r["accuracy"]))
    for method, pts in sorted(by_method.items()):
        pts.sort()
        style = "*" if method == "dense" else "o-"
        ax.plot([p for p, _ in pts], [a for _, a in pts], style, label=method, markersize=10 if method == "dense"
                else 6)
    ax.set(xlabel="parameters (M)", ylabel="top-1 accuracy (%)", title="Accuracy vs parameters at equal budgets")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def dense_row(common: list[str], out: Path, epochs: float) -> dict[str, Any]:
    """Fine-tune the dense model with the same budget (``p3b-hf finetune --new-head``)."""
    from .cli import main

    report_path = out / REPORT_NAME
    if not report_path.exists():
        keep = _finetune_flags(common)
        code = main(["finetune", *keep, "--new-head", "--output-dir", str(out), "--epochs", str(epochs)])
        if code != 0:
            return {"method": "dense", "prune_ratio": 0.0, "status": "failed", "error": f"finetune exited {code}"}
    rep = json.loads(report_path.read_text()) if report_path.exists() else {}
    ft = rep.get("finetune", rep)
    acc = (ft.get("eval") or {}).get("accuracy")
    from .cost import count_cost
    from .loading import load_config

    cost = count_cost(load_config(str(out)))
    return {"method": "dense", "prune_ratio": 0.0, "status": "ok", "accuracy": acc, "params": cost["params"],
            "macs": cost["macs"], "param_reduction": 0.0, "throughput_vs_dense": 1.0, "deploy_speed_vs_dense": 1.0,
            "wall_time_s": ft.get("wall_time_s", ft.get("train_time_s"))}


_FINETUNE_FLAGS = {"--model", "--dataset", "--image-column", "--label-column", "--train-split", "--eval-split",
                   "--max-train-samples", "--max-eval-samples", "--batch-size", "--lr", "--weight-decay", "--seed",
                   "--bf16", "--fp16", "--device", "--num-workers", "--augment", "--mixup", "--cutmix",
                   "--label-smoothing"}


def _finetune_flags(common: list[str]) -> list[str]:
    """The subset of the common prune flags that ``p3b-hf finetune`` understands."""
    out, i = [], 0
    while i < len(common):
        flag = common[i]
        takes_value = i + 1 < len(common) and not common[i + 1].startswith("--")
        if flag in _FINETUNE_FLAGS:
            out += common[i:i + 1 + takes_value]
        i += 1 + takes_value
    return out


def env_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
