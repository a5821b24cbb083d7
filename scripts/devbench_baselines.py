#!/usr/bin/env python
"""VBP and grouped global pruning on the dev-bench at whole-model parameter budgets (one GPU, < 5 min).

Steps: dense fine-tune of the CJK-pretrained tiny ViT on the 200-class scripts task (15 epochs, AdamW
5e-4, wd 0.05, batch 512, cosine, label smoothing 0.1, glyph augmentation, bf16); then, from that
fine-tuned dense model, for every budget in ``--budgets`` (fraction of whole-model params removed):

* ``vbp`` (only where reachable: MLPs hold 65.7 % of this model, so 75 % is skipped) with the paper recipe (KD from the
  dense model, 10 epochs, AdamW 1.5e-5, wd 0.01, batch 32) and ``vbp_ft`` with KD on the dense
  recipe (15 epochs, 5e-4, batch 512), to separate selection from the recipe;
* ``global`` with every criterion in ``--criteria`` (param-matched), fine-tuned with the dense recipe.

Prints one JSON document (also written to ``--out``): accuracy before/after fine-tune, params,
MACs, wall times. Run from the repo root, e.g.::

    python scripts/devbench_baselines.py --bench /work/shared/dev-bench --out runs/devbench_baselines.json

``--smoke`` runs a few hundred images for one epoch (CPU check of the plumbing, not a result).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p3b_hf.commands.prune import add_arguments  # noqa: E402
from p3b_hf.cost import count_cost  # noqa: E402
from p3b_hf.data import ImageData, build_datasets, devbench_dataset_dict, make_collator  # noqa: E402
from p3b_hf.errors import BudgetError  # noqa: E402
from p3b_hf.loading import load_image_processor, load_model  # noqa: E402
from p3b_hf.methods import METHODS, global_pruning, vbp  # noqa: E402
from p3b_hf.methods.baseline_common import evaluate, finetune  # noqa: E402
from p3b_hf.methods.importance import CRITERIA  # noqa: E402
from p3b_hf.pipeline import PruneContext, adapt_classifier  # noqa: E402

DENSE = {"epochs": 15.0, "lr": 5e-4, "weight_decay": 0.05, "batch_size": 512}


def default_bench() -> str:
    for p in ("/work/shared/dev-bench", "_device/dev-bench", "dev-bench"):
        if Path(p, "scripts200_dev.npz").exists():
            return p
    return "/work/shared/dev-bench"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", default=default_bench(), help="dev-bench folder (npz/json + pretrained/)")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.75],
                   help="fractions of whole-model params to remove")
    p.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=list(CRITERIA))
    p.add_argument("--no-vbp-ft", action="store_true", help="skip the VBP variant on the dense recipe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=8)
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--smoke", action="store_true", help="tiny CPU plumbing check (not a result)")
    return p.parse_args(argv)


def cli_args(work: Path, extra: list[str], opts: argparse.Namespace, device: str) -> argparse.Namespace:
    """Method args parsed by the real ``p3b-hf prune`` parser (baseline flags only)."""
    parser = argparse.ArgumentParser()
    with mock.patch.dict(METHODS, {k: v for k, v in METHODS.items() if k in ("vbp", "global")}, clear=True):
        add_arguments(parser)
    base = ["--model", "dev-bench", "--dataset", "dev-bench", "--output-dir", str(work / "out"), "--device", device,
            "--seed", str(opts.seed), "--num-workers", str(opts.num_workers), "--logging-steps", "20"]
    if device == "cuda":
        base.append("--bf16")
    if opts.smoke:
        base += ["--hessian-samples", "16", "--taylor-batches", "2", "--calib-batch-size", "8"]
    return parser.parse_args(base + extra)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = parse(argv)
    torch.manual_seed(opts.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bench = Path(opts.bench)
    n_max = 200 if opts.smoke else None
    dd = devbench_dataset_dict(bench / "scripts200_dev.npz", bench / "scripts200_dev.json", max_per_split=n_max)
    labels = dd["train"].features["label"].names
    data = ImageData(train=dd["train"], eval=dd["validation"], image_column="image", label_column="label",
                     labels=labels, source=str(bench))
    model_dir = str(bench / "pretrained" / "vit-tiny-cjk1000")
    processor = load_image_processor(model_dir)
    model = load_model(model_dir)
    adapt_classifier(model, labels)
    train_ds, eval_ds = build_datasets(data, processor, image_size=32, augment="glyph")
    collator = make_collator(len(labels), mixup=0.0, cutmix=0.0, label_smoothing=0.1)
    work = Path(tempfile.mkdtemp(prefix="devbench_baselines_"))
    dense_recipe = dict(DENSE, epochs=1.0) if opts.smoke else DENSE

    def context(extra: list[str], m: torch.nn.Module, tag: str) -> PruneContext:
        args = cli_args(work / tag, extra, opts, device)
        args.save_strategy = "no"  # no Trainer checkpoints: they would cost more time than the training
        return PruneContext(args=args, model=m, image_processor=processor, data=data, train_ds=train_ds,
                            eval_ds=eval_ds, collator=collator, num_labels=len(labels),
                            staging_dir=work / tag / "staging", work_dir=work / tag / "work")

    common = ["--batch-size", str(dense_recipe["batch_size"]), "--epochs", str(dense_recipe["epochs"]),
              "--lr", str(dense_recipe["lr"]), "--weight-decay", str(dense_recipe["weight_decay"])]
    records: list[dict[str, Any]] = []
    dense_cost = count_cost(model)

    t0 = time.time()
    ctx = context(common, model, "dense")
    model.to(device)
    ft = finetune(ctx, model, phase="dense", epochs=dense_recipe["epochs"], lr=dense_recipe["lr"],
                  weight_decay=dense_recipe["weight_decay"])
    dense_eval = evaluate(ctx, model, "dense eval")
    records.append({"method": "dense", "accuracy": dense_eval["accuracy"], "params": dense_cost["params"],
                    "macs": dense_cost["macs"], "wall_time_s": time.time() - t0, "train_time_s": ft["train_time_s"]})
    dense = model.cpu().eval()

    def run(name: str, module: Any, extra: list[str], budget: float, criterion: str | None = None) -> None:
        t = time.time()
        tag = f"{name}_{criterion or ''}_{budget}"
        c = context(extra + ["--prune-ratio", str(budget)], copy.deepcopy(dense), tag)
        rec: dict[str, Any] = {"method": name, "criterion": criterion, "prune_ratio": budget}
        try:
            res = module.run_cli(c.args, c)
        except BudgetError as e:
            rec.update(skipped=str(e))
            records.append(rec)
            return
        cost = count_cost(res.pruned_model)
        h = res.history
        rec.update(accuracy=res.eval_metrics.get("accuracy"), accuracy_before_finetune=h["accuracy_before_finetune"],
                   dense_accuracy=res.dense_eval_metrics.get("accuracy"), params=cost["params"], macs=cost["macs"],
                   achieved_param_reduction=1 - cost["params"] / dense_cost["params"],
                   achieved_mac_reduction=1 - cost["macs"] / dense_cost["macs"], wall_time_s=time.time() - t,
                   train_time_s=h["finetune"].get("train_time_s"), timings=h.get("timings"))
        rec["kept"] = h.get("kept") or {"mlp": h.get("kept_mlp")}
        if name.startswith("vbp"):
            rec["percentage"] = h["percentage"]
        records.append(rec)
        print(json.dumps(rec), flush=True)

    vbp_paper = ["--batch-size", "32", "--vbp-epochs", "1" if opts.smoke else "10"]
    vbp_dense = common + ["--vbp-epochs", str(dense_recipe["epochs"]), "--vbp-lr", str(dense_recipe["lr"]),
                          "--vbp-weight-decay", str(dense_recipe["weight_decay"])]
    for budget in opts.budgets:
        run("vbp", vbp, vbp_paper, budget)
        if not opts.no_vbp_ft:
            run("vbp_ft", vbp, vbp_dense, budget)
        for crit in opts.criteria:
            run("global", global_pruning, common + ["--importance", crit], budget, crit)

    out = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
           "dtype": "bf16 autocast" if device == "cuda" else "fp32", "dense_recipe": dense_recipe,
           "smoke": opts.smoke, "records": records}
    text = json.dumps(out, indent=1, default=str)
    print(text)
    if opts.out:
        Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.out).write_text(text)
    return out


if __name__ == "__main__":
    main()
