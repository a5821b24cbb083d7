"""Block Performance Indicator (docs/p3b.md §2): one class head and one patch head per sub-block, scoring the
detached residual stream before and after the block; ΔΨ = CE(before) - CE(after), averaged per window.

The heads are attached to the HF model as ``model.p3b_bpi`` (so the Trainer moves them with the model and
they are in its optimizer) and evaluated inside the model's forward: a forward hook on the top-level model
stores their logits on the heads (:meth:`BPITaps.pop_logits`), **not** in the ``ModelOutput``. Their inputs
are ``detach()``-ed, so BPI losses never reach the backbone or the masks.

DDP: the heads are left out of DDP's reducer (``_ddp_params_and_buffers_to_ignore``, set by the pruner) and
their gradients are averaged by the trainer once per optimizer step (:func:`~p3b_hf.runtime.all_reduce_grads_`).
Why: a ``ModelOutput`` with extra keys cannot be rebuilt by DDP's output pytree (``find_unused_parameters=
True``, HF's default: ``TypeError`` at step 1), and heads inside the reducer that stop being used after
finalisation break ``find_unused_parameters=False`` at the first step after it. Out of the reducer, the
heads are simply idle after finalisation, with either setting and any world size (docs/p3b.md §9.5).

What the class heads read is the token the family classifies from (``ViTModules.bpi_class_input``):
token 0 (CLS) for ViT, DeiT and DINOv2, the mean of the patch tokens for BEiT with mean pooling (its
CLS token is never read by its classifier). The patch grid is taken from the tap itself, so models
that interpolate their positions (DINOv2 at 224 px with a 518 px grid) work at any square resolution.

Cost levers act on the **patch heads only** (``patch_rows``: score the first rows of the batch, or none
this forward): they hold >99 % of the BPI compute. The class heads -- one ``Linear(C, K)`` on token 0 --
always score every sample of every training forward, so half of the block importance (α = 0.5) is
never sub-sampled.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...models.locator import ViTModules

#: what the class heads score: token 0, or the mean of the patch tokens (BEiT's classifier input)
CLASS_INPUTS = ("cls", "mean_patches")


class PatchHead(nn.Module):
    """``[Conv3x3(C,C,no bias) -> BN -> ReLU] x2 -> global average pool -> Linear(C,K)``.

    No residual shortcut (the paper calls it a ResNet block; the code has none).
    """

    def __init__(self, hidden: int, num_labels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(hidden, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean(dim=(2, 3)))


class BPITaps(nn.Module):
    """The tap plumbing shared by every BPI head implementation: hooks that collect the detached fp32
    residual streams ``X_0..X_2L`` of a training forward and a top-level hook that adds the heads'
    logits to the model output. Subclasses implement :meth:`evaluate`.

    ``frozen_bn=True`` keeps the BatchNorms in eval mode forever (the reference trains in eval mode,
    so its BNs act as affine layers with their initial running stats). ``patch_rows`` (set per forward
    by the trainer) restricts the patch heads to the first ``patch_rows`` samples of the batch (BPI
    sub-batch; ``None`` = all, ``0`` = skip the patch heads this forward); the class heads always see
    the whole batch. Each heads object keeps the logits of its last active forward until
    :meth:`pop_logits`, so several estimators can ride along one forward (see :mod:`.estimator`);
    ``output_key`` names the estimator in logs.
    """

    def __init__(
        self,
        num_blocks: int,
        grid: int,
        special_tokens: int,
        frozen_bn: bool = False,
        class_input: str = "cls",
    ) -> None:
        super().__init__()
        if class_input not in CLASS_INPUTS:
            raise ValueError(f"class_input must be one of {CLASS_INPUTS}, got {class_input!r}.")
        self.num_blocks = num_blocks
        self.grid = grid  # the config's grid; the evaluated grid is read from each tap (``_grid_of``)
        self.special_tokens = special_tokens
        self.class_input = class_input
        self.frozen_bn = frozen_bn
        self.active = False  # set by the trainer for training forwards only
        self.patch_rows: int | None = None  # patch heads score the first ``patch_rows`` samples (None = all)
        self.output_key = "p3b_bpi"
        self._taps: list[torch.Tensor] = []
        self._logits: tuple[torch.Tensor, torch.Tensor | None] | None = None

    # ------------------------------------------------------------------ taps
    def _tap(self, x: torch.Tensor) -> None:
        if self.active:  # a detached view; the heads cast the parts they read to fp32
            self._taps.append(x.detach())

    def install(self, model: nn.Module, mods: ViTModules) -> list[Any]:
        """Hooks: X0 = embeddings output, post-attention stream = input of layernorm_after,
        post-MLP stream = layer output; the top-level hook evaluates the heads."""
        emb = mods.patch_projection
        base_embeddings = _parent_of(model, emb, levels=2)
        handles = [base_embeddings.register_forward_hook(lambda m, i, o: self._start(o))]
        for lm in mods.layers:
            handles.append(lm.ln_after.register_forward_pre_hook(lambda m, i: self._tap(i[0])))
            handles.append(
                lm.block.register_forward_hook(lambda m, i, o: self._tap(o[0] if isinstance(o, tuple) else o))
            )
        handles.append(model.register_forward_hook(self._attach))
        return handles

    def _start(self, x0: torch.Tensor) -> None:
        self._taps = []
        self._logits = None
        self._tap(x0)

    def pop_logits(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The logits of the last active forward -- class heads ``[2L, 2, B, K]``, patch heads ``[2L, 2, R, K]``
        or ``None`` when skipped -- handed over once (error if no active forward produced any)."""
        if self._logits is None:
            raise RuntimeError(
                "No BPI logits: the heads were not active during the last forward (set heads.active)."
            )
        logits, self._logits = self._logits, None
        return logits

    def clear(self) -> None:
        """Drop logits and taps nobody consumed (e.g. after an error), so they hold no graph."""
        self._taps, self._logits = [], None

    def _attach(self, _model: nn.Module, _inp: Any, out: Any) -> Any:
        """Evaluate the heads on the taps of this forward; the model output is returned unchanged."""
        if not self.active:
            return out
        taps, self._taps = self._taps, []
        if len(taps) != self.num_blocks + 1:
            raise RuntimeError(
                f"BPI expected {self.num_blocks + 1} residual taps, got {len(taps)}; "
                "was the model called twice inside one forward?"
            )
        self._logits = self.evaluate(taps)
        return out

    def _rows(self, batch: int) -> int:
        """How many leading samples the patch heads score this forward (0 = none)."""
        return batch if self.patch_rows is None else max(0, min(int(self.patch_rows), batch))

    def _class_tokens(self, taps: list[torch.Tensor]) -> torch.Tensor:
        """What the class heads read of every tap, fp32 ``[2L+1, B, C]``: token 0, or the mean patch token."""
        if self.class_input == "mean_patches":
            return torch.stack([x[:, self.special_tokens :].float().mean(1) for x in taps])
        return torch.stack([x[:, 0] for x in taps]).float()

    def _patch_tokens(self, taps: list[torch.Tensor], rows: int) -> torch.Tensor:
        """The patch tokens (special tokens dropped) of the first ``rows`` samples, fp32: ``[2L+1, R, P, C]``."""
        p = torch.stack([x[:rows, self.special_tokens :] for x in taps]).float()
        _grid_of(p)  # square grid check
        return p

    def evaluate(self, taps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``[2L, 2 (in/out), B, K]`` of the class heads and ``[2L, 2, R, K]`` of the patch heads
        (R = ``patch_rows``; ``None`` when the patch heads are skipped) on taps ``X_0..X_2L``."""
        raise NotImplementedError


class BPIHeads(BPITaps):
    """2L class heads and 2L patch heads (separate modules, the reference layout) plus the tap hooks."""

    def __init__(
        self,
        hidden: int,
        num_labels: int,
        num_blocks: int,
        grid: int,
        special_tokens: int,
        frozen_bn: bool = False,
        class_input: str = "cls",
    ) -> None:
        super().__init__(num_blocks, grid, special_tokens, frozen_bn, class_input)
        self.cls_heads = nn.ModuleList([nn.Linear(hidden, num_labels) for _ in range(num_blocks)])
        self.patch_heads = nn.ModuleList([PatchHead(hidden, num_labels) for _ in range(num_blocks)])

    @classmethod
    def for_model(cls, mods: ViTModules, num_labels: int, frozen_bn: bool = False) -> BPIHeads:
        return cls(
            mods.hidden_size,
            num_labels,
            2 * mods.num_layers,
            mods.image_size // mods.patch_size,
            mods.num_special_tokens,
            frozen_bn,
            mods.bpi_class_input,
        )

    def train(self, mode: bool = True) -> BPIHeads:
        super().train(mode)
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    # ------------------------------------------------------------------ heads
    def evaluate(self, taps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        cls_tok = self._class_tokens(taps)
        cls = torch.stack(
            [torch.stack([h(cls_tok[b]), h(cls_tok[b + 1])]) for b, h in enumerate(self.cls_heads)]
        )
        rows = self._rows(cls_tok.shape[1])
        if rows == 0:
            return cls, None
        p = self._patch_tokens(taps, rows)
        g = _grid_of(p)
        grid = p.transpose(2, 3).reshape(p.shape[0], rows, p.shape[3], g, g)
        patch = torch.stack(
            [torch.stack([h(grid[b]), h(grid[b + 1])]) for b, h in enumerate(self.patch_heads)]
        )
        return cls, patch


def _grid_of(patches: torch.Tensor) -> int:
    """Side of the square patch grid of ``[..., P, C]`` patch tokens (error if P is not a square)."""
    n = patches.shape[-2]
    g = math.isqrt(n)
    if g * g != n:
        raise RuntimeError(
            f"BPI patch heads need a square patch grid, got {n} patch tokens; feed square images."
        )
    return g


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
