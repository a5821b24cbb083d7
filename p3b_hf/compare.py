"""Run several pruning methods at equal whole-model parameter budgets and put them side by side.

Each (method, ratio) cell is an ordinary pruning run (:func:`p3b_hf.runner.prune`, what ``p3b-hf prune``
runs) into its own sub-directory, with the same data, seed and training budget (``--epochs`` epochs of training per method: P3B prunes
during them, VBP uses them for its KD fine-tune, global pruning for its fine-tune). A method that
cannot reach a budget (VBP beyond ~62-66 % param reduction) gets an "unreachable" row, not a crash; a
method that is not defined for the model's family (P3B on Swin / ConvNeXt) an "unsupported" row.

What a cell starts from: P3B prunes *while* it fine-tunes, so it starts from the source model (with a
fresh head for the target labels). VBP is a *post-training* method: it prunes a model already trained on
the task and distils from it, so it starts from the dense cell (``OUT/dense``: the source model
fine-tuned like ``p3b-hf finetune --new-head`` for ``--epochs``, trained once and reused) and uses that
model as its KD teacher. Global pruning starts from the source model by default (its fine-tune trains the
new head) or from the dense cell with ``--global-from dense``. Every row says what it started from
(``start``) and how many epochs of training it had in all (``epochs_total``: its own plus the dense
cell's when it started from it). The dense cell is trained when ``--dense-baseline`` is given or when a
method starts from it, and its row is shown whenever it was trained.
Results: ``compare.json``, ``compare.csv``, ``compare.md`` and ``accuracy_vs_params.png``.

Domains (docs/data.md "Domains"): with several eval sets (``--test-domains``, ``--eval-split a,b``) every row
carries the accuracy on each (one table column and one plot panel per set), the source-vs-target gap and
its change against the dense row. ``--protocol lodo`` runs the whole compare once per held-out domain
(``OUT/<domain>/``, dense cell included; finished cells are reused on re-runs) and averages over the
domains as the DG papers' tables do: one column per held-out domain, their mean, the mean gap.
``--budget channels`` gives global-* cells Torch-Pruning channel ratios (arXiv 2504.04196's 50/75/95 %)
instead of whole-model parameter fractions.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BudgetError, P3BError, UnsupportedModelError
from .latency.options import LatencyOptions
from .options import DataOptions, KDOptions, OutputOptions, PruneOptions, TrainOptions, option
from .report import REPORT_NAME, portable

PROTOCOLS = ("single", "lodo")
BUDGETS = ("params", "channels", "latency")
#: how the budget refusal names each budget
BUDGET_TEXT = {
    "params": "whole-model parameter fractions",
    "channels": "Torch-Pruning channel ratios",
    "latency": "speed-up targets",
}


def _labels_text(method: Any) -> str:
    """A method's ``--methods`` labels in an error: ``global-*`` when all of them are ``NAME-<variant>``."""
    labels = list(method.compare_labels())
    if len(labels) > 1 and all(label.startswith(f"{method.name}-") for label in labels):
        return f"{method.name}-*"
    return ", ".join(labels)


GLOBAL_CRITERIA = ("hessian", "taylor", "l1", "l2", "random")
START_SOURCE, START_DENSE = "source", "dense"  # what a cell prunes: the --model, or the dense cell OUT/dense


def compare_labels() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every ``--methods`` entry -> (registered method, option overrides of its cells), from the methods'
    declared ``compare_labels`` (:class:`~p3b_hf.methods.MethodTraits`): ``p3b``, ``p3b-reference``,
    ``vbp``, ``global-<criterion>``, and each plug-in's own name."""
    from .methods import all_methods

    return {label: (m.name, over) for m in all_methods() for label, over in m.compare_labels().items()}


@dataclass(frozen=True)
class MethodSpec:
    """One entry of ``--methods``: a label a registered method declares (``p3b``, ``p3b-reference`` = P3B with
    ``reference=True``, ``vbp``, ``global-<criterion>``, or the name of one added with
    :func:`~p3b_hf.methods.register_method`). ``overrides`` are set on the method's options for this cell."""

    label: str
    method: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        name = text.strip().lower()
        labels = compare_labels()
        if name in labels:
            method, over = labels[name]
            return cls(name, method, tuple(over.items()))
        raise P3BError(
            f"Unknown method {text!r} in --methods; use one of {', '.join(labels)} (e.g. p3b,vbp,global-taylor)."
        )

    @property
    def traits(self) -> Any:
        from .methods import get_method

        return get_method(self.method).traits

    def options(self, base: Any, epochs: float) -> Any:
        """The cell's method options: ``base`` (what the user set for this method) with the spec's overrides;
        a method's own fine-tune length (its ``epochs_option``, VBP's ``vbp_epochs``) gets the compare's
        epochs."""
        extra = dict(self.overrides)
        if self.traits.epochs_option:
            extra[self.traits.epochs_option] = epochs
        return dataclasses.replace(base, **extra) if extra else base

    def start(self, global_from: str = START_SOURCE) -> str:
        """The model this method's cells prune: ``"dense"`` (the dense cell, fine-tuned on the task) or
        ``"source"`` (``--model``, whose head ``p3b-hf prune`` replaces for the target labels).

        A post-training method (VBP) always starts from the dense cell: from the source model it would distil
        from a random head. One that prunes during fine-tuning (P3B) starts from the source. One whose start
        is optional (global pruning) follows ``--global-from``.
        """
        traits = self.traits
        if traits.post_training or (traits.dense_start_optional and global_from == START_DENSE):
            return START_DENSE
        return START_SOURCE


def compare_sets() -> dict[str, str]:
    """Method options a compare sets itself in every cell, and why a user's value cannot act (each method's
    ``epochs_option``: ``--vbp-epochs``)."""
    from .methods import all_methods

    return {
        m.traits.epochs_option: (
            f"every cell trains --epochs ({m.display}'s {'' if m.traits.kd == 'none' else 'KD '}fine-tune too)"
        )
        for m in all_methods()
        if m.traits.epochs_option
    }


def check_given(given: Any) -> None:
    """Refuse, as one :class:`~p3b_hf.errors.OptionsError`, an option given to ``compare`` that the compare
    overrides in every cell (``--vbp-epochs``: the cells train ``--epochs``)."""
    from .errors import OptionsError

    given = {str(g).replace("-", "_") for g in given}
    for name, why in compare_sets().items():
        if name in given:
            raise OptionsError(f"--{name.replace('_', '-')} is not used by compare: {why}.")


def parse_methods(text: str) -> list[MethodSpec]:
    specs = [MethodSpec.parse(t) for t in text.split(",") if t.strip()]
    if not specs:
        raise P3BError("--methods is empty; e.g. --methods p3b,vbp,global-taylor")
    return specs


def parse_ratios(text: str) -> list[float]:
    try:
        ratios = [float(t) for t in str(text).split(",") if t.strip()]
    except ValueError as e:
        raise P3BError(f"--prune-ratio {text!r} must be comma-separated numbers, e.g. 0.5,0.75") from e
    for r in ratios:
        PruneOptions(model="", prune_ratio=r).check()
    return ratios


def started_from(report: dict[str, Any], cell: Path | None = None) -> str | None:
    """The model a finished cell was made from (``p3b-hf finetune`` / ``p3b-hf prune`` reports). Reports name
    local models without their machine path (:func:`p3b_hf.report.portable`); a pruned cell's config.json keeps
    the resolved ``base_model_name_or_path``, which is preferred when there is one."""
    if "finetune" in report:  # the dense cell: a finetune report (possibly on top of the input's report)
        return report["finetune"].get("source_model")
    config = cell / "config.json" if cell is not None else None
    if config is not None and config.exists():
        base = json.loads(config.read_text()).get("base_model_name_or_path")
        if base:
            return str(base)
    return report.get("base_model")


def _same_model(a: str, b: str) -> bool:
    """``a`` (recorded) and ``b`` are the same model: equal, the same resolved path, or ``a`` is the bare name a
    report records for the local path ``b``."""
    if a == b or Path(a).resolve() == Path(b).resolve():
        return True
    return len(Path(a).parts) == 1 and Path(b).exists() and Path(b).resolve().name == a


def _domains_of(report: dict[str, Any]) -> dict[str, Any] | None:
    return report.get("domains") or (report.get("finetune") or {}).get("domains")


def _norm_list(names: Any) -> list[str] | None:
    from .data import norm_domain

    return None if not names else [norm_domain(n) for n in names]


def check_reusable(cell: Path, start_model: str, data: DataOptions | None = None) -> None:
    """Refuse to reuse a finished cell that was made from another model than this compare would start it
    from (e.g. a VBP cell from an older compare that pruned the source model, or a global cell after
    ``--global-from`` changed), or on other domains than ``data`` asks for (held out / trained on): its row
    would silently describe another experiment. Called for every cell before any training, so a refusal
    leaves nothing half-done."""
    path = cell / REPORT_NAME
    if not path.exists():
        return
    report = json.loads(path.read_text())
    made_from = started_from(report, cell)
    if made_from is not None and not _same_model(made_from, start_model):
        raise P3BError(
            f"{cell} holds a finished run made from {made_from}, but this compare starts that cell "
            f"from {start_model}; delete {cell} to recompute it, or use another --output-dir."
        )
    if data is None:
        return
    made = _domains_of(report) or {}
    for key, wanted, what in (
        ("test", data.test_domains, "held out"),
        ("train", data.train_domains, "trained on"),
    ):
        expect_none = not data.test_domains and not data.train_domains
        if (wanted or expect_none) and _norm_list(made.get(key)) != _norm_list(wanted):
            raise P3BError(
                f"{cell} holds a finished run that {what} domains {made.get(key) or 'none'}, but this "
                f"compare's cell has {wanted or 'none'}; delete {cell} to recompute it, or use another "
                "--output-dir."
            )


def own_epochs(report: dict[str, Any], default: float) -> float:
    """Training epochs of the cell itself, as its report records them (``default``: P3B, whose report
    does not; the compare passes it ``--epochs``)."""
    ft = report.get("finetune") or (report.get("history") or {}).get("finetune") or {}
    return float(ft.get("epochs", default))


def start_label(start: str, dense_epochs: float | None) -> str:
    """The ``start`` column: ``source`` or ``dense (fine-tuned N ep)``."""
    if start == START_DENSE:
        return f"dense (fine-tuned {dense_epochs:g} ep)" if dense_epochs is not None else "dense"
    return START_SOURCE


#: cell statuses without a pruned model: a budget the method cannot reach, a method not defined for this model's
#: family (P3B on Swin / ConvNeXt), or any other refused input / failed run
NOT_OK = ("unreachable", "unsupported", "failed")


def run_cell(job: Any) -> dict[str, Any]:
    """Run one cell (a :class:`~p3b_hf.runner.PruneJob`); reuse an existing finished report (so a compare can
    be resumed). An unreachable budget or a refused input becomes a row, not a crash."""
    from .runner import prune
    from .runtime import barrier

    out = Path(job.output.output_dir)
    if (out / REPORT_NAME).exists() and not job.output.overwrite:
        return json.loads((out / REPORT_NAME).read_text())
    ratio = (
        job.prune.prune_ratio
        if job.prune.prune_ratio is not None
        else getattr(job.method_options, "ratio", None)
    )
    what = f"{job.prune.method} at --prune-ratio {ratio}"
    latency = getattr(job, "latency", None)
    if latency is not None and latency.active:
        what = f"{job.prune.method} at --target-speedup {latency.target_speedup}"
    try:
        report = prune(job).report
        barrier()  # under DDP the main process writes the cell: the others wait until it is there
        return report
    except BudgetError as e:
        print(f"p3b-hf compare: {what}: unreachable: {e}")
        return {"status": "unreachable", "error": str(e)}
    except UnsupportedModelError as e:
        print(f"p3b-hf compare: {what}: unsupported: {e}")
        return {"status": "unsupported", "error": str(e)}
    except P3BError as e:
        print(f"p3b-hf compare: {what}: failed: {e}")
        return {"status": "failed", "error": str(e)}


def throughput_ratio(
    model_dir: Path, dense: Any, device: str, batch_size: int | None, repeats: int
) -> float | None:
    """Images/s of the pruned model over its dense original (eager, same run, medians)."""
    from .bench import run_bench
    from .loading import load_model

    pruned = load_model(str(model_dir))
    rep = run_bench(pruned, dense, device=device, batch_size=batch_size, repeats=repeats, variants=("eager",))
    return rep["ratios"]["pruned_vs_dense"].get("eager")


def eval_set_fields(report: dict[str, Any]) -> dict[str, Any]:
    """A report's accuracy per eval set and its domain gap, as row fields (``{}`` with one eval set).
    A fine-tune report's own section wins over the prune report it extends."""
    ft = report.get("finetune") or {}
    sets = ft.get("eval_sets") if "finetune" in report else report.get("eval_sets")
    if not sets:
        return {}
    gap = (ft.get("domain_gap") if "finetune" in report else report.get("domain_gap")) or {}
    return {
        "eval_sets": {name: m.get("accuracy") for name, m in sets.items()},
        "source_set": gap.get("source_set"),
        "target_set": gap.get("target_set"),
        "gap": gap.get("gap"),
    }


def row_of(
    label: str,
    ratio: float | None,
    report: dict[str, Any],
    speed: float | None,
    *,
    start: str = START_SOURCE,
    epochs_total: float | None = None,
) -> dict[str, Any]:
    """One table row; ``start`` / ``epochs_total`` say what the cell started from and its training in all;
    with several eval sets, ``eval_sets`` (accuracy per set; ``accuracy`` is the primary one's) and ``gap``."""
    if report.get("status") in NOT_OK:
        return {
            "method": label,
            "prune_ratio": ratio,
            "status": report["status"],
            "start": start,
            "epochs_total": None,
            "error": report["error"],
        }
    return {
        "method": label,
        "prune_ratio": ratio,
        "status": "ok",
        "start": start,
        "epochs_total": epochs_total,
        "accuracy": report.get("eval", {}).get("accuracy"),
        "params": report["pruned"]["params"],
        "macs": report["pruned"]["macs"],
        "param_reduction": report.get("achieved_param_reduction"),
        "throughput_vs_dense": speed,
        "deploy_speed_vs_dense": None,
        "wall_time_s": report.get("wall_time_s"),
        **eval_set_fields(report),
    }


def add_gap_change(rows: list[dict[str, Any]]) -> None:
    """``gap_change``: each row's source-vs-target gap minus the dense row's (> 0: pruning widened it)."""
    dense = next((r for r in rows if r["method"] == "dense" and r["status"] == "ok"), None)
    base = dense.get("gap") if dense else None
    for r in rows:
        if r["status"] == "ok" and r.get("gap") is not None and base is not None:
            r["gap_change"] = r["gap"] - base


CSV_FIELDS = [
    "method",
    "prune_ratio",
    "status",
    "start",
    "epochs_total",
    "accuracy",
    "params",
    "macs",
    "param_reduction",
    "throughput_vs_dense",
    "deploy_speed_vs_dense",
    "wall_time_s",
    "error",
]
GAP_FIELDS = ["source_accuracy", "gap", "gap_change"]


def eval_set_names(rows: list[dict[str, Any]]) -> list[str]:
    """Every eval set named by a row, in first-seen order (the primary set first)."""
    names: list[str] = []
    for r in rows:
        for name in r.get("eval_sets") or {}:
            if name not in names:
                names.append(name)
    return names


def write_outputs(out_dir: Path, rows: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    from .runtime import is_main_process

    if not is_main_process():
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(
        json.dumps(portable({"settings": settings, "rows": rows}), indent=1)
    )
    sets = eval_set_names(rows)
    fields = CSV_FIELDS + [f"accuracy[{n}]" for n in sets] + (["gap", "gap_change"] if sets else [])
    if any("target_speedup" in r for r in rows):
        from .latency.report import ROW_FIELDS

        fields += ROW_FIELDS
    with open(out_dir / "compare.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(
            {**r, **{f"accuracy[{n}]": (r.get("eval_sets") or {}).get(n) for n in sets}} for r in rows
        )
    (out_dir / "compare.md").write_text(markdown_table(rows) + "\n")
    plot_accuracy_vs_params(rows, out_dir / "accuracy_vs_params.png")


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _pct(v: float | None, spec: str = ".2f") -> str:
    return _fmt(None if v is None else 100 * v, spec)


def _pp(v: float | None) -> str:
    return _fmt(None if v is None else 100 * v, "+.2f")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """``compare.md``: one line per row; ``start`` and ``epochs (total)`` say what each cell started from and
    how much training it had in all (a cell started from the dense cell also had the dense cell's epochs).
    With several eval sets: one accuracy column per set, the source-vs-target gap and its change against the
    dense row (percentage points). Rows of ``--protocol lodo`` get :func:`lodo_table`."""
    if any("per_domain" in r for r in rows):
        return lodo_table(rows)
    sets = eval_set_names(rows)
    acc_heads = [f"{n} (%)" for n in sets] + ["gap (pp)", "Δgap vs dense (pp)"] if sets else ["top-1 (%)"]
    heads = [
        "method",
        "target ratio",
        "start",
        "epochs (total)",
        *acc_heads,
        "params (M)",
        "param reduction",
        "GMACs",
        "speed vs dense (eager)",
        "deployable speed vs dense",
        "wall (s)",
    ]
    latency = any("target_speedup" in r for r in rows)
    if latency:
        from .latency.report import TABLE_HEADS, table_cells

        heads += TABLE_HEADS
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        head = (
            f"| {r['method']} | {_fmt(r['prune_ratio'], '.2f')} | {r.get('start') or '–'} | "
            f"{_fmt(r.get('epochs_total'), 'g')} |"
        )
        if r["status"] != "ok":
            lines.append(
                f"{head} {r['status']}: {r['error'].splitlines()[0][:90]} |" + " |" * (len(heads) - 5)
            )
            continue
        if sets:
            accs = [_pct((r.get("eval_sets") or {}).get(n)) for n in sets] + [
                _pp(r.get("gap")),
                _pp(r.get("gap_change")),
            ]
        else:
            accs = [_pct(r["accuracy"])]
        red = None if r["param_reduction"] is None else 100 * r["param_reduction"]
        lines.append(
            f"{head} {' | '.join(accs)} | "
            f"{r['params'] / 1e6:.3f} | {_fmt(red, '.1f')} % | {r['macs'] / 1e9:.3f} | "
            f"{_fmt(r['throughput_vs_dense'], '.2f')}× | {_fmt(r.get('deploy_speed_vs_dense'), '.2f')}× | "
            f"{_fmt(r['wall_time_s'], '.0f')} |" + (table_cells(r) if latency else "")
        )
    return "\n".join(lines)


def lodo_table(rows: list[dict[str, Any]]) -> str:
    """The leave-one-domain-out table: one column per held-out domain (the accuracy on it when it was held
    out), their mean, the mean in-domain ``source`` accuracy, the mean gap and its change vs dense."""
    domains = list(next((r["per_domain"] for r in rows if r.get("per_domain")), {}))
    heads = [
        "method",
        "target ratio",
        "params (M)",
        "param reduction",
        *[f"{d} (%)" for d in domains],
        "avg (%)",
        "source avg (%)",
        "gap (pp)",
        "Δgap vs dense (pp)",
        "speed vs dense (eager)",
        "deployable speed vs dense",
    ]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        head = f"| {r['method']} | {_fmt(r['prune_ratio'], '.2f')} |"
        if r["status"] != "ok":
            lines.append(
                f"{head} {r['status']}: {r['error'].splitlines()[0][:90]} |" + " |" * (len(heads) - 3)
            )
            continue
        red = None if r["param_reduction"] is None else 100 * r["param_reduction"]
        cells = [
            f"{r['params'] / 1e6:.3f}",
            f"{_fmt(red, '.1f')} %",
            *[_pct(r["per_domain"].get(d)) for d in domains],
            _pct(r["accuracy"]),
            _pct(r.get("source_accuracy")),
            _pp(r.get("gap")),
            _pp(r.get("gap_change")),
            f"{_fmt(r.get('throughput_vs_dense'), '.2f')}×",
            f"{_fmt(r.get('deploy_speed_vs_dense'), '.2f')}×",
        ]
        lines.append(f"{head} {' | '.join(cells)} |")
    return "\n".join(lines)


def _panels_of(rows: list[dict[str, Any]]) -> list[tuple[str, list[tuple[str, float, float]]]]:
    """Plot panels: ``(title, [(method, params in M, accuracy in %)])``; one per held-out domain and the
    average (lodo), one per eval set (several sets), else one."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("params") is not None]
    if any("per_domain" in r for r in rows):
        domains = list(next((r["per_domain"] for r in rows if r.get("per_domain")), {}))
        keys = [(f"held out: {d}", lambda r, d=d: r["per_domain"].get(d)) for d in domains]
        keys.append(("average over held-out domains", lambda r: r.get("accuracy")))
    elif eval_set_names(rows):
        keys = [
            (f"eval set: {n}", lambda r, n=n: (r.get("eval_sets") or {}).get(n)) for n in eval_set_names(rows)
        ]
    else:
        keys = [("", lambda r: r.get("accuracy"))]
    panels = []
    for title, get in keys:
        pts = [(r["method"], r["params"] / 1e6, 100 * get(r)) for r in ok if get(r) is not None]
        panels.append((title, pts))
    return panels


def plot_accuracy_vs_params(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy vs parameters per method; one panel per held-out domain / eval set when there are several."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels_of(rows)
    n = len(panels)
    cols = min(n, 3)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(6.4 * cols if n == 1 else 4.6 * cols, 4.4 * nrows), squeeze=False
    )
    for ax, (title, pts) in zip(axes.flat, panels, strict=False):
        by_method: dict[str, list[tuple[float, float]]] = {}
        for method, params, acc in pts:
            by_method.setdefault(method, []).append((params, acc))
        for method, mpts in sorted(by_method.items()):
            mpts.sort()
            style = "*" if method == "dense" else "o-"
            ax.plot(
                [p for p, _ in mpts],
                [a for _, a in mpts],
                style,
                label=method,
                markersize=10 if method == "dense" else 6,
            )
        ax.set(
            xlabel="parameters (M)",
            ylabel="top-1 accuracy (%)",
            title=title or "Accuracy vs parameters at equal budgets",
        )
        ax.grid(alpha=0.3)
        if by_method:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def dense_row(job: CompareJob, out: Path) -> dict[str, Any]:
    """The dense cell: the source model fine-tuned on the task with the same data and training options
    (:func:`p3b_hf.runner.finetune` with a new head) into ``out``, or ``out`` reused when it is there. It is
    the reference accuracy and the start model and KD teacher of the post-training methods.
    ``epochs_total`` is the epochs its report records (a reused cell may have had another ``--epochs``)."""
    from .options import FinetuneOptions
    from .runner import FinetuneJob, finetune

    report_path = out / REPORT_NAME
    if not report_path.exists() or job.output.overwrite:
        try:
            finetune(
                FinetuneJob(
                    finetune=FinetuneOptions(model=job.compare.model, new_head=True),
                    data=job.data,
                    output=dataclasses.replace(job.output, output_dir=str(out), overwrite=True),
                    train=job.train,
                )
            )
        except P3BError as e:
            return {
                "method": "dense",
                "prune_ratio": 0.0,
                "status": "failed",
                "start": START_SOURCE,
                "epochs_total": None,
                "error": f"dense fine-tune failed: {e}",
            }
    rep = json.loads(report_path.read_text())
    ft = rep.get("finetune", rep)
    acc = (ft.get("eval") or {}).get("accuracy")
    from .cost import count_cost
    from .loading import load_config

    cost = count_cost(load_config(str(out)))
    sets = eval_set_fields(rep)
    if sets:  # the primary set's accuracy as measured with the others (one eval loop for every column)
        acc = next(iter(sets["eval_sets"].values()))
    return {
        "method": "dense",
        "prune_ratio": 0.0,
        "status": "ok",
        "start": START_SOURCE,
        "epochs_total": own_epochs(rep, job.train.epochs),
        "accuracy": acc,
        "params": cost["params"],
        "macs": cost["macs"],
        "param_reduction": 0.0,
        "throughput_vs_dense": 1.0,
        "deploy_speed_vs_dense": 1.0,
        "wall_time_s": ft.get("wall_time_s", ft.get("train_time_s")),
        **sets,
    }


def relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


# ============================================================================ the compare run
@dataclass
class CompareOptions:
    """What ``p3b-hf compare`` adds to the common data / training / distillation options and the methods' own."""

    model: str = option(help="source model dir or Hub id (every cell starts from it or from the dense cell)")
    methods: str = option(
        "p3b,vbp,global-taylor,global-hessian",
        help="comma list of p3b, p3b-reference (P3B with --reference: the reference BPI/gate "
        "path), vbp, global-<hessian|taylor|l1|l2|random>, or a registered method",
    )
    prune_ratio: str = option("0.5,0.75", help="comma list of whole-model parameter fractions to remove")
    dense_baseline: bool = option(
        False,
        help="also fine-tune the dense model with the same budget (reference "
        "accuracy); the dense cell is trained anyway when a method starts "
        "from it (vbp, --global-from dense)",
    )
    global_from: str = option(
        START_SOURCE,
        choices=(START_SOURCE, START_DENSE),
        help="what global-* cells prune: the --model (source, default; their fine-tune "
        "trains the new head) or the dense cell fine-tuned on the task (dense). VBP, a "
        "post-training method, always starts from the dense cell and distils from it",
    )
    pad_to: int | None = option(
        None, metavar="N", help="save every pruned cell zero-padded to multiples of N"
    )
    bench_device: str = option(
        "auto", choices=("auto", "cpu", "cuda"), help="where the speed column is measured"
    )
    bench_batch_size: int | None = option(None, help="throughput batch (default: 1024 on GPU, 1 on CPU)")
    bench_repeats: int = option(5, help="timed repeats of the speed column (median)")
    no_bench: bool = option(False, help="skip the throughput measurement")
    deploy_backend: str = option(
        "auto",
        choices=("auto", "onnxruntime", "fast", "none"),
        help="deployable path of the deploy_speed_vs_dense column (CPU, batch "
        "--bench-batch-size or 1): ONNX Runtime fp32 of the folded export when "
        "installed (auto), optimize_for_inference (fast), or none",
    )
    protocol: str = option(
        "single",
        choices=PROTOCOLS,
        help="single: one compare on the data as given; lodo: leave-one-domain-out -- the whole "
        "compare once per held-out domain (needs a domain column: --domain-column, or a "
        "preset such as pacs; --test-domains picks the domains held out, default all), dense cell included, averaged over domains",
    )
    budget: str = option(
        "params",
        choices=BUDGETS,
        help="what --prune-ratio means: params (fraction of whole-model parameters, every method) "
        "or channels (Torch-Pruning's channel ratio, as arXiv 2504.04196 reports its "
        "50/75/95 %%; global-* cells only); latency: cells at the --target-speedups instead "
        "(measured on --speed-backend / --speed-device; docs/latency.md)",
    )
    target_speedups: str | None = option(
        None,
        help="--budget latency: comma list of speed-up targets of the deployed model, e.g. 2,3 "
        "(default: --target-speedup)",
    )


@dataclass
class CompareJob:
    """Everything a compare needs. ``method_options``: per registered method name, the options its cells
    start from (e.g. ``{"p3b": P3BConfig(update_every=10)}``); missing = the method's defaults."""

    compare: CompareOptions
    data: DataOptions
    output: OutputOptions
    train: TrainOptions = dataclasses.field(default_factory=TrainOptions)
    kd: KDOptions = dataclasses.field(default_factory=KDOptions)
    method_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    latency: LatencyOptions = dataclasses.field(default_factory=LatencyOptions)


def latency_targets(job: CompareJob) -> list[float]:
    """``--budget latency``: the speed-up of every cell (``--target-speedups``, else ``--target-speedup``)."""
    c = job.compare
    if c.target_speedups:
        try:
            values = [float(t) for t in str(c.target_speedups).split(",") if t.strip()]
        except ValueError as e:
            raise P3BError(
                f"--target-speedups {c.target_speedups!r} must be comma-separated numbers, e.g. 2,3"
            ) from e
    elif job.latency.target_speedup is not None:
        values = [float(job.latency.target_speedup)]
    else:
        raise P3BError("--budget latency needs --target-speedups (e.g. 2,3) or --target-speedup.")
    for v in values:
        dataclasses.replace(job.latency, target_speedup=v, target_latency_ms=None).check()
    if c.protocol == "lodo":
        raise P3BError(
            "--budget latency runs with --protocol single only; run one compare per held-out domain."
        )
    return values


def cell_job(job: CompareJob, spec: MethodSpec, ratio: float, cell: Path, start_model: str | None) -> Any:
    """The :class:`~p3b_hf.runner.PruneJob` of one cell. ``start_model``: prune that model instead of the
    source (the dense cell); a post-training method that distils from its input (VBP) then also distils from it
    unless the user gave a teacher."""
    from .methods import get_method
    from .runner import PruneJob

    method = get_method(spec.method)
    base = job.method_options.get(spec.method) or method.options()
    kd = job.kd
    if method.traits.kd == "none":  # a method that does not distil (global): the KD options are others'
        kd = KDOptions()
    if (
        method.traits.post_training
        and method.traits.kd == "input"
        and start_model is not None
        and not kd.teacher
    ):
        kd = dataclasses.replace(kd, teacher=start_model)  # VBP distils from the dense cell it prunes
    options = spec.options(base, job.train.epochs)
    prune_ratio: float | None = ratio
    if (
        job.compare.budget == "channels"
    ):  # Torch-Pruning's channel ratio (global cells; checked in run_compare)
        options = dataclasses.replace(options, ratio=ratio, target_params=None)
        prune_ratio = None
    latency = LatencyOptions()
    if job.compare.budget == "latency":  # ``ratio`` is the cell's speed-up target
        latency = dataclasses.replace(job.latency, target_speedup=ratio, target_latency_ms=None)
        prune_ratio = None
    return PruneJob(
        prune=PruneOptions(
            model=start_model or job.compare.model,
            method=spec.method,
            prune_ratio=prune_ratio,
            pad_to=job.compare.pad_to,
        ),
        data=job.data,
        output=dataclasses.replace(job.output, output_dir=str(cell)),
        train=job.train,
        kd=kd,
        method_options=options,
        latency=latency,
    )


def _cells(job: CompareJob) -> tuple[list[tuple[float, MethodSpec, str, Path]], Path, list[str], bool]:
    """``(cells, dense dir, labels of methods started from the dense cell, whether the dense cell is needed)``;
    refuses bad options and finished cells that describe another experiment (before any training)."""
    c = job.compare
    specs = parse_methods(c.methods)
    latency = c.budget == "latency"
    ratios = latency_targets(job) if latency else parse_ratios(c.prune_ratio)
    other = [s.label for s in specs if c.budget not in s.traits.budgets]
    if other:
        from .methods import all_methods

        able = [_labels_text(m) for m in all_methods() if c.budget in m.traits.budgets]
        raise P3BError(
            f"--budget {c.budget} ({BUDGET_TEXT[c.budget]}) applies to {', '.join(able) or 'no'} cells only, "
            f"not {', '.join(other)}; compare those at whole-model parameter budgets (--budget params)."
        )
    out_dir = Path(job.output.output_dir)
    dense_dir = out_dir / "dense"
    cells = [
        (
            ratio,
            spec,
            spec.start(c.global_from),
            out_dir / (f"{spec.label}-x{ratio:g}" if latency else f"{spec.label}-{round(100 * ratio)}"),
        )
        for ratio in ratios
        for spec in specs
    ]
    from_dense = sorted({spec.label for _, spec, start, _ in cells if start == START_DENSE})
    need_dense = c.dense_baseline or bool(from_dense)
    # a finished cell made from another model (or other held-out domains) than it would be made from now is
    # refused before any training (--overwrite: every cell is recomputed instead of reused)
    if not job.output.overwrite:
        if need_dense:
            check_reusable(dense_dir, c.model, job.data)
        for _, _, start, cell in cells:
            check_reusable(cell, str(dense_dir) if start == START_DENSE else c.model, job.data)
    return cells, dense_dir, from_dense, need_dense


def run_compare(job: CompareJob) -> list[dict[str, Any]]:
    """Every method x ratio cell (and the dense cell when needed): rows, written as ``compare.json`` /
    ``.csv`` / ``.md`` and ``accuracy_vs_params.png`` into ``job.output.output_dir`` after every cell.
    ``--protocol lodo``: :func:`run_lodo`."""
    from .loading import load_config, load_model
    from .models.locator import require_supported_config

    config = load_config(job.compare.model)
    require_supported_config(config)  # before any cell runs or any file is written
    from .padding import check_pad_to

    check_pad_to(config, job.compare.pad_to)
    if job.compare.protocol == "lodo":
        return run_lodo(job)
    from .runtime import resolve_device

    c = job.compare
    job.train.check()
    cells, dense_dir, from_dense, need_dense = _cells(job)
    out_dir = Path(job.output.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(c.bench_device)
    dense = None if c.no_bench else load_model(c.model)
    deploy = None
    if dense is not None and c.deploy_backend != "none":
        from .export import DeploySpeed  # the deployable artefact's speed, beside the eager module's

        deploy = DeploySpeed(
            dense, batch_size=c.bench_batch_size or 1, repeats=c.bench_repeats, backend=c.deploy_backend
        )
    settings = {
        "compare": dataclasses.asdict(c),
        "data": dataclasses.asdict(job.data),
        "train": dataclasses.asdict(job.train),
        "kd": dataclasses.asdict(job.kd),
    }
    rows: list[dict[str, Any]] = []
    dense_epochs = None
    if need_dense:
        if from_dense:
            why = "" if c.dense_baseline else " (trained although --dense-baseline was not given)"
            print(
                f"p3b-hf compare: {', '.join(from_dense)} start from the dense cell {dense_dir}, the model "
                f"fine-tuned on this task, trained once and reused{why}"
            )
        dense_cell = dense_row(job, dense_dir)
        rows.append(dense_cell)
        dense_epochs = dense_cell["epochs_total"] if dense_cell["status"] == "ok" else None
    for ratio, spec, start, cell in cells:
        from_dense_cell = start == START_DENSE
        if from_dense_cell and dense_epochs is None:
            report = {
                "status": "failed",
                "error": f"the dense cell {dense_dir} failed; {spec.label} starts from it",
            }
        else:
            report = run_cell(cell_job(job, spec, ratio, cell, str(dense_dir) if from_dense_cell else None))
        ok = report.get("status") not in NOT_OK
        speed = None
        if ok and dense is not None:
            speed = throughput_ratio(cell, dense, device, c.bench_batch_size, c.bench_repeats)
        before = (
            dense_epochs if from_dense_cell and dense_epochs is not None else 0.0
        )  # the dense cell's training
        total = own_epochs(report, job.train.epochs) + before if ok else None
        rows.append(
            row_of(
                spec.label, ratio, report, speed, start=start_label(start, dense_epochs), epochs_total=total
            )
        )
        if speed is not None and deploy is not None:
            rows[-1]["deploy_speed_vs_dense"] = deploy_ratio(deploy, cell)
        if c.budget == "latency":
            from .latency.report import row_fields

            rows[-1].update(prune_ratio=None, **row_fields(ratio, report.get("latency")))
        add_gap_change(rows)
        write_outputs(out_dir, rows, settings)  # partial results survive a crash
    add_gap_change(rows)
    write_outputs(out_dir, rows, settings)
    if deploy is not None:
        deploy.close()
    return rows


def deploy_ratio(deploy: Any, cell: Path) -> float | None:
    """The cell's deployable images/s over the dense model's (:class:`p3b_hf.export.DeploySpeed`); ``None``
    with a printed reason when the artefact cannot be built (the eager speed column stands)."""
    from .loading import load_model

    try:
        return deploy.measure(load_model(str(cell)))["deploy_speed_vs_dense"]
    except P3BError as e:
        print(f"p3b-hf compare: no deployable speed for {cell.name}: {e}")
        return None


# ============================================================================ leave-one-domain-out
def fold_dir_name(domain: str) -> str:
    """A held-out domain's sub-directory name (``Real World`` -> ``Real_World``)."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", domain).strip("_.") or "domain"


def lodo_folds(job: CompareJob) -> list[str]:
    """The domains held out in turn: ``--test-domains`` (as the data spells them) or every domain."""
    from .data import list_domains, resolve_domains

    d = job.data
    if d.train_domains:
        raise P3BError(
            "--protocol lodo holds out each domain in turn and trains on all the others; pick the "
            "held-out domains with --test-domains, not --train-domains."
        )
    available = list_domains(
        d.dataset, domain_column=d.domain_column, train_split=d.train_split, eval_split=d.eval_split
    )
    if len(available) < 2:
        raise P3BError(f"--protocol lodo needs at least two domains; the data set has {available}.")
    folds = resolve_domains(d.test_domains, available, "--test-domains") if d.test_domains else available
    dirs = [fold_dir_name(f) for f in folds]
    if len(set(dirs)) != len(dirs):
        raise P3BError(
            f"Domains {folds} map to clashing directory names {dirs}; rename them in the data set."
        )
    return folds


def fold_job(job: CompareJob, domain: str) -> CompareJob:
    """The single-protocol compare of one fold: ``domain`` held out, every other domain trained on, into
    ``OUT/<domain>``, with the dense cell (the reference of the gap's change)."""
    return dataclasses.replace(
        job,
        compare=dataclasses.replace(job.compare, protocol="single", dense_baseline=True),
        data=dataclasses.replace(job.data, test_domains=[domain], train_domains=None),
        output=dataclasses.replace(
            job.output, output_dir=str(Path(job.output.output_dir) / fold_dir_name(domain))
        ),
    )


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals and len(vals) == len(values) else None


def lodo_rows(fold_rows: dict[str, list[dict[str, Any]]], folds: list[str]) -> list[dict[str, Any]]:
    """One row per method and ratio over the folds: ``per_domain`` (accuracy on each held-out domain),
    ``accuracy`` (their mean, as the DG tables' "Avg."), mean ``source_accuracy`` / ``gap`` / ``gap_change``
    and mean cost. A cell that is not ``ok`` in some fold makes the row that fold's status."""
    keys: list[tuple[str, float]] = []
    for d in folds:
        for r in fold_rows.get(d, []):
            if (r["method"], r["prune_ratio"]) not in keys:
                keys.append((r["method"], r["prune_ratio"]))
    out = []
    for method, ratio in keys:
        per = {
            d: next(
                (r for r in fold_rows.get(d, []) if (r["method"], r["prune_ratio"]) == (method, ratio)), None
            )
            for d in folds
        }
        first = next(r for r in per.values() if r is not None)
        row: dict[str, Any] = {
            "method": method,
            "prune_ratio": ratio,
            "protocol": "lodo",
            "start": first.get("start"),
            "epochs_total": first.get("epochs_total"),
            "per_domain": {d: (r or {}).get("accuracy") for d, r in per.items()},
        }
        missing = [d for d, r in per.items() if r is None]
        bad = [(d, r) for d, r in per.items() if r is not None and r["status"] != "ok"]
        if bad:
            d, r = bad[0]
            out.append({**row, "status": r["status"], "error": f"held out {d}: {r['error']}"})
            continue
        if missing:
            out.append(
                {**row, "status": "incomplete", "error": f"not run yet with {', '.join(missing)} held out"}
            )
            continue
        rs = list(per.values())
        row.update(
            status="ok",
            accuracy=_mean([r["accuracy"] for r in rs]),
            source_accuracy=_mean(
                [(r.get("eval_sets") or {}).get(r.get("source_set") or "source") for r in rs]
            ),
            gap=_mean([r.get("gap") for r in rs]),
            gap_change=_mean([r.get("gap_change") for r in rs]),
            params=_mean([r["params"] for r in rs]),
            macs=_mean([r["macs"] for r in rs]),
            param_reduction=_mean([r["param_reduction"] for r in rs]),
            throughput_vs_dense=_mean([r.get("throughput_vs_dense") for r in rs]),
            deploy_speed_vs_dense=_mean([r.get("deploy_speed_vs_dense") for r in rs]),
            wall_time_s=sum(float(r.get("wall_time_s") or 0.0) for r in rs),
        )
        out.append(row)
    return out


def write_lodo_outputs(
    out_dir: Path,
    rows: list[dict[str, Any]],
    fold_rows: dict[str, list[dict[str, Any]]],
    folds: list[str],
    settings: dict[str, Any],
) -> None:
    """``compare.json`` (averaged rows + every fold's rows), ``compare.csv`` (one line per method, ratio and
    held-out domain, plus an ``average`` line per method and ratio), ``compare.md`` (:func:`lodo_table`) and
    the plot (one panel per held-out domain and one for the average)."""
    from .runtime import is_main_process

    if not is_main_process():
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(
        json.dumps(
            portable(
                {"settings": settings, "protocol": "lodo", "domains": folds, "rows": rows, "folds": fold_rows}
            ),
            indent=1,
        )
    )
    fields = [
        "method",
        "prune_ratio",
        "held_out",
        "status",
        "accuracy",
        "source_accuracy",
        "gap",
        "gap_change",
        "params",
        "macs",
        "param_reduction",
        "throughput_vs_dense",
        "deploy_speed_vs_dense",
        "wall_time_s",
        "error",
    ]
    with open(out_dir / "compare.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for agg in rows:
            for d in folds:
                r = next(
                    (
                        r
                        for r in fold_rows.get(d, [])
                        if (r["method"], r["prune_ratio"]) == (agg["method"], agg["prune_ratio"])
                    ),
                    None,
                )
                if r is not None:
                    src = (r.get("eval_sets") or {}).get(r.get("source_set") or "source")
                    w.writerow({**r, "held_out": d, "source_accuracy": src})
            w.writerow({**agg, "held_out": "average"})
    (out_dir / "compare.md").write_text(lodo_table(rows) + "\n")
    plot_accuracy_vs_params(rows, out_dir / "accuracy_vs_params.png")


def run_lodo(job: CompareJob) -> list[dict[str, Any]]:
    """Leave-one-domain-out: the single-protocol compare once per held-out domain (``OUT/<domain>/``, with
    its dense cell), then :func:`lodo_rows`. Every fold's finished cells are checked before any training and
    reused on re-runs; the averaged outputs are rewritten after every fold."""
    folds = lodo_folds(job)
    jobs = {d: fold_job(job, d) for d in folds}
    job.train.check()
    for fj in jobs.values():  # refuse bad options / stale cells of every fold before training any
        _cells(fj)
    out_dir = Path(job.output.output_dir)
    settings = {
        "compare": dataclasses.asdict(job.compare),
        "data": dataclasses.asdict(job.data),
        "train": dataclasses.asdict(job.train),
        "kd": dataclasses.asdict(job.kd),
        "folds": folds,
    }
    fold_rows: dict[str, list[dict[str, Any]]] = {}
    rows: list[dict[str, Any]] = []
    for i, d in enumerate(folds, 1):
        print(
            f"p3b-hf compare: leave-one-domain-out fold {i}/{len(folds)}: {d!r} held out -> "
            f"{relative(Path(jobs[d].output.output_dir))}"
        )
        fold_rows[d] = run_compare(jobs[d])
        rows = lodo_rows(fold_rows, folds)
        write_lodo_outputs(out_dir, rows, fold_rows, folds, settings)
    return rows
