"""Tiny synthetic P3B runs shared by tests/test_p3b_trainer.py and the two-process script (not a test file).

Run as a script under torchrun: ``torchrun --nproc_per_node 2 tests/p3b_tiny_run.py OUT_DIR`` writes one
line per mask update and rank (``step sha256-of-all-masks``) to ``OUT_DIR/masks_rank{r}.txt``.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Any

import numpy as np
import torch

TINY_CFG = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    image_size=32,
    patch_size=8,
    num_labels=4,
)


def tiny_model(kind: str = "vit", seed: int = 0) -> torch.nn.Module:
    from transformers import (
        DeiTConfig,
        DeiTForImageClassificationWithTeacher,
        ViTConfig,
        ViTForImageClassification,
    )

    torch.manual_seed(seed)
    if kind == "vit":
        return ViTForImageClassification(ViTConfig(**TINY_CFG))
    return DeiTForImageClassificationWithTeacher(DeiTConfig(**TINY_CFG))


def synthetic_dataset(n: int = 192, seed: int = 0) -> Any:
    """Learnable 4-class images: a class-dependent offset in one colour channel plus noise."""
    import datasets

    g = np.random.default_rng(seed)
    y = g.integers(0, 4, n)
    x = g.normal(size=(n, 3, 32, 32)).astype("float32")
    x[np.arange(n), y % 3] += 0.5 + 0.3 * y[:, None, None]
    return datasets.Dataset.from_dict({"pixel_values": x, "labels": y}).with_format("torch")


def training_args(out: str, **kw: Any) -> Any:
    from transformers import TrainingArguments

    base = dict(
        output_dir=out,
        num_train_epochs=8,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        learning_rate=1e-3,
        weight_decay=0.05,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1000,
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    base.update(kw)
    return TrainingArguments(**base)


def mask_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.p3b_gates.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().double().cpu().numpy().tobytes())
    return h.hexdigest()


def _ddp_main(out: str) -> None:
    from transformers import TrainerCallback

    from p3b_hf.trainer import P3BConfig, P3BTrainer

    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))

    class Hashes(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            hist = trainer.pruning.state.history
            if hist and hist[-1]["step"] == state.global_step:
                with open(os.path.join(out, f"masks_rank{rank}.txt"), "a") as f:
                    f.write(
                        f"{state.global_step} {mask_hash(model)} {hist[-1]['model_keep']:.6f} "
                        f"{hist[-1]['window_forwards']} {hist[-1]['window_steps']}\n"
                    )

    model = tiny_model("vit")
    ds = synthetic_dataset(128)
    args = training_args(
        os.path.join(out, "run"),
        num_train_epochs=4,
        per_device_train_batch_size=16,
        ddp_backend="gloo",
        ddp_find_unused_parameters=False,
    )
    cfg = P3BConfig(
        prune_ratio=0.5,
        prune_start_epoch=1,
        prune_sparse_epoch=2,
        prune_finalize_epoch=4,
        update_every=2,
        bpi_every=2,
        save_dir=None,
    )
    trainer = P3BTrainer(
        model=model,
        args=args,
        train_dataset=ds,
        eval_dataset=ds.select(range(32)),
        p3b=cfg,
        callbacks=[Hashes()],
    )
    trainer.train()
    with open(os.path.join(out, f"final_rank{rank}.txt"), "w") as f:
        f.write(f"{mask_hash(model)} {sum(p.numel() for p in trainer.pruned_model.parameters())}\n")


if __name__ == "__main__":
    _ddp_main(sys.argv[1])
