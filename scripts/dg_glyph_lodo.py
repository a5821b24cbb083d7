#!/usr/bin/env python
"""Leave-one-domain-out ``p3b-hf compare`` on the generated multi-domain glyph set (offline, CPU-sized).

The offline stand-in for PACS / Office-Home: :func:`p3b_hf.demo_data.domain_glyph_dataset` renders 20
Greek/Cyrillic glyphs in four domains (``ink``, ``outline``, ``colour``, ``faded``: each a font family drawn
in its own style) in the Hub layout of those sets (``image`` / ``label`` / ``domain`` in one split), written
once as ``OUTPUT/data``. The source model is the demo's small ViT pretrained on Latin glyphs
(``OUTPUT/source_model``, cached). Then :func:`p3b_hf.compare.run_compare` with ``protocol="lodo"``, what

    p3b-hf compare --protocol lodo --domain-column domain --dataset OUTPUT/data --model OUTPUT/source_model \\
        --methods p3b,global-hessian,global-random --prune-ratio 0.5,0.95 ...

runs: every method once per held-out domain (``OUTPUT/compare/<domain>/``, with the dense cell), averaged.
Finished cells are reused when the command is re-run. Run from the repository root:

    python -m scripts.dg_glyph_lodo --output-dir runs/dg_glyph          # ~15-30 min on 2 shared CPU cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from p3b_hf import demo_data
from p3b_hf.compare import CompareJob, CompareOptions, markdown_table, run_compare
from p3b_hf.methods.p3b import P3BConfig
from p3b_hf.options import DataOptions, OutputOptions, TrainOptions, command_line
from p3b_hf.report import portable


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output-dir", default="runs/dg_glyph")
    p.add_argument("--methods", default="p3b,global-hessian,global-random")
    p.add_argument("--prune-ratio", default="0.5,0.95")
    p.add_argument("--epochs", type=float, default=6.0, help="training epochs of every cell (the demo's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW lr of every cell (the demo's)")
    p.add_argument("--renders", type=int, default=3, help="renders per (class, font) in every domain")
    p.add_argument("--pretrain-steps", type=int, default=450, help="source pretraining steps (the demo's)")
    p.add_argument(
        "--bench", action="store_true", help="also measure the speed column (CPU, noisy when shared)"
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)"
    )
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t0 = time.time()
    source, info = demo_data.pretrain_source_model(
        out / "source_model", demo_data.SourceModelSpec(steps=a.pretrain_steps, seed=a.seed)
    )
    times["source_model_s"] = time.time() - t0
    t = time.time()
    data_dir = out / "data"
    if not data_dir.exists():  # deterministic: a re-run reuses it (and the finished cells made from it)
        demo_data.domain_glyph_dataset(renders_per_font=a.renders, seed=a.seed).save_to_disk(str(data_dir))
    times["data_s"] = time.time() - t
    data = DataOptions(
        dataset=str(data_dir),
        domain_column="domain",
        augment="none",
        mixup=0.0,
        cutmix=0.0,
        label_smoothing=0.1,
    )
    train = TrainOptions(
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        weight_decay=0.05,
        device="cpu",
        seed=a.seed,
        logging_steps=20,
        save_strategy="no",
    )
    compare = CompareOptions(
        model=str(source),
        methods=a.methods,
        prune_ratio=a.prune_ratio,
        protocol="lodo",
        no_bench=not a.bench,
        bench_device="cpu",
    )
    # short runs update the masks every few steps: score ΔΨ on every full batch (as the demo does)
    p3b = P3BConfig(bpi_every=1, bpi_subbatch=1.0)
    job = CompareJob(
        compare=compare,
        data=data,
        output=OutputOptions(output_dir=str(out / "compare")),
        train=train,
        method_options={"p3b": p3b},
    )
    print("same run via the CLI: p3b-hf compare " + command_line(compare, data, train, job.output, p3b))
    t = time.time()
    rows = run_compare(job)
    times["compare_s"] = time.time() - t
    times["total_s"] = time.time() - t0
    table = markdown_table(rows)
    print(table)
    (out / "dg_glyph_summary.json").write_text(
        json.dumps(
            portable({"times": times, "source_model": info, "rows": rows}), indent=1
        )  # no machine paths
    )
    print(f"times: {json.dumps({k: round(v) for k, v in times.items()})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
