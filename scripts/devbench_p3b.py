#!/usr/bin/env python
"""P3B on the dev-bench: dense fine-tune vs P3B at 50 % and 75 % whole-model parameter reduction
(one GPU, < 8 min on an H100).

All runs start from the CJK-pretrained tiny ViT with a fresh 200-class head (the transfer setting P3B is
about) and use the dense recipe's data pipeline (glyph augmentation, label smoothing 0.1, no mixup,
batch 512, AdamW wd 0.05, bf16 autocast):

* ``dense``: 15 epochs, lr 5e-4, cosine (the dev-bench README recipe);
* ``p3b``: ``--p3b-epochs`` (default 30) of P3B pruning-while-fine-tuning (constant lr 5e-4 as in the
  reference, phases 3/25/50 of the run, BPI lr 5e-4), accuracy of the pruned model right after
  finalisation;
* ``p3b+ft``: the pruned model fine-tuned with the dense recipe (P3B's second stage, shortened).

Prints one JSON document (also written to ``--out``): accuracy, params, MACs, wall times, per-block keep
ratios. Run from the repo root::

    python scripts/devbench_p3b.py --out runs/devbench_p3b.json

``--smoke`` runs a few hundred images for 2 epochs on CPU (checks the plumbing, not a result).
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devbench_common import DENSE, base_parser  # noqa: E402

from p3b_hf.commands.prune import add_arguments  # noqa: E402
from p3b_hf.cost import count_cost  # noqa: E402
from p3b_hf.data import ImageData, build_datasets, devbench_dataset_dict, make_collator  # noqa: E402
from p3b_hf.loading import load_image_processor, load_model  # noqa: E402
from p3b_hf.methods import p3b  # noqa: E402
from p3b_hf.methods.baseline_common import evaluate, finetune  # noqa: E402
from p3b_hf.pipeline import PruneContext, adapt_classifier  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = base_parser(__doc__)
    p.add_argument("--p3b-epochs", type=float, default=30.0, help="epochs of the P3B pruning run")
    p.add_argument("--no-finetune", action="store_true", help="skip the p3b+ft fine-tune of the pruned models")
    p.add_argument("--extra", default="", help="extra P3B flags, e.g. '--reference' or '--update-every 5'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=8)
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--smoke", action="store_true", help="tiny CPU plumbing check (not a result)")
    return p.parse_args(argv)


def cli_args(work: Path, extra: list[str], opts: argparse.Namespace, device: str) -> argparse.Namespace:
    """Args parsed by the real ``p3b-hf prune`` parser (so P3B's flags are exactly the CLI's)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--method", "p3b", "--model", "dev-bench", "--dataset", "dev-bench", "--output-dir", str(work / "out"),
            "--device", device, "--seed", str(opts.seed), "--num-workers", str(opts.num_workers),
            "--logging-steps", "50"]
    if device == "cuda":
        base.append("--bf16")
    return parser.parse_args(base + extra)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = parse(argv)
    torch.manual_seed(opts.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bench = Path(opts.bench)
    dd = devbench_dataset_dict(bench / "scripts200_dev.npz", bench / "scripts200_dev.json",
                               max_per_split=400 if opts.smoke else None)
    labels = dd["train"].features["label"].names
    data = ImageData(train=dd["train"], eval=dd["validation"], image_column="image", label_column="label",
                     labels=labels, source=str(bench))
    model_dir = str(bench / "pretrained" / "vit-tiny-cjk1000")
    processor = load_image_processor(model_dir)
    pretrained = load_model(model_dir)
    adapt_classifier(pretrained, labels)
    train_ds, eval_ds = build_datasets(data, processor, image_size=32, augment="glyph")
    collator = make_collator(len(labels), mixup=0.0, cutmix=0.0, label_smoothing=0.1)
    work = Path(tempfile.mkdtemp(prefix="devbench_p3b_"))
    dense_recipe = dict(DENSE, epochs=1.0, batch_size=64) if opts.smoke else DENSE
    p3b_epochs = 2.0 if opts.smoke else opts.p3b_epochs
    dense_cost = count_cost(pretrained)
    common = ["--batch-size", str(dense_recipe["batch_size"]), "--lr", str(dense_recipe["lr"]),
              "--weight-decay", str(dense_recipe["weight_decay"])]

    def context(extra: list[str], m: torch.nn.Module, tag: str) -> PruneContext:
        args = cli_args(work / tag, extra, opts, device)
        return PruneContext(args=args, model=m, image_processor=processor, data=data, train_ds=train_ds,
                            eval_ds=eval_ds, collator=collator, num_labels=len(labels),
                            staging_dir=work / tag / "staging", work_dir=work / tag / "work")

    def cost_fields(m: torch.nn.Module) -> dict[str, Any]:
        c = count_cost(m)
        return {"params": c["params"], "macs": c["macs"], "achieved_param_reduction": 1 - c["params"] / dense_cost[
            "params"], "achieved_mac_reduction": 1 - c["macs"] / dense_cost["macs"]}

    records: list[dict[str, Any]] = []
    t0 = time.time()
    dense = copy.deepcopy(pretrained).to(device)
    ctx = context(common + ["--epochs", str(dense_recipe["epochs"])], dense, "dense")
    ft = finetune(ctx, dense, phase="dense", epochs=dense_recipe["epochs"], lr=dense_recipe["lr"],
                  weight_decay=dense_recipe["weight_decay"])
    rec = {"method": "dense", "accuracy": evaluate(ctx, dense, "dense eval")["accuracy"],
           "wall_time_s": time.time() - t0, "train_time_s": ft["train_time_s"], **cost_fields(dense)}
    records.append(rec)
    print(json.dumps(rec), flush=True)

    for budget in opts.budgets:
        t = time.time()
        tag = f"p3b_{budget}"
        extra = common + ["--epochs", str(p3b_epochs), "--prune-ratio", str(budget), *opts.extra.split()]
        c = context(extra, copy.deepcopy(pretrained).to(device), tag)
        res = p3b.run_cli(c.args, c)
        h = res.history
        fin = h["finalize"]["finalize"]
        rec = {"method": "p3b", "prune_ratio": budget, "epochs": p3b_epochs, "accuracy": res.eval_metrics.get(
            "accuracy"), "hard_masked_accuracy": fin.get("hard_masked", {}).get("accuracy"),
            "wall_time_s": time.time() - t, "train_time_s": h["wall_time_train_s"], **cost_fields(res.pruned_model),
            "schedule": h["schedule"], "num_updates": len(h["updates"]),
            "keep_per_block": [round(k, 4) for k in h["updates"][-1]["keep_achieved"]] if h["updates"] else None,
            "skipped_taylor_steps": h["skipped_taylor_steps"]}
        records.append(rec)
        print(json.dumps(rec), flush=True)
        if opts.no_finetune:
            continue
        t = time.time()
        pruned = res.pruned_model.to(device).train()
        c2 = context(common + ["--epochs", str(dense_recipe["epochs"])], pruned, tag + "_ft")
        ft = finetune(c2, pruned, phase="ft", epochs=dense_recipe["epochs"], lr=dense_recipe["lr"],
                      weight_decay=dense_recipe["weight_decay"])
        rec = {"method": "p3b+ft", "prune_ratio": budget, "accuracy": evaluate(c2, pruned, "ft eval")["accuracy"],
               "wall_time_s": time.time() - t, "train_time_s": ft["train_time_s"], **cost_fields(pruned)}
        records.append(rec)
        print(json.dumps(rec), flush=True)

    out = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
           "dtype": "bf16 autocast" if device == "cuda" else "fp32", "dense_recipe": dense_recipe,
           "p3b_epochs": p3b_epochs, "smoke": opts.smoke, "total_wall_time_s": time.time() - t0,
           "records": records}
    text = json.dumps(out, indent=1, default=str)
    print(text)
    if opts.out:
        Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.out).write_text(text)
    return out


if __name__ == "__main__":
    main()
