"""Everything P3B carries between mask updates, and its checkpoint format.

A Trainer checkpoint gets two extra files next to ``model.safetensors`` (which holds only the HF model's
own weights): ``p3b_state.safetensors`` (masks, BPI heads incl. BatchNorm buffers, ΔΨ / Taylor window
sums, the previous window, EMA vectors, remaining block counts) and ``p3b_state.json`` (counters, flags,
history). Restoring both makes a resumed run continue bit-for-bit like an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ...errors import CheckpointError

STATE_TENSORS = "p3b_state.safetensors"
STATE_JSON = "p3b_state.json"
_TENSOR_FIELDS = (
    "dpsi_cls_sum",
    "dpsi_patch_sum",
    "dpsi_count",
    "dpsi_cls_count",
    "taylor_sum",
    "taylor_count",
    "prev_dpsi_cls_sum",
    "prev_dpsi_patch_sum",
    "prev_dpsi_count",
    "prev_dpsi_cls_count",
    "prev_taylor_sum",
    "prev_taylor_count",
    "ema_cls",
    "ema_patch",
    "remaining",
    "kappa",
)


@dataclass
class P3BState:
    """Window accumulators (current + previous), EMA state, and bookkeeping. All tensors float64.

    ``dpsi_count`` counts the micro-batches that ran the patch heads, ``dpsi_cls_count`` those that ran the
    class heads (every training forward; the cost levers only thin out the patch heads).
    """

    dpsi_cls_sum: torch.Tensor
    dpsi_patch_sum: torch.Tensor
    dpsi_count: torch.Tensor
    taylor_sum: torch.Tensor
    taylor_count: torch.Tensor
    remaining: torch.Tensor
    dpsi_cls_count: torch.Tensor | None = None
    prev_dpsi_cls_sum: torch.Tensor | None = None
    prev_dpsi_patch_sum: torch.Tensor | None = None
    prev_dpsi_count: torch.Tensor | None = None
    prev_dpsi_cls_count: torch.Tensor | None = None
    prev_taylor_sum: torch.Tensor | None = None
    prev_taylor_count: torch.Tensor | None = None
    ema_cls: torch.Tensor | None = None
    ema_patch: torch.Tensor | None = None
    kappa: torch.Tensor | None = None
    num_updates: int = 0
    finalized: bool = False
    finalize_step: int | None = None
    skipped_taylor_steps: int = 0
    last_taylor_step: int = -1
    train_forwards: int = 0  # training micro-batches seen before finalisation (drives ``bpi_every``)
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def fresh(
        cls, num_blocks: int, num_mask_elements: int, full: torch.Tensor, device: torch.device | str = "cpu"
    ) -> P3BState:
        z = lambda n: torch.zeros(n, dtype=torch.float64, device=device)  # noqa: E731
        return cls(
            z(num_blocks),
            z(num_blocks),
            z(1),
            z(num_mask_elements),
            z(1),
            full.double().to(device).clone(),
            dpsi_cls_count=z(1),
        )

    def to(self, device: torch.device | str) -> P3BState:
        for name in _TENSOR_FIELDS:
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.to(device))
        return self

    def roll_window(self, local: tuple[torch.Tensor, ...] | None = None) -> None:
        """Keep the finished window as ``prev_*`` (the finalisation re-selection merges it) and reset.

        ``local``: this process's ΔΨ sums from before the update's all-reduce, in :meth:`window_tensors`
        order. The merged window is all-reduced once more at finalisation, so keeping the reduced sums
        (``local=None``, the reference's behaviour) would count the previous window once per process.
        """
        src = local if local is not None else self.window_tensors()
        self.prev_dpsi_cls_sum, self.prev_dpsi_patch_sum = src[0].clone(), src[1].clone()
        self.prev_dpsi_count, self.prev_dpsi_cls_count = src[2].clone(), src[3].clone()
        self.prev_taylor_sum, self.prev_taylor_count = self.taylor_sum.clone(), self.taylor_count.clone()
        for t in self.window_tensors() + (self.taylor_sum, self.taylor_count):
            t.zero_()

    def window_tensors(self) -> tuple[torch.Tensor, ...]:
        """The ΔΨ window accumulators (summed over ranks at an update)."""
        return self.dpsi_cls_sum, self.dpsi_patch_sum, self.dpsi_count, self.dpsi_cls_count

    def merge_previous_window(self) -> None:
        """Add the previous window into the current one (reference finalisation quirk, docs/p3b.md §9.4)."""
        if self.prev_dpsi_count is None:
            return
        self.dpsi_cls_sum += self.prev_dpsi_cls_sum
        self.dpsi_patch_sum += self.prev_dpsi_patch_sum
        self.dpsi_count += self.prev_dpsi_count
        self.dpsi_cls_count += self.prev_dpsi_cls_count
        self.taylor_sum += self.prev_taylor_sum
        self.taylor_count += self.prev_taylor_count

    # ------------------------------------------------------------------ checkpoint IO
    def save(
        self,
        output_dir: str | os.PathLike,
        extra_tensors: dict[str, torch.Tensor],
        extra_json: dict[str, Any],
    ) -> None:
        out = Path(output_dir)
        tensors = {
            f"state.{k}": getattr(self, k).detach().cpu().contiguous()
            for k in _TENSOR_FIELDS
            if getattr(self, k) is not None
        }
        tensors.update({k: v.detach().cpu().contiguous() for k, v in extra_tensors.items()})
        save_file(tensors, str(out / STATE_TENSORS), metadata={"format": "pt"})
        meta = {
            "num_updates": self.num_updates,
            "finalized": self.finalized,
            "finalize_step": self.finalize_step,
            "skipped_taylor_steps": self.skipped_taylor_steps,
            "last_taylor_step": self.last_taylor_step,
            "train_forwards": self.train_forwards,
            "history": self.history,
            **extra_json,
        }
        tmp = out / (STATE_JSON + ".tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, out / STATE_JSON)

    @staticmethod
    def read(checkpoint: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        ckpt = Path(checkpoint)
        if not (ckpt / STATE_TENSORS).exists() or not (ckpt / STATE_JSON).exists():
            raise CheckpointError(
                f"{ckpt} has no {STATE_TENSORS}/{STATE_JSON}: it was not written by P3BTrainer. "
                "Resume P3B runs only from their own checkpoints."
            )
        return load_file(str(ckpt / STATE_TENSORS)), json.loads((ckpt / STATE_JSON).read_text())

    def load(
        self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], device: torch.device | str
    ) -> None:
        for k in _TENSOR_FIELDS:
            key = f"state.{k}"
            setattr(self, k, tensors[key].to(device) if key in tensors else None)
        # checkpoints written before the class heads ran on every forward have one count for both heads
        for cls_count, count in (
            ("dpsi_cls_count", "dpsi_count"),
            ("prev_dpsi_cls_count", "prev_dpsi_count"),
        ):
            if getattr(self, cls_count) is None and getattr(self, count) is not None:
                setattr(self, cls_count, getattr(self, count).clone())
        for k in (
            "num_updates",
            "finalized",
            "finalize_step",
            "skipped_taylor_steps",
            "last_taylor_step",
            "history",
        ):
            setattr(self, k, meta[k])
        self.train_forwards = int(meta.get("train_forwards", 0))  # absent in checkpoints before bpi_every
