"""Block Performance Indicator (spec §2): one class head and one patch head per sub-block, scoring the
detached residual stream before and after the block; ΔΨ = CE(before) - CE(after), averaged per window.

The heads are attached to the HF model as ``model.p3b_bpi`` and evaluated inside the model's forward
(a forward hook on the top-level model adds their logits to the output). Being part of the forward
keeps them visible to DDP (their gradients are averaged; ``find_unused_parameters`` works) while their
inputs are ``detach()``-ed, so BPI losses never reach the backbone or the masks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...models.locator import ViTModules


class PatchHead(nn.Module):
    """``[Conv3x3(C,C,no bias) -> BN -> ReLU] x2 -> global average pool -> Linear(C,K)``.

    No residual shortcut (the paper calls it a ResNet block; the code has none).
    """

    def __init__(self, hidden: int, num_labels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(hidden, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean(dim=(2, 3)))


class BPITaps(nn.Module):
    """The tap plumbing shared by every BPI head implementation: hooks that collect the detached fp32
    residual streams ``X_0..X_2L`` of a training forward and a top-level hook that adds the heads'
    logits to the model output. Subclasses implement :meth:`evaluate`.

    ``frozen_bn=True`` keeps the BatchNorms in eval mode forever (the reference trains in eval mode,
    so its BNs act as affine layers with their initial running stats). ``rows`` (set per forward by
    the trainer) restricts the heads to the first ``rows`` samples of the batch (BPI sub-batch).
    """

    def __init__(self, num_blocks: int, grid: int, special_tokens: int, frozen_bn: bool = False) -> None:
        super().__init__()
        self.num_blocks = num_blocks
        self.grid = grid
        self.special_tokens = special_tokens
        self.frozen_bn = frozen_bn
        self.active = False  # set by the trainer for training forwards only
        self.rows: int | None = None  # BPI sub-batch: score only the first ``rows`` samples (None = all)
        self._taps: list[torch.Tensor] = []

    # ------------------------------------------------------------------ taps
    def _tap(self, x: torch.Tensor) -> None:
        if self.active:
            x = x.detach()
            self._taps.append((x if self.rows is None else x[:self.rows]).float())

    def install(self, model: nn.Module, mods: ViTModules) -> list[Any]:
        """Hooks: X0 = embeddings output, post-attention stream = input of layernorm_after,
        post-MLP stream = layer output; the top-level hook evaluates the heads."""
        emb = mods.patch_projection
        base_embeddings = _parent_of(model, emb, levels=2)
        handles = [base_embeddings.register_forward_hook(lambda m, i, o: self._start(o))]
        for lm in mods.layers:
            handles.append(lm.ln_after.register_forward_pre_hook(lambda m, i: self._tap(i[0])))
            handles.append(lm.block.register_forward_hook(
                lambda m, i, o: self._tap(o[0] if isinstance(o, tuple) else o)))
        handles.append(model.register_forward_hook(self._attach))
        return handles

    def _start(self, x0: torch.Tensor) -> None:
        self._taps = []
        self._tap(x0)

    def _attach(self, _model: nn.Module, _inp: Any, out: Any) -> Any:
        if not self.active:
            return out
        taps, self._taps = self._taps, []
        if len(taps) != self.num_blocks + 1:
            raise RuntimeError(f"BPI expected {self.num_blocks + 1} residual taps, got {len(taps)}; "
                               "was the model called twice inside one forward?")
        cls_logits, patch_logits = self.evaluate(taps)
        out["p3b_bpi_cls"] = cls_logits
        out["p3b_bpi_patch"] = patch_logits
        return out

    def _grid(self, x: torch.Tensor) -> torch.Tensor:
        p = x[:, self.special_tokens:]
        b, n, c = p.shape
        if n != self.grid * self.grid:
            raise RuntimeError(f"BPI patch head expects {self.grid}x{self.grid} patch tokens, got {n}.")
        return p.transpose(1, 2).reshape(b, c, self.grid, self.grid)

    def evaluate(self, taps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[2L, 2 (in/out), B, K]`` of the class and patch heads on taps ``X_0..X_2L``."""
        raise NotImplementedError


class BPIHeads(BPITaps):
    """2L class heads and 2L patch heads (separate modules, the reference layout) plus the tap hooks."""

    def __init__(self, hidden: int, num_labels: int, num_blocks: int, grid: int, special_tokens: int,
                 frozen_bn: bool = False) -> None:
        super().__init__(num_blocks, grid, special_tokens, frozen_bn)
        self.cls_heads = nn.ModuleList([nn.Linear(hidden, num_labels) for _ in range(num_blocks)])
        self.patch_heads = nn.ModuleList([PatchHead(hidden, num_labels) for _ in range(num_blocks)])

    @classmethod
    def for_model(cls, mods: ViTModules, num_labels: int, frozen_bn: bool = False) -> BPIHeads:
        return cls(mods.hidden_size, num_labels, 2 * mods.num_layers, mods.image_size // mods.patch_size,
                   mods.num_special_tokens, frozen_bn)

    def train(self, mode: bool = True) -> BPIHeads:
        super().train(mode)
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    # ------------------------------------------------------------------ heads
    def evaluate(self, taps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[2L, 2 (in/out), B, K]`` of the class and patch heads on taps ``X_0..X_2L``."""
        cls_out, patch_out = [], []
        for b, (ch, ph) in enumerate(zip(self.cls_heads, self.patch_heads)):
            xs = (taps[b], taps[b + 1])
            cls_out.append(torch.stack([ch(x[:, 0]) for x in xs]))
            patch_out.append(torch.stack([ph(self._grid(x)) for x in xs]))
        return torch.stack(cls_out), torch.stack(patch_out)


def _parent_of(model: nn.Module, module: nn.Module, levels: int) -> nn.Module:
    """The module ``levels`` steps above ``module`` (embeddings = parent of patch_embeddings' parent)."""
    names = {id(m): n for n, m in model.named_modules()}
    path = names[id(module)].split(".")
    return model.get_submodule(".".join(path[:-levels]))


def per_head_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Batch-mean cross-entropies ``[2L, 2]`` of stacked head logits against class indices or dense
    (mixup / label-smoothed) targets -- the training criterion itself, as in the reference."""
    logp = F.log_softmax(logits.float(), dim=-1)  # [2L, 2, B, K]
    if labels.dim() == 2:
        return -(labels.to(logp.dtype) * logp).sum(-1).mean(-1)
    idx = labels.view(1, 1, -1, 1).expand(*logp.shape[:3], 1)
    return -logp.gather(-1, idx).squeeze(-1).mean(-1)
