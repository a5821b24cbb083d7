"""Every P3B run of ``tests/test_p3b_ddp.py`` in ONE ``torchrun --nproc_per_node 2`` launch (not a test file).

``torchrun --nproc_per_node 2 tests/p3b_ddp_run.py OUT DATA DENSE``:

1. ``OUT/masks``: the mask-hash run of :mod:`p3b_tiny_run` (``find_unused_parameters=False``, finalise at the
   last step, patch heads on every 2nd micro-batch);
2. ``OUT/api``: the Python quick start with HF's default ``TrainingArguments`` DDP settings
   (``ddp_find_unused_parameters=None`` -> DDP's ``find_unused_parameters=True``), finalised after epoch 1 of
   2 and trained on, the pruned model saved by rank 0 (``save_dir``);
3. ``OUT/cli``: ``p3b-hf prune --epochs 2 --prune-finalize-epoch 1`` (the CLI sets
   ``find_unused_parameters=False``) on the saved tiny data set / dense model.

For 2 and 3 every rank writes ``OUT/<run>_rank{r}.pt``: the state dict of the pruned model the trainer built at
the end of training, the hard-masked trained model's and the pruned model's logits on a fixed batch, the
BPI heads' weights, the mask hash and the finalize metrics.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from cli_args import tiny_train_args


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _probe() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(123))


def _record(cb: Any, model: torch.nn.Module) -> dict[str, Any]:
    """What this rank's trainer ended with (called at the end of ``on_train_end``)."""
    from p3b_tiny_run import mask_hash

    pruned = cb.pruned_model
    was = model.training
    model.eval()
    with torch.no_grad():
        x = _probe().to(next(model.parameters()).device)
        hard = model(pixel_values=x).logits.double().cpu()
        small = pruned(pixel_values=x.to(next(pruned.parameters()).device)).logits.double().cpu()
    model.train(was)
    return {
        "pruned_state": {k: v.detach().cpu().clone() for k, v in pruned.state_dict().items()},
        "hard_logits": hard,
        "pruned_logits": small,
        "heads": {k: v.detach().cpu().clone() for k, v in model.p3b_bpi.state_dict().items()},
        "mask_hash": mask_hash(model),
        "finalize_step": cb.pruner.state.finalize_step,
        "stages": sorted(cb.finalize_metrics),
    }


def _patched_train_end(out: Path, name: str) -> Any:
    """Wrap ``PruningCallback.on_train_end`` to save this rank's record; returns the original."""
    from p3b_hf.methods.p3b.trainer import PruningCallback

    orig = PruningCallback.on_train_end

    def on_train_end(self: PruningCallback, args: Any, state: Any, control: Any, **kw: Any) -> None:
        orig(self, args, state, control, **kw)
        rec = _record(self, self.pruner.model)
        rec["global_step"] = state.global_step
        torch.save(rec, out / f"{name}_rank{_rank()}.pt")

    PruningCallback.on_train_end = on_train_end
    return orig


def api_run(out: Path) -> None:
    """The docs' Python quick start, DDP settings left to HF (find_unused_parameters=True)."""
    from p3b_tiny_run import synthetic_dataset, tiny_model, training_args

    from p3b_hf.methods.p3b.trainer import PruningCallback
    from p3b_hf.trainer import P3BConfig, P3BTrainer

    orig = _patched_train_end(out, "api")
    try:
        ds = synthetic_dataset(64)
        args = training_args(str(out / "api_run"), num_train_epochs=2, per_device_train_batch_size=8)
        assert args.ddp_find_unused_parameters is None  # HF's default: DDP finds unused parameters
        cfg = P3BConfig(
            prune_ratio=0.5,
            prune_start_epoch=0.25,
            prune_sparse_epoch=0.75,
            prune_finalize_epoch=1,
            update_every=1,
            save_dir=str(out / "api_pruned"),
        )
        trainer = P3BTrainer(
            model=tiny_model("vit"), args=args, train_dataset=ds, eval_dataset=ds.select(range(16)), p3b=cfg
        )
        trainer.train()
    finally:
        PruningCallback.on_train_end = orig


def cli_run(out: Path, data: Path, dense: Path) -> None:
    """``p3b-hf prune --epochs 2 --prune-finalize-epoch 1`` (find_unused_parameters=False)."""
    from p3b_hf.cli import main
    from p3b_hf.methods.p3b.trainer import PruningCallback

    orig = _patched_train_end(out, "cli")
    try:
        argv = [
            "prune",
            "--method",
            "p3b",
            "--prune-ratio",
            "0.5",
            "--epochs",
            "2",
            "--prune-finalize-epoch",
            "1",
            "--update-every",
            "1",
            "--model",
            str(dense),
            "--dataset",
            str(data),
            "--output-dir",
            str(out / "cli_pruned"),
            *tiny_train_args(batch_size=8),
            "--seed",
            "0",
            "--logging-steps",
            "2",
        ]
        assert main(argv) == 0
    finally:
        PruningCallback.on_train_end = orig


if __name__ == "__main__":
    from p3b_tiny_run import _ddp_main

    torch.set_num_threads(1)
    root, data_dir, dense_dir = (Path(a) for a in sys.argv[1:4])
    (root / "masks").mkdir(parents=True, exist_ok=True)
    _ddp_main(str(root / "masks"))
    api_run(root)
    cli_run(root, data_dir, dense_dir)
