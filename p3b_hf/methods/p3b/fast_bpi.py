"""Grouped BPI heads: the 2L class heads and 2L patch heads evaluated as one batched computation.

The reference layout (:class:`.bpi.BPIHeads`) runs 4L separate head stacks per forward (each patch head:
conv, BN, ReLU, conv, BN, ReLU, pool, linear, on the block's input and again on its output), i.e. ~100
small kernels per head pair and ~6,400 kernels per training step for DeiT-S: on a GPU the step becomes
launch-bound. Here the weights of all heads are stored stacked and one step of every stage covers all
heads at once:

* patch heads: the 2L inputs and 2L outputs are laid out as ``4L`` channel groups of one
  ``[B, 4L*C, g, g]`` tensor (group ``j < 2L``: input of block ``j``; ``j >= 2L``: output of block
  ``j-2L``), and each conv is **one** ``Conv2d(groups=4L)`` with the stacked weights repeated twice
  (a block's input and output share its head). BatchNorm runs over the ``4L*C`` channels, so batch
  statistics stay separate for the input and the output call exactly like two calls of the reference
  head; the running statistics get the same two momentum updates (input, then output).
* class heads and the patch heads' final Linear: one ``baddbmm`` over the 2L heads.

This is a re-association of the same arithmetic, so its logits equal the separate heads' up to float
rounding (``tests/test_p3b_fast.py`` checks both the logits and the running statistics).
The parameters are plain stacked tensors (names end in ``weight`` / ``bias``; BN and biases are 1-D, so
the trainer's no-decay rule applies to them as to the reference's). Use :meth:`GroupedBPIHeads.from_heads`
to start from exactly the same initial weights as a :class:`.bpi.BPIHeads`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...models.locator import ViTModules
from .bpi import BPIHeads, BPITaps

#: "grouped": one Conv2d(groups=4L); "per_head": one plain conv per (head, in/out) slice of the same
#: stacked tensor (oneDNN's grouped conv is ~2x slower than plain convs on CPU); "auto": grouped on CUDA.
CONV_IMPLS = ("auto", "grouped", "per_head")


class GroupedBPIHeads(BPITaps):
    """Same function and initialisation as :class:`BPIHeads`, stored stacked and evaluated grouped."""

    def __init__(self, hidden: int, num_labels: int, num_blocks: int, grid: int, special_tokens: int,
                 frozen_bn: bool = False, bn_eps: float = 1e-5, bn_momentum: float = 0.1,
                 conv_impl: str = "auto") -> None:
        super().__init__(num_blocks, grid, special_tokens, frozen_bn)
        if conv_impl not in CONV_IMPLS:
            raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}.")
        self.conv_impl = conv_impl
        n, c, k = num_blocks, hidden, num_labels
        self.hidden, self.num_labels = c, k
        self.bn_eps, self.bn_momentum = bn_eps, bn_momentum
        self.cls_weight = nn.Parameter(torch.empty(n, k, c))
        self.cls_bias = nn.Parameter(torch.empty(n * k))
        for i in (1, 2):
            setattr(self, f"conv{i}_weight", nn.Parameter(torch.empty(n * c, c, 3, 3)))
            setattr(self, f"bn{i}_weight", nn.Parameter(torch.ones(n * c)))
            setattr(self, f"bn{i}_bias", nn.Parameter(torch.zeros(n * c)))
            self.register_buffer(f"bn{i}_running_mean", torch.zeros(n * c))
            self.register_buffer(f"bn{i}_running_var", torch.ones(n * c))
            self.register_buffer(f"bn{i}_num_batches_tracked", torch.zeros((), dtype=torch.long))
        self.fc_weight = nn.Parameter(torch.empty(n, k, c))
        self.fc_bias = nn.Parameter(torch.empty(n * k))

    @classmethod
    def for_model(cls, mods: ViTModules, num_labels: int, frozen_bn: bool = False) -> GroupedBPIHeads:
        """Initialised by building the reference heads and stacking them: the same RNG draws as the
        reference mode, so runs that differ only in ``bpi_mode`` start from identical heads."""
        return cls.from_heads(BPIHeads.for_model(mods, num_labels, frozen_bn))

    @classmethod
    @torch.no_grad()
    def from_heads(cls, ref: BPIHeads) -> GroupedBPIHeads:
        """Stack the weights and BN state of separate :class:`BPIHeads` (exactly, no re-init)."""
        c = ref.cls_heads[0].in_features
        k = ref.cls_heads[0].out_features
        bn = ref.patch_heads[0].body[1]
        out = cls(c, k, ref.num_blocks, ref.grid, ref.special_tokens, ref.frozen_bn, bn.eps,
                  bn.momentum if bn.momentum is not None else 0.1)
        out.cls_weight.copy_(torch.stack([h.weight for h in ref.cls_heads]))
        out.cls_bias.copy_(torch.cat([h.bias for h in ref.cls_heads]))
        for i, (conv_idx, bn_idx) in ((1, (0, 1)), (2, (3, 4))):
            convs = [h.body[conv_idx] for h in ref.patch_heads]
            bns = [h.body[bn_idx] for h in ref.patch_heads]
            getattr(out, f"conv{i}_weight").copy_(torch.cat([m.weight for m in convs]))
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(out, f"bn{i}_{name}").copy_(torch.cat([getattr(m, name) for m in bns]))
            getattr(out, f"bn{i}_num_batches_tracked").copy_(bns[0].num_batches_tracked)
        out.fc_weight.copy_(torch.stack([h.fc.weight for h in ref.patch_heads]))
        out.fc_bias.copy_(torch.cat([h.fc.bias for h in ref.patch_heads]))
        return out.to(ref.cls_heads[0].weight.device)

    # ------------------------------------------------------------------ heads
    def evaluate(self, taps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        n, s, k = self.num_blocks, self.special_tokens, self.num_labels
        t = torch.stack(taps)                      # [n+1, B, N, C]
        b, ntok, c = t.shape[1:]
        if ntok - s != self.grid * self.grid:
            raise RuntimeError(f"BPI patch head expects {self.grid}x{self.grid} patch tokens, got {ntok - s}.")
        # class heads: [n, 2B, C] (input rows then output rows of each block) @ [n, C, K]
        cls_in = torch.stack((t[:-1, :, 0], t[1:, :, 0]), dim=1).reshape(n, 2 * b, c)
        cls = torch.baddbmm(self.cls_bias.view(n, 1, k), cls_in, self.cls_weight.transpose(1, 2))
        # patch heads: 2n channel groups (inputs of blocks 0..n-1, then their outputs)
        x = torch.cat((t[:-1, :, s:], t[1:, :, s:]))  # [2n, B, P, C]
        x = x.permute(1, 0, 3, 2).reshape(b, 2 * n * c, self.grid, self.grid)
        for i in (1, 2):
            x = F.relu(self._batch_norm(self._conv(x, getattr(self, f"conv{i}_weight")), i), inplace=True)
        pooled = x.mean(dim=(2, 3)).view(b, 2, n, c).permute(2, 1, 0, 3).reshape(n, 2 * b, c)
        patch = torch.baddbmm(self.fc_bias.view(n, 1, k), pooled, self.fc_weight.transpose(1, 2))
        return cls.view(n, 2, b, k), patch.view(n, 2, b, k)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """3x3 conv of the 2n channel groups of ``x`` (group j uses head ``j mod n``)."""
        n = self.num_blocks
        impl = self.conv_impl
        if impl == "auto":
            impl = "grouped" if x.is_cuda else "per_head"
        if impl == "grouped":
            return F.conv2d(x, weight.repeat(2, 1, 1, 1), padding=1, groups=2 * n)
        heads = weight.chunk(n)
        return torch.cat([F.conv2d(xj, heads[j % n], padding=1) for j, xj in enumerate(x.chunk(2 * n, dim=1))],
                         dim=1)

    def _batch_norm(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """BN over ``[B, 2*n*C]`` channels with the head's affine repeated for its input and output call.

        Training: per-call batch statistics; the running statistics are updated as by two sequential
        reference calls (input, then output): ``r <- (1-m)^2 r + (1-m) m s_in + m s_out``.
        """
        w, bias = getattr(self, f"bn{i}_weight").repeat(2), getattr(self, f"bn{i}_bias").repeat(2)
        rm, rv = getattr(self, f"bn{i}_running_mean"), getattr(self, f"bn{i}_running_var")
        if not self.training or self.frozen_bn:
            return F.batch_norm(x, rm.repeat(2), rv.repeat(2), w, bias, False, 0.0, self.bn_eps)
        batch_mean = torch.zeros(2 * rm.numel(), dtype=rm.dtype, device=rm.device)
        batch_var = torch.ones_like(batch_mean)
        out = F.batch_norm(x, batch_mean, batch_var, w, bias, True, 1.0, self.bn_eps)
        with torch.no_grad():
            m = self.bn_momentum
            for run, stat in ((rm, batch_mean), (rv, batch_var)):
                s_in, s_out = stat.view(2, -1)
                run.mul_((1 - m) ** 2).add_(s_in, alpha=(1 - m) * m).add_(s_out, alpha=m)
            getattr(self, f"bn{i}_num_batches_tracked").add_(2)
        return out
