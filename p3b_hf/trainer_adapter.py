"""The one place that overrides private methods of ``transformers.Trainer`` (pinned: transformers 5.18).

p3b_hf needs four things the Trainer has no public hook for:

* a call once per optimizer step *before* gradient clipping / AMP unscaling (P3B reads the mask
  gradients there for its Taylor scores): ``_clip_grad_norm`` / ``_get_grad_norm``;
* a choice of which parameters the gradient norm clips (P3B clips the backbone alone): ``_clip_grad_norm``;
* extra state in every checkpoint, and checkpoint weights without helper modules: ``_save``;
* a resume that restores the model with ``from_pretrained`` semantics -- transformers 5.17/5.18 reload ViT
  checkpoints with a raw ``load_state_dict(strict=False)`` and silently keep random encoder weights
  (huggingface/transformers#43701) -- plus the extra state: ``_load_from_checkpoint``.

Subclasses override the public hooks below, never the private methods; an upgrade of transformers has to
check this file only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import Trainer


class TrainerAdapter(Trainer):
    """``Trainer`` with public hooks for what p3b_hf needs (see the module docstring)."""

    # ------------------------------------------------------------------ public hooks
    def before_clip(self) -> None:
        """Called once per optimizer step, before the gradients are clipped (and unscaled by AMP)."""

    def clip_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters whose joint gradient norm is clipped to ``max_grad_norm`` (default: all)."""
        return list(model.parameters())

    def checkpoint_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model weights a checkpoint stores (default: all of ``state_dict``)."""
        return state_dict

    def save_extra_state(self, output_dir: str) -> None:
        """Write extra files into a checkpoint directory (main process only)."""

    def load_extra_state(self, checkpoint_dir: str) -> None:
        """Restore what :meth:`save_extra_state` wrote (every process), after the model weights."""

    # ------------------------------------------------------------------ private overrides
    def _clip_grad_norm(self, model: nn.Module) -> Any:
        self.before_clip()
        return self.accelerator.clip_grad_norm_(self.clip_parameters(model), self.args.max_grad_norm)

    def _get_grad_norm(self, model: nn.Module, grad_norm: Any = None) -> Any:
        if grad_norm is None:  # no clipping this run: the hook still runs once per optimizer step
            self.before_clip()
        return super()._get_grad_norm(model, grad_norm=grad_norm)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if state_dict is None:
            state_dict = self.accelerator.unwrap_model(self.model).state_dict()
        super()._save(output_dir, state_dict=self.checkpoint_state_dict(state_dict))
        if self.args.should_save:
            self.save_extra_state(output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        model = self.model if model is None else model
        ref = type(model).from_pretrained(
            resume_from_checkpoint, config=model.config, dtype=next(model.parameters()).dtype
        )
        model.load_state_dict(ref.state_dict(), strict=False)  # keys outside the HF model: restored below
        del ref
        self.load_extra_state(resume_from_checkpoint)
