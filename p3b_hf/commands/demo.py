"""``p3b-hf demo``: an offline transfer-pruning run on a CPU in a few minutes.

1. SOURCE: render Latin letters/digits with 22 bundled fonts and pretrain a small ViT on them
   (cached in ``DIR/source_model``; see :mod:`p3b_hf.demo_data`).
2. TARGET: render 44 Greek/Cyrillic glyphs, train/eval split by font, saved as ``DIR/data/target``.
3. Dense fine-tune on the target (the baseline; same recipe as the pruning run):
   :func:`p3b_hf.runner.finetune`, what ``p3b-hf finetune --new-head --schedule constant`` runs.
4. P3B: :func:`p3b_hf.runner.prune` -- the same code path as ``p3b-hf prune --method p3b`` (``P3BTrainer``
   with ``P3BConfig``), so the demo prints the equivalent command line.
5. Report: dense vs pruned accuracy, params, MACs, CPU images/s (``p3b_hf.bench``); plots; the saved model directory is
   reloaded with ``AutoModelForImageClassification.from_pretrained`` and its logits are checked.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.families import DEFAULT_DEMO_FAMILY, families, family_by_name
from ..options import option


@dataclasses.dataclass
class DemoOptions:
    """``p3b-hf demo``'s options (the flags are generated from these fields, :mod:`p3b_hf.options`)."""

    output_dir: str = option("outputs/demo", help="where everything goes")
    prune_ratio: float = option(0.5, help="fraction of parameters to remove")
    epochs: float = option(6.0, help="target fine-tune / P3B epochs")
    batch_size: int = option(64, help="training batch size")
    lr: float = option(1e-3, help="target fine-tune lr (AdamW, constant)")
    augment: str = option(
        "glyph",
        choices=("glyph", "basic", "none"),
        help="target training augmentation (default: the dev-bench glyph recipe)",
    )
    pretrain_steps: int = option(450, help="source pretraining steps (batch 64)")
    source_renders: int = option(4, help="renders per (font, class) on the source")
    train_renders: int = option(3, help="renders per (font, class), target train")
    eval_renders: int = option(2, help="renders per (font, class), target eval")
    skip_dense: bool = option(False, help="skip the dense fine-tune baseline")
    bench_iters: int = option(
        7, help="timed repeats per model and variant for images/s (round-robin, median)"
    )
    threads: int | None = option(
        None, help="torch CPU threads (default: the idle cores by load average, at least 1)"
    )
    seed: int = option(0, help="seed of the data, the pretraining and the runs")
    family: str = option(
        DEFAULT_DEMO_FAMILY,
        help="source model family (families without a fast inference path, e.g. BEiT/DINOv2: eager speed only)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..options import add_options

    add_options(
        parser, DemoOptions, choices={"family": tuple(f.name for f in families() if f.demo_model is not None)}
    )


def _auto_threads() -> int:
    """Idle cores: on a shared 2-core machine, 2 OpenMP threads competing with other jobs are several
    times slower than 1 thread, so use only the cores the load average leaves free."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, min(cores, int(cores - load + 0.5)))


def _jobs(args: DemoOptions, model_dir: Path, data_dir: Path, out: Path) -> tuple[Any, Any]:
    """The dense baseline's fine-tune job and the P3B pruning job (same data, recipe and seed)."""
    from ..methods.p3b import P3BConfig
    from ..options import DataOptions, FinetuneOptions, OutputOptions, PruneOptions, TrainOptions
    from ..runner import FinetuneJob, PruneJob

    data = DataOptions(
        dataset=str(data_dir), augment=args.augment, mixup=0.0, cutmix=0.0, label_smoothing=0.1
    )
    train = TrainOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=0.05,
        device="cpu",
        seed=args.seed,
        logging_steps=20,
    )
    dense = FinetuneJob(
        finetune=FinetuneOptions(model=str(model_dir), new_head=True, schedule="constant"),
        data=data,
        output=OutputOptions(output_dir=str(out / "dense_model"), overwrite=True),
        train=dataclasses.replace(train, save_strategy="no"),
    )
    # a short run updates the masks every step: score ΔΨ on every full batch (the fast defaults, every 2nd
    # batch on a quarter of it, leave half the updates without a fresh ΔΨ)
    p3b = PruneJob(
        prune=PruneOptions(model=str(model_dir), method="p3b", prune_ratio=args.prune_ratio),
        data=data,
        output=OutputOptions(output_dir=str(out / "pruned_model"), overwrite=True),
        train=train,
        method_options=P3BConfig(bpi_every=1, bpi_subbatch=1.0),
    )
    return dense, p3b


def _ratio(bench: dict[str, Any], variant: str) -> float:
    """Pruned / dense images/s: the per-round (paired) median, robust to load drift on a shared CPU."""
    r = bench["ratios"]
    return float(r["pruned_vs_dense_paired"].get(variant, r["pruned_vs_dense"][variant]))


def _reload_check(model_dir: Path, pruned: torch.nn.Module, eval_ds: Any) -> dict[str, Any]:
    """Reload the saved directory the way users will, and compare logits with the in-memory model."""
    from transformers import AutoModelForImageClassification

    from ..training import evaluate_accuracy

    reloaded = AutoModelForImageClassification.from_pretrained(str(model_dir)).eval()
    n = min(len(eval_ds), 64)
    x = torch.stack([eval_ds[i]["pixel_values"] for i in range(n)])
    with torch.no_grad():  # not inference_mode: its tensors poison caches (BEiT's position index)
        a = pruned.eval().cpu()(pixel_values=x).logits
        b = reloaded(pixel_values=x).logits
    diff = float((a - b).abs().max())
    acc = evaluate_accuracy(reloaded, eval_ds, device="cpu", desc="eval reloaded")["accuracy"]
    return {
        "class": type(reloaded).__name__,
        "max_abs_logit_diff": diff,
        "accuracy": acc,
        "params": sum(p.numel() for p in reloaded.parameters()),
        "ok": diff <= 1e-4,
    }


def _sample_grid(datasets_: list[Any], path: Path, per_row: int = 16) -> Path:
    """Plot random images of each data set, one row per data set (seeded: the same picture every run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(datasets_), per_row, figsize=(per_row * 0.6, len(datasets_) * 0.75))
    rng = np.random.default_rng(0)
    for r, (title, ds) in enumerate(datasets_):
        picks = rng.choice(len(ds), size=min(per_row, len(ds)), replace=False)
        for c in range(per_row):
            ax = axes[r][c]
            if c < len(picks):
                ax.imshow(ds[int(picks[c])]["image"])
            ax.axis("off")
        axes[r][0].set_title(title, fontsize=7, loc="left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    from ..options import options_from_namespace

    return demo(options_from_namespace(DemoOptions, args))


def demo(args: DemoOptions) -> int:
    """The whole demo (steps 1-5 above) with ``args``; prints the summary, writes ``DIR/demo_report.json``."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or _auto_threads())
    try:
        return _run(args)
    finally:  # the thread count is process-wide: give the caller (e.g. a test session) its own back
        torch.set_num_threads(previous_threads)


def _run(args: DemoOptions) -> int:
    from .. import demo_data
    from ..bench import format_table, run_bench
    from ..cost import count_cost
    from ..errors import P3BError
    from ..options import PruneOptions, command_line
    from ..report import summarize
    from ..runner import finetune, prune

    PruneOptions(model="", prune_ratio=args.prune_ratio).check()
    t_start = time.time()
    threads = torch.get_num_threads()
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise P3BError(f"--output-dir {out} is a file; give a directory.")
    out.mkdir(parents=True, exist_ok=True)
    print(f"[demo] output: {out} | torch threads: {threads}")
    times: dict[str, float] = {}

    # 1. source domain + pretraining (cached)
    t = time.time()
    spec = demo_data.SourceModelSpec(
        steps=args.pretrain_steps, renders_per_font=args.source_renders, seed=args.seed, family=args.family
    )
    source_dir, source_info = demo_data.pretrain_source_model(out / "source_model", spec)
    times["pretrain_s"] = time.time() - t

    # 2. target domain (deterministic; regenerated each run, it takes seconds)
    t = time.time()
    target = demo_data.target_dataset_dict(args.train_renders, args.eval_renders, seed=args.seed)
    data_dir = out / "data" / "target"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    target.save_to_disk(str(data_dir))
    times["target_data_s"] = time.time() - t
    print(
        f"[demo] target: {target['train'].features['label'].num_classes} classes (Greek + Cyrillic), "
        f"{len(target['train'])} train images ({len(set(target['train']['font']))} fonts) / "
        f"{len(target['validation'])} eval images ({len(set(target['validation']['font']))} unseen fonts)"
    )
    _sample_grid(
        [
            ("source (pretraining)", _source_preview()),
            ("target train", target["train"]),
            ("target eval (unseen fonts)", target["validation"]),
        ],
        out / "plots" / "samples.png",
    )

    # 3. dense baseline, 4. P3B: the runner's fine-tune and pruning runs (what the CLI commands run)
    dense_job, p3b_job = _jobs(args, source_dir, data_dir, out)
    dense_metrics = None
    dense_model = None
    if not args.skip_dense:
        t = time.time()
        print("[demo] dense fine-tune on the target (baseline) ...")
        dense_run = finetune(dense_job)
        dense_model, dense_metrics = dense_run.model.cpu().eval(), dense_run.metrics
        times["dense_finetune_s"] = time.time() - t
    t = time.time()
    print(f"[demo] P3B fine-tune + prune ({100 * args.prune_ratio:.0f} % of parameters) ...")
    p3b_run = prune(p3b_job, dense_eval_metrics=dense_metrics)
    times["p3b_s"] = time.time() - t
    ctx, prune_report, model_dir = p3b_run.context, p3b_run.report, p3b_run.output_dir
    pruned = p3b_run.model
    from ..loading import load_model

    dense_init = load_model(str(source_dir))
    from ..runner import adapt_classifier

    adapt_classifier(dense_init, ctx.data.labels)  # the dense original of the cost table (fresh head)
    dense_model = dense_model if dense_model is not None else dense_init
    argv = "p3b-hf prune " + command_line(
        p3b_job.prune, p3b_job.data, p3b_job.train, p3b_job.output, p3b_job.method_options
    )

    # 5. speed (p3b_hf.bench: round-robin timing of dense / pruned / ideal plain ViT, eager and the
    #    exact fast inference path), reload check, report
    t = time.time()
    bench = run_bench(
        copy.deepcopy(pruned),
        copy.deepcopy(dense_model),
        device="cpu",
        dtype="fp32",
        batch_size=64,
        repeats=args.bench_iters,
        warmup=2,
        variants=("eager", "fast") if family_by_name(args.family).fast_path else ("eager",),
        min_repeat_s=0.1,
    )
    times["bench_s"] = time.time() - t
    ips = {(r["model"], r["variant"]): r["images_per_s"] for r in bench["results"]}
    speed = {
        "threads": threads,
        "batch_size": 64,
        "dtype": "float32",
        "bench_table": format_table(bench),
        "dense_images_per_s": ips[("dense", "eager")],
        "pruned_images_per_s": ips[("pruned", "eager")],
        "pruned_fast_images_per_s": ips.get(("pruned", "fast")),
        "speedup": _ratio(bench, "eager"),
        "speedup_fast": _ratio(bench, "fast") if ("pruned", "fast") in ips else None,
        "bench": bench,
        "deploy": _deploy_speed(pruned, dense_model, args.bench_iters),
    }
    times["deploy_speed_s"] = time.time() - t - times["bench_s"]
    reload = _reload_check(model_dir, pruned, ctx.eval_ds)
    times["total_s"] = time.time() - t_start
    dense_cost, pruned_cost = count_cost(dense_init), count_cost(pruned)
    report = {
        "source": {
            k: source_info[k] for k in ("spec", "source_eval_accuracy", "source_classes", "source_fonts")
        },
        "target": {
            "classes": ctx.data.labels,
            "train_images": len(target["train"]),
            "eval_images": len(target["validation"]),
            "eval_origin": ctx.data.eval_origin,
        },
        "dense": {"accuracy": (dense_metrics or {}).get("accuracy"), **dense_cost},
        "pruned": {"accuracy": p3b_run.metrics.get("accuracy"), **pruned_cost},
        "prune_ratio": args.prune_ratio,
        "achieved_param_reduction": prune_report.get("achieved_param_reduction"),
        "cpu_speed": speed,
        "reload": reload,
        "times": times,
        "model_dir": str(model_dir),
        "pruning_report": str(model_dir / "pruning_report.json"),
        "plots": sorted(
            str(p) for p in [*(model_dir / "plots").glob("*.png"), *(out / "plots").glob("*.png")]
        ),
        "command": argv,
    }
    (out / "demo_report.json").write_text(json.dumps(report, indent=1, default=str))
    text = _summary(report, prune_report, summarize)
    (out / "demo_summary.txt").write_text(text + "\n")
    print(text)
    if not reload["ok"]:
        print(f"[demo] ERROR: reloaded logits differ by {reload['max_abs_logit_diff']:.3g}")
        return 1
    return 0


def _deploy_speed(pruned: torch.nn.Module, dense: torch.nn.Module, repeats: int) -> dict[str, Any]:
    """The deployable path's speed at batch 1 (ONNX Runtime fp32 of the folded export when installed, else
    optimize_for_inference), pruned vs dense in one run (:class:`p3b_hf.export.DeploySpeed`). An optional
    measurement: a failure is reported in the summary, not raised."""
    from ..export import deploy_speed_ratio

    try:
        return deploy_speed_ratio(
            copy.deepcopy(pruned).cpu(),
            copy.deepcopy(dense).cpu(),
            batch_size=1,
            repeats=max(1, repeats),
            min_repeat_s=0.1,
        )
    except Exception as e:  # reported in the summary: the demo's main result stands
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}


def _source_preview(n: int = 62) -> Any:
    """One render of each source class in the first font, for the sample plot."""
    from .. import demo_data

    dom = demo_data.render_domain(demo_data.SOURCE_CLASSES[:n], demo_data.source_fonts()[:1], 1, seed=0)
    return demo_data.to_dataset(dom)


def _summary(report: dict[str, Any], prune_report: dict[str, Any], summarize: Any) -> str:
    d, p, s = report["dense"], report["pruned"], report["cpu_speed"]
    src = report["source"]

    def pct(v: float | None) -> str:
        return "n/a (--skip-dense)" if v is None else f"{100 * v:.1f} %"

    lines = [
        "",
        "=" * 72,
        f"p3b-hf demo: transfer pruning of a small {src['spec'].get('family', 'vit')} "
        "(source: Latin glyphs -> target: Greek/Cyrillic)",
        "=" * 72,
        f"source pretraining   {src['source_classes']} classes, {100 * src['source_eval_accuracy']:.1f} % on fresh renders",
        f"target               {len(report['target']['classes'])} classes, {report['target']['train_images']} train /"
        f" {report['target']['eval_images']} eval images ({report['target']['eval_origin']}; unseen fonts)",
        f"accuracy             dense fine-tune {pct(d['accuracy'])}  |  P3B pruned {pct(p['accuracy'])}",
        f"params               {d['params'] / 1e6:.3f} M -> {p['params'] / 1e6:.3f} M "
        f"({100 * (1 - p['params'] / d['params']):.1f} % removed, target {100 * report['prune_ratio']:.0f} %)",
        f"MACs / image         {d['macs'] / 1e6:.2f} M -> {p['macs'] / 1e6:.2f} M",
        f"CPU images/s         dense {s['dense_images_per_s']:.0f} -> pruned {s['pruned_images_per_s']:.0f} "
        f"(x{s['speedup']:.2f}; "
        + (
            f"fast path {s['pruned_fast_images_per_s']:.0f}, x{s['speedup_fast']:.2f} vs dense fast; "
            if s["speedup_fast"] is not None
            else ""
        )
        + f"fp32, batch {s['batch_size']}, {s['threads']} thread(s))",
        _deploy_line(s.get("deploy") or {}),
        f"reload check         AutoModelForImageClassification -> {report['reload']['class']}, max |logit diff| "
        f"{report['reload']['max_abs_logit_diff']:.2e}, accuracy {pct(report['reload']['accuracy'])}"
        f" -> {'OK' if report['reload']['ok'] else 'MISMATCH'}",
        f"time                 {report['times']['total_s']:.0f} s total ("
        + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in report["times"].items() if k != "total_s")
        + ")",
        f"model dir            {report['model_dir']}",
        f"report               {report['pruning_report']}",
        "plots                " + "\n                     ".join(report["plots"]),
        "same P3B step via CLI:",
        "  " + report["command"],
        "",
        summarize(prune_report),
        "",
        s["bench_table"],
    ]
    return "\n".join(lines)


def _deploy_line(d: dict[str, Any]) -> str:
    if "error" in d or not d:
        return f"deployable speed     not measured ({d.get('error', 'skipped')})"
    ips = d["images_per_s"]
    return (
        f"deployable speed     {d['path']}, batch 1: dense {ips['dense/deploy']:.0f} -> pruned "
        f"{ips['pruned/deploy']:.0f} images/s (x{d['deploy_speed_vs_dense']:.2f}; eager at batch 1: "
        f"x{d['eager_speed_vs_dense']:.2f}; x{d['deploy_vs_dense_eager']:.2f} the dense eager model)"
    )
