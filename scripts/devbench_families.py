#!/usr/bin/env python
"""`p3b-hf compare` on the dev-bench with a DINOv2-shaped and a BEiT-shaped model (issue 16's evidence).

No DINOv2/BEiT pretrained on the dev-bench's source task exists, so both are **transplants** of the shipped
CJK-pretrained tiny ViT (``p3b_hf.models.transplant``): same widths (hidden 192, 12 layers, 3 heads, MLP 768,
32 px, patch 4), layer scale 1, and

* DINOv2: same position embeddings, classifier on ``[CLS, mean(patches)]`` -> its logits equal the ViT's;
* BEiT: absolute positions kept, per-layer relative position bias tables at zero (trainable), key bias
  dropped (softmax-invariant), mean pooling + pooler LayerNorm -> every layer output equals the ViT's.

The script checks those equalities on dev-bench images, saves the models (with the ViT's image processor) under
``OUTPUT/models/``, then runs the real CLI per family, as ``scripts/devbench_compare.py`` does for the ViT
(glyph augmentation, label smoothing 0.1, AdamW lr 5e-4 wd 0.05, batch 64 fp32 on CPU / 512 bf16 on CUDA; a fresh
200-class head; VBP starts from the dense cell)::

    python scripts/devbench_families.py --epochs 2 --max-train-samples 2048 --max-eval-samples 1000 \
        --output-dir runs/devbench_families
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devbench_common import DENSE, base_parser  # noqa: E402

from p3b_hf.cli import main as cli_main  # noqa: E402
from p3b_hf.data import devbench_dataset_dict  # noqa: E402
from p3b_hf.models.transplant import vit_to_beit, vit_to_dinov2  # noqa: E402


def _check_transplant(vit: torch.nn.Module, model: torch.nn.Module, family: str, bench: Path) -> float:
    """Max |difference| of the layer outputs (DINOv2: also the logits) against the ViT on 64 validation glyphs."""
    arr = np.load(bench / "scripts200_dev.npz")["validation_images"][:64]
    x = torch.from_numpy(1.0 - arr.astype("float32") / 255.0)[:, None].expand(-1, 3, -1, -1)
    x = (x - 0.5) / 0.5
    with torch.no_grad():
        ref = vit(pixel_values=x, output_hidden_states=True)
        out = model(pixel_values=x, output_hidden_states=True)
    diff = max(float((a - b).abs().max()) for a, b in zip(out.hidden_states, ref.hidden_states))
    if family == "dinov2":
        diff = max(diff, float((out.logits - ref.logits).abs().max()))
    if diff > 1e-3:
        raise SystemExit(f"{family} transplant differs from the ViT by {diff:.2e}")
    return diff


def main(argv: list[str] | None = None) -> int:
    from transformers import ViTForImageClassification

    p = base_parser(__doc__)
    p.add_argument("--families", nargs="+", choices=("dinov2", "beit"), default=["dinov2", "beit"])
    p.add_argument("--methods", default="p3b,vbp,global-taylor")
    p.add_argument("--epochs", type=float, default=2.0, help="training epochs of every method (and of dense)")
    p.add_argument("--max-train-samples", type=int, default=None, help="subsample the 10,046 training glyphs")
    p.add_argument("--max-eval-samples", type=int, default=None, help="subsample the 1,954 validation glyphs")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--batch-size", type=int, default=None, help="default: 512 on CUDA, 64 on CPU")
    p.add_argument("--num-workers", type=int, default=None, help="default: 8 on CUDA, 1 on CPU")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(budgets=[0.5])
    a = p.parse_args(argv)
    gpu = torch.cuda.is_available()
    bench, out = Path(a.bench), Path(a.output_dir)
    data_dir = out / "data"
    if not (data_dir / "dataset_dict.json").exists():
        devbench_dataset_dict(bench / "scripts200_dev.npz", bench / "scripts200_dev.json").save_to_disk(str(data_dir))
    source = bench / "pretrained" / "vit-tiny-cjk1000"
    vit = ViTForImageClassification.from_pretrained(source).eval()
    batch = a.batch_size or (DENSE["batch_size"] if gpu else 64)
    workers = a.num_workers if a.num_workers is not None else (8 if gpu else 1)
    flags = ["--batch-size", str(batch), "--lr", str(DENSE["lr"]), "--weight-decay", str(DENSE["weight_decay"]),
             "--augment", "glyph", "--mixup", "0", "--cutmix", "0", "--label-smoothing", "0.1",
             "--num-workers", str(workers), "--seed", str(a.seed), "--logging-steps", "50"]
    if a.max_train_samples:
        flags += ["--max-train-samples", str(a.max_train_samples)]
    if a.max_eval_samples:
        flags += ["--max-eval-samples", str(a.max_eval_samples)]
    if gpu:
        flags.append("--bf16")
    code = 0
    for family in a.families:
        model_dir = out / "models" / f"{family}-tiny-cjk1000"
        if not (model_dir / "model.safetensors").exists():
            model = vit_to_dinov2(vit) if family == "dinov2" else vit_to_beit(vit)
            diff = _check_transplant(vit, model, family, bench)
            print(f"{family}: transplanted from {source}, max |diff| vs the ViT {diff:.2e}", flush=True)
            model.save_pretrained(model_dir)
            shutil.copy(source / "preprocessor_config.json", model_dir / "preprocessor_config.json")
        argv_compare = ["compare", "--methods", a.methods, "--prune-ratio", ",".join(str(b) for b in a.budgets),
                        "--model", str(model_dir), "--dataset", str(data_dir), "--output-dir", str(out / family),
                        "--epochs", str(a.epochs), "--dense-baseline", "--bench-device", "cuda" if gpu else "cpu",
                        "--", *flags]
        print("p3b-hf " + " ".join(argv_compare), flush=True)
        code = code or cli_main(argv_compare)
    return code


if __name__ == "__main__":
    sys.exit(main())
