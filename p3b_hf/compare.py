"""Run several pruning methods at equal whole-model parameter budgets and put them side by side.

Each (method, ratio) cell is an ordinary pruning run (:func:`p3b_hf.runner.prune`, what ``p3b-hf prune``
runs) into its own sub-directory, with the same data, seed and training budget (``--epochs`` epochs of training per method: P3B prunes
during them, VBP uses them for its KD fine-tune, global pruning for its fine-tune). A method that
cannot reach a budget (VBP beyond ~62-66 % param reduction) gets an "unreachable" row, not a crash.

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
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BudgetError, P3BError
from .options import DataOptions, KDOptions, OutputOptions, PruneOptions, TrainOptions, option
from .report import REPORT_NAME

GLOBAL_CRITERIA = ("hessian", "taylor", "l1", "l2", "random")
START_SOURCE, START_DENSE = "source", "dense"  # what a cell prunes: the --model, or the dense cell OUT/dense


@dataclass(frozen=True)
class MethodSpec:
    """One entry of ``--methods``: a registered method (``p3b``, ``vbp``, ``global`` or one added with
    :func:`~p3b_hf.methods.register_method`), ``p3b-reference`` (P3B with ``reference=True``) or
    ``global-<criterion>``. ``overrides`` are set on the method's options for this cell."""

    label: str
    method: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        from .methods import METHODS

        name = text.strip().lower()
        if name == "p3b-reference":  # the reference BPI/gate path: its cost and accuracy next to the fast default
            return cls(name, "p3b", (("reference", True),))
        if name.startswith("global-") and name.split("-", 1)[1] in GLOBAL_CRITERIA:
            return cls(name, "global", (("importance", name.split("-", 1)[1]),))
        if name in METHODS and name != "global":
            return cls(name, name)
        raise P3BError(f"Unknown method {text!r} in --methods; use p3b, p3b-reference, vbp, global-<criterion> "
                       f"with criterion in {', '.join(GLOBAL_CRITERIA)} (e.g. p3b,vbp,global-taylor), or a "
                       f"registered method ({', '.join(m for m in METHODS if m != 'global')}).")

    def options(self, base: Any, epochs: float) -> Any:
        """The cell's method options: ``base`` (what the user set for this method) with the spec's overrides;
        VBP's KD fine-tune gets the compare's epochs."""
        extra = dict(self.overrides)
        if self.method == "vbp":
            extra["vbp_epochs"] = epochs
        return dataclasses.replace(base, **extra) if extra else base

    def start(self, global_from: str = START_SOURCE) -> str:
        """The model this method's cells prune: ``"dense"`` (the dense cell, fine-tuned on the task) or
        ``"source"`` (``--model``, whose head ``p3b-hf prune`` replaces for the target labels).

        VBP always starts from the dense cell: it is a post-training method, and from the source model it
        would distil from a random head. P3B prunes during fine-tuning, so it starts from the source.
        Global pruning follows ``--global-from``.
        """
        if self.method == "vbp" or (self.method == "global" and global_from == START_DENSE):
            return START_DENSE
        return START_SOURCE


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


def started_from(report: dict[str, Any]) -> str | None:
    """The model a finished cell was made from (``p3b-hf finetune`` / ``p3b-hf prune`` reports)."""
    if "finetune" in report:  # the dense cell: a finetune report (possibly on top of the input's report)
        return report["finetune"].get("source_model")
    return report.get("base_model")


def _same_model(a: str, b: str) -> bool:
    return a == b or Path(a).resolve() == Path(b).resolve()


def check_reusable(cell: Path, start_model: str) -> None:
    """Refuse to reuse a finished cell that was made from another model than this compare would start it
    from (e.g. a VBP cell from an older compare that pruned the source model, or a global cell after
    ``--global-from`` changed): its row would silently describe another experiment. Called for every cell
    before any training, so a refusal leaves nothing half-done."""
    path = cell / REPORT_NAME
    if not path.exists():
        return
    made_from = started_from(json.loads(path.read_text()))
    if made_from is not None and not _same_model(made_from, start_model):
        raise P3BError(f"{cell} holds a finished run made from {made_from}, but this compare starts that cell "
                       f"from {start_model}; delete {cell} to recompute it, or use another --output-dir.")


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


def run_cell(job: Any) -> dict[str, Any]:
    """Run one cell (a :class:`~p3b_hf.runner.PruneJob`); reuse an existing finished report (so a compare can
    be resumed). An unreachable budget or a refused input becomes a row, not a crash."""
    from .runner import prune

    out = Path(job.output.output_dir)
    if (out / REPORT_NAME).exists() and not job.output.overwrite:
        return json.loads((out / REPORT_NAME).read_text())
    what = f"{job.prune.method} at --prune-ratio {job.prune.prune_ratio}"
    try:
        return prune(job).report
    except BudgetError as e:
        print(f"p3b-hf compare: {what}: unreachable: {e}")
        return {"status": "unreachable", "error": str(e)}
    except P3BError as e:
        print(f"p3b-hf compare: {what}: failed: {e}")
        return {"status": "failed", "error": str(e)}


def throughput_ratio(model_dir: Path, dense: Any, device: str, batch_size: int | None, repeats: int) -> float | None:
    """Images/s of the pruned model over its dense original (eager, same run, medians)."""
    from .bench import run_bench
    from .loading import load_model

    pruned = load_model(str(model_dir))
    rep = run_bench(pruned, dense, device=device, batch_size=batch_size, repeats=repeats, variants=("eager",))
    return rep["ratios"]["pruned_vs_dense"].get("eager")


def row_of(label: str, ratio: float | None, report: dict[str, Any], speed: float | None, *,
           start: str = START_SOURCE, epochs_total: float | None = None) -> dict[str, Any]:
    """One table row; ``start`` / ``epochs_total`` say what the cell started from and its training in all."""
    if report.get("status") in ("unreachable", "failed"):
        return {"method": label, "prune_ratio": ratio, "status": report["status"], "start": start,
                "epochs_total": None, "error": report["error"]}
    return {
        "method": label, "prune_ratio": ratio, "status": "ok", "start": start, "epochs_total": epochs_total,
        "accuracy": report.get("eval", {}).get("accuracy"),
        "params": report["pruned"]["params"], "macs": report["pruned"]["macs"],
        "param_reduction": report.get("achieved_param_reduction"),
        "throughput_vs_dense": speed, "wall_time_s": report.get("wall_time_s"),
    }


def write_outputs(out_dir: Path, rows: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))
    fields = ["method", "prune_ratio", "status", "start", "epochs_total", "accuracy", "params", "macs", "param_reduction",
              "throughput_vs_dense", "wall_time_s", "error"]
    with open(out_dir / "compare.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (out_dir / "compare.md").write_text(markdown_table(rows) + "\n")
    plot_accuracy_vs_params(rows, out_dir / "accuracy_vs_params.png")


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """``compare.md``: one line per row; ``start`` and ``epochs (total)`` say what each cell started from and
    how much training it had in all (a cell started from the dense cell also had the dense cell's epochs)."""
    lines = ["| method | target ratio | start | epochs (total) | top-1 (%) | params (M) | param reduction | GMACs "
             "| speed vs dense | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = (f"| {r['method']} | {_fmt(r['prune_ratio'], '.2f')} | {r.get('start') or '–'} | "
                f"{_fmt(r.get('epochs_total'), 'g')} |")
        if r["status"] != "ok":
            lines.append(f"{head} {r['status']}: {r['error'].splitlines()[0][:90]} | | | | | |")
            continue
        acc = None if r["accuracy"] is None else 100 * r["accuracy"]
        red = None if r["param_reduction"] is None else 100 * r["param_reduction"]
        lines.append(f"{head} {_fmt(acc, '.2f')} | "
                     f"{r['params'] / 1e6:.3f} | {_fmt(red, '.1f')} % | {r['macs'] / 1e9:.3f} | "
                     f"{_fmt(r['throughput_vs_dense'], '.2f')}× | {_fmt(r['wall_time_s'], '.0f')} |")
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
            finetune(FinetuneJob(finetune=FinetuneOptions(model=job.compare.model, new_head=True), data=job.data,
                                 output=dataclasses.replace(job.output, output_dir=str(out), overwrite=True),
                                 train=job.train))
        except P3BError as e:
            return {"method": "dense", "prune_ratio": 0.0, "status": "failed", "start": START_SOURCE,
                    "epochs_total": None, "error": f"dense fine-tune failed: {e}"}
    rep = json.loads(report_path.read_text())
    ft = rep.get("finetune", rep)
    acc = (ft.get("eval") or {}).get("accuracy")
    from .cost import count_cost
    from .loading import load_config

    cost = count_cost(load_config(str(out)))
    return {"method": "dense", "prune_ratio": 0.0, "status": "ok", "start": START_SOURCE,
            "epochs_total": own_epochs(rep, job.train.epochs), "accuracy": acc, "params": cost["params"],
            "macs": cost["macs"], "param_reduction": 0.0, "throughput_vs_dense": 1.0,
            "wall_time_s": ft.get("wall_time_s", ft.get("train_time_s"))}


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
    methods: str = option("p3b,vbp,global-taylor,global-hessian",
                          help="comma list of p3b, p3b-reference (P3B with --reference: the reference BPI/gate "
                               "path), vbp, global-<hessian|taylor|l1|l2|random>, or a registered method")
    prune_ratio: str = option("0.5,0.75", help="comma list of whole-model parameter fractions to remove")
    dense_baseline: bool = option(False, help="also fine-tune the dense model with the same budget (reference "
                                              "accuracy); the dense cell is trained anyway when a method starts "
                                              "from it (vbp, --global-from dense)")
    global_from: str = option(START_SOURCE, choices=(START_SOURCE, START_DENSE),
                              help="what global-* cells prune: the --model (source, default; their fine-tune "
                                   "trains the new head) or the dense cell fine-tuned on the task (dense). VBP, a "
                                   "post-training method, always starts from the dense cell and distils from it")
    pad_to: int | None = option(None, metavar="N", help="save every pruned cell zero-padded to multiples of N")
    bench_device: str = option("auto", choices=("auto", "cpu", "cuda"), help="where the speed column is measured")
    bench_batch_size: int | None = option(None, help="throughput batch (default: 1024 on GPU, 1 on CPU)")
    bench_repeats: int = option(5, help="timed repeats of the speed column (median)")
    no_bench: bool = option(False, help="skip the throughput measurement")


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


def cell_job(job: CompareJob, spec: MethodSpec, ratio: float, cell: Path, start_model: str | None) -> Any:
    """The :class:`~p3b_hf.runner.PruneJob` of one cell. ``start_model``: prune that model instead of the
    source (the dense cell); VBP then also distils from it unless the user gave a teacher."""
    from .methods import get_method
    from .runner import PruneJob

    method = get_method(spec.method)
    base = job.method_options.get(spec.method) or method.options()
    kd = job.kd
    if spec.method == "vbp" and start_model is not None and not kd.teacher:
        kd = dataclasses.replace(kd, teacher=start_model)
    return PruneJob(prune=PruneOptions(model=start_model or job.compare.model, method=spec.method, prune_ratio=ratio,
                                       pad_to=job.compare.pad_to),
                    data=job.data, output=dataclasses.replace(job.output, output_dir=str(cell)),
                    train=job.train, kd=kd, method_options=spec.options(base, job.train.epochs))


def run_compare(job: CompareJob) -> list[dict[str, Any]]:
    """Every method x ratio cell (and the dense cell when needed): rows, written as ``compare.json`` /
    ``.csv`` / ``.md`` and ``accuracy_vs_params.png`` into ``job.output.output_dir`` after every cell."""
    from .loading import load_model
    from .runtime import resolve_device

    c = job.compare
    specs = parse_methods(c.methods)
    ratios = parse_ratios(c.prune_ratio)
    job.train.check()
    out_dir = Path(job.output.output_dir)
    dense_dir = out_dir / "dense"
    cells = [(ratio, spec, spec.start(c.global_from), out_dir / f"{spec.label}-{round(100 * ratio)}")
             for ratio in ratios for spec in specs]
    from_dense = sorted({spec.label for _, spec, start, _ in cells if start == START_DENSE})
    need_dense = c.dense_baseline or bool(from_dense)
    # a finished cell made from another model than it would start from now is refused before any training
    # (--overwrite: every cell is recomputed instead of reused)
    if need_dense and not job.output.overwrite:
        check_reusable(dense_dir, c.model)
    for _, _, start, cell in cells if not job.output.overwrite else []:
        check_reusable(cell, str(dense_dir) if start == START_DENSE else c.model)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(c.bench_device)
    dense = None if c.no_bench else load_model(c.model)
    settings = {"compare": dataclasses.asdict(c), "data": dataclasses.asdict(job.data),
                "train": dataclasses.asdict(job.train), "kd": dataclasses.asdict(job.kd)}
    rows: list[dict[str, Any]] = []
    dense_epochs = None
    if need_dense:
        if from_dense:
            why = "" if c.dense_baseline else " (trained although --dense-baseline was not given)"
            print(f"p3b-hf compare: {', '.join(from_dense)} start from the dense cell {dense_dir}, the model "
                  f"fine-tuned on this task, trained once and reused{why}")
        dense_cell = dense_row(job, dense_dir)
        rows.append(dense_cell)
        dense_epochs = dense_cell["epochs_total"] if dense_cell["status"] == "ok" else None
    for ratio, spec, start, cell in cells:
        from_dense_cell = start == START_DENSE
        if from_dense_cell and dense_epochs is None:
            report = {"status": "failed", "error": f"the dense cell {dense_dir} failed; {spec.label} starts from it"}
        else:
            report = run_cell(cell_job(job, spec, ratio, cell, str(dense_dir) if from_dense_cell else None))
        ok = report.get("status") not in ("unreachable", "failed")
        speed = None
        if ok and dense is not None:
            speed = throughput_ratio(cell, dense, device, c.bench_batch_size, c.bench_repeats)
        before = dense_epochs if from_dense_cell and dense_epochs is not None else 0.0  # the dense cell's training
        total = own_epochs(report, job.train.epochs) + before if ok else None
        rows.append(row_of(spec.label, ratio, report, speed, start=start_label(start, dense_epochs),
                           epochs_total=total))
        write_outputs(out_dir, rows, settings)  # partial results survive a crash
    write_outputs(out_dir, rows, settings)
    return rows
