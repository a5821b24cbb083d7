#!/usr/bin/env python
"""VBP and grouped global pruning on the dev-bench at whole-model parameter budgets (one GPU, < 5 min).

Steps: dense fine-tune of the CJK-pretrained tiny ViT on the 200-class scripts task (15 epochs, AdamW
5e-4, wd 0.05, batch 512, cosine, label smoothing 0.1, glyph augmentation, bf16); then, from that
fine-tuned dense model, for every budget in ``--budgets`` (fraction of whole-model params removed):

* ``vbp`` (only where reachable: MLPs hold 65.7 % of this model, so 75 % is skipped) with the paper
  recipe (KD from the dense model, 10 epochs, AdamW 1.5e-5, wd 0.01, batch 32); with ``--vbp-ft``
  also ``vbp_ft``: KD on the dense recipe (15 epochs, 5e-4, batch 512), to separate selection from
  the recipe;
* ``global`` with every criterion in ``--criteria`` (param-matched), fine-tuned with the dense recipe.

Prints one JSON document (also written to ``--out``): accuracy before/after fine-tune, params,
MACs, wall times. Run from the repo root, e.g.::

    python scripts/devbench_baselines.py --out runs/devbench_baselines.json

``--smoke`` runs a few hundred images for one epoch (CPU check of the plumbing, not a result).

Data: the arrays are held as eval-rendered tensors (black ink on white, normalised with the
checkpoint's mean/std 0.5) and the README's glyph augmentation runs batched in the collator
(random dark ink / light background per image, +-8 deg, scale 0.9-1.1, noise 0.03, label smoothing
0.1): the per-image PIL pipeline of ``p3b_hf.data`` would take longer than the training itself.
Statistics (VBP) and gradient scores (global) see the un-augmented training images.
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

import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from devbench_common import DENSE, base_parser  # noqa: E402

from p3b_hf.commands.prune import add_arguments  # noqa: E402
from p3b_hf.cost import count_cost  # noqa: E402
from p3b_hf.errors import BudgetError  # noqa: E402
from p3b_hf.loading import load_image_processor, load_model  # noqa: E402
from p3b_hf.methods import METHODS, global_pruning, vbp  # noqa: E402
from p3b_hf.methods.baseline_common import evaluate, finetune  # noqa: E402
from p3b_hf.methods.importance import CRITERIA  # noqa: E402
from p3b_hf.pipeline import PruneContext, adapt_classifier  # noqa: E402
from p3b_hf.transforms import smooth_one_hot  # noqa: E402


class ArrayDataset(torch.utils.data.Dataset):
    """``{"pixel_values": normalised eval rendering [3,32,32], "labels": int}`` from dev-bench arrays."""

    def __init__(self, coverage: np.ndarray, labels: np.ndarray) -> None:
        x = 1.0 - torch.from_numpy(coverage).float() / 255.0  # black ink on white, [0, 1]
        self.x = ((x - 0.5) / 0.5).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
        self.y = torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"pixel_values": self.x[i], "labels": int(self.y[i])}


class GlyphBatchCollator:
    """Training collator: the README's glyph augmentation, batched, + label smoothing (dense targets)."""

    def __init__(self, num_classes: int, smoothing: float = 0.1) -> None:
        self.num_classes, self.smoothing = num_classes, smoothing

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        x = torch.stack([f["pixel_values"] for f in features]) * 0.5 + 0.5
        y = torch.tensor([int(f["labels"]) for f in features])
        b = x.shape[0]
        cov = 1.0 - x.mean(1, keepdim=True)
        angle = torch.deg2rad(torch.empty(b).uniform_(-8.0, 8.0))
        scale = torch.empty(b).uniform_(0.9, 1.1)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        zero = torch.zeros(b)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta, list(cov.shape), align_corners=False)
        cov = F.grid_sample(cov, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp_(0, 1)
        ink = torch.empty(b, 3, 1, 1).uniform_(0.0, 0.45)
        bg = torch.empty(b, 3, 1, 1).uniform_(0.55, 1.0)
        out = (bg + (ink - bg) * cov + 0.03 * torch.randn(b, 3, *cov.shape[-2:])).clamp_(0, 1)
        return {"pixel_values": (out - 0.5) / 0.5, "labels": smooth_one_hot(y, self.num_classes, self.smoothing)}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = base_parser(__doc__)
    p.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=list(CRITERIA))
    p.add_argument("--vbp-ft", action="store_true",
                   help="also run VBP with KD on the dense recipe (adds ~15 s per budget)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=4)
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
    labels = [str(c) for c in json.loads((bench / "scripts200_dev.json").read_text())["classes"]]
    with np.load(bench / "scripts200_dev.npz") as z:
        train_ds = ArrayDataset(z["train_images"][:n_max], z["train_labels"][:n_max])
        eval_ds = ArrayDataset(z["validation_images"][:n_max], z["validation_labels"][:n_max])
    model_dir = str(bench / "pretrained" / "vit-tiny-cjk1000")
    processor = load_image_processor(model_dir)
    model = load_model(model_dir)
    adapt_classifier(model, labels)
    collator = GlyphBatchCollator(len(labels), 0.1)
    work = Path(tempfile.mkdtemp(prefix="devbench_baselines_"))
    dense_recipe = dict(DENSE, epochs=1.0) if opts.smoke else DENSE

    def context(extra: list[str], m: torch.nn.Module, tag: str) -> PruneContext:
        args = cli_args(work / tag, extra, opts, device)
        args.save_strategy = "no"  # no Trainer checkpoints: they would cost more time than the training
        return PruneContext(args=args, model=m, image_processor=processor, data=None, train_ds=train_ds,
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
        if opts.vbp_ft:
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
