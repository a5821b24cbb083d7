"""Grouped BPI heads: the 2L class heads and 2L patch heads evaluated as one batched computation.

The reference layout (:class:`.bpi.BPIHeads`) runs 4L separate head stacks per forward (each patch head:
conv, BN, ReLU, conv, BN, ReLU, pool, linear, on the block's input and again on its output), i.e. ~100
small kernels per head pair and ~6,400 kernels per training step for DeiT-S: on a GPU the step becomes
launch-bound. Here the weights of all heads are stored stacked and one step of every stage covers all
heads at once:

* patch heads, GPU (``conv_impl="grouped"``): the 2L inputs and 2L outputs are laid out as ``4L``
  channel groups of one ``[B, 4L*C, g, g]`` tensor (group ``j < 2L``: input of block ``j``; ``j >= 2L``:
  output of block ``j-2L``), and each conv is **one** ``Conv2d(groups=4L)`` with the stacked weights
  repeated twice (a block's input and output share its head). BatchNorm runs over the ``4L*C``
  channels, so batch statistics stay separate for the input and the output call exactly like two
  calls of the reference head; the running statistics get the same two momentum updates (input, then
  output).
* patch heads, CPU (``conv_impl="per_head"``): one plain conv per head over the block's input and output
  rows together (interleaved per sample, so the conv output *is* the ``[B, 2C]`` layout the paired
  BatchNorm needs): half the calls and twice the GEMM rows of two reference calls, no extra copies.
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
from .bpi import BPIHeads, BPITaps, _grid_of

#: "grouped": one Conv2d(groups=4L); "per_head": one plain conv per head over its input and output rows
#: (oneDNN's grouped conv is ~2x slower than plain convs on CPU); "auto": grouped on CUDA.
CONV_IMPLS = ("auto", "grouped", "per_head")


class GroupedBPIHeads(BPITaps):
    """Same function and initialisation as :class:`BPIHeads`, stored stacked and evaluated grouped."""

    def __init__(
        self,
        hidden: int,
        num_labels: int,
        num_blocks: int,
        grid: int,
        special_tokens: int,
        frozen_bn: bool = False,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        conv_impl: str = "auto",
        class_input: str = "cls",
    ) -> None:
        super().__init__(num_blocks, grid, special_tokens, frozen_bn, class_input)
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
    def from_heads(cls, ref: BPIHeads) -> GroupedBPIHeads:
        """Stack the weights and BN state of separate :class:`BPIHeads` (exactly, no re-init)."""
        with torch.no_grad():  # a block, not a decorator: mutmut skips decorated functions
            c = ref.cls_heads[0].in_features
            k = ref.cls_heads[0].out_features
            bn = ref.patch_heads[0].body[1]
            out = cls(
                c,
                k,
                ref.num_blocks,
                ref.grid,
                ref.special_tokens,
                ref.frozen_bn,
                bn.eps,
                bn.momentum if bn.momentum is not None else 0.1,
                class_input=ref.class_input,
            )
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
    def evaluate(self, taps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        n, k = self.num_blocks, self.num_labels
        # class heads on every sample: [n, 2B, C] (input rows then output rows of each block) @ [n, C, K]
        t = self._class_tokens(taps)  # [n+1, B, C]
        b, c = t.shape[1:]
        cls_in = torch.stack((t[:-1], t[1:]), dim=1).reshape(n, 2 * b, c)
        cls = torch.baddbmm(self.cls_bias.view(n, 1, k), cls_in, self.cls_weight.transpose(1, 2)).view(
            n, 2, b, k
        )
        rows = self._rows(b)
        if rows == 0:
            return cls, None
        p = self._patch_tokens(taps, rows)  # [n+1, R, P, C]
        impl = self.conv_impl if self.conv_impl != "auto" else ("grouped" if p.is_cuda else "per_head")
        pooled = self._patch_grouped(p) if impl == "grouped" else self._patch_per_head(p)  # [n, 2R, C]
        patch = torch.baddbmm(self.fc_bias.view(n, 1, k), pooled, self.fc_weight.transpose(1, 2))
        return cls, patch.view(n, 2, rows, k)

    def _patch_grouped(self, p: torch.Tensor) -> torch.Tensor:
        """All heads in one ``Conv2d(groups=2n)`` per stage (GPU): channel group ``j < n`` is the input of
        block ``j``, ``j >= n`` its output. Returns the pooled features ``[n, 2R, C]`` (inputs, then outputs)."""
        n, c, g = self.num_blocks, self.hidden, _grid_of(p)
        r = p.shape[1]
        x = torch.cat((p[:-1], p[1:]))  # [2n, R, P, C]
        x = x.permute(1, 0, 3, 2).reshape(r, 2 * n * c, g, g)
        for i in (1, 2):
            weight = getattr(self, f"conv{i}_weight").repeat(2, 1, 1, 1)
            x = F.conv2d(x, weight, padding=1, groups=2 * n)
            x = F.relu(self._bn_pair(x, i, slice(None)), inplace=True)
        self._count_bn_calls()
        return x.mean(dim=(2, 3)).view(r, 2, n, c).permute(2, 1, 0, 3).reshape(n, 2 * r, c)

    def _patch_per_head(self, p: torch.Tensor) -> torch.Tensor:
        """One plain conv per head over its input *and* output rows (CPU, where oneDNN's grouped conv is
        slow): rows are interleaved (sample 0 in, sample 0 out, sample 1 in, ...), so a conv sees 2R rows
        (bigger GEMMs than two calls of R) and its output, viewed as ``[R, 2C, g, g]``, has the input
        call's channels then the output call's -- exactly the layout the paired BatchNorm needs, with no
        copy. Returns the pooled features ``[n, 2R, C]`` (inputs, then outputs)."""
        n, c, g = self.num_blocks, self.hidden, _grid_of(p)
        r = p.shape[1]
        x = torch.stack((p[:-1], p[1:]), dim=2)  # [n, R, 2, P, C]
        x = x.permute(0, 1, 2, 4, 3).contiguous().view(n, 2 * r, c, g, g)
        weights = [getattr(self, f"conv{i}_weight").chunk(n) for i in (1, 2)]
        pooled = []
        for j in range(n):
            y = x[j]
            for i in (1, 2):
                y = F.conv2d(y, weights[i - 1][j], padding=1)
                y = F.relu(self._bn_pair(y.view(r, 2 * c, g, g), i, slice(j * c, (j + 1) * c)), inplace=True)
                y = y.view(2 * r, c, g, g)
            pooled.append(y.mean(dim=(2, 3)).view(r, 2, c))
        self._count_bn_calls()
        return torch.stack(pooled).transpose(1, 2).reshape(n, 2 * r, c)

    def _bn_pair(self, x: torch.Tensor, i: int, channels: slice) -> torch.Tensor:
        """BatchNorm ``i`` of the head channels ``channels`` applied to ``x = [R, 2M, ...]``: the first M
        channels are the heads' input call, the last M their output call, each with its own batch
        statistics and the same affine, exactly like two calls of the reference head.

        Training: the running statistics are updated as by those two sequential calls (input, then
        output): ``r <- (1-m)^2 r + (1-m) m s_in + m s_out``.
        """
        w = getattr(self, f"bn{i}_weight")[channels].repeat(2)
        bias = getattr(self, f"bn{i}_bias")[channels].repeat(2)
        rm = getattr(self, f"bn{i}_running_mean")[channels]
        rv = getattr(self, f"bn{i}_running_var")[channels]
        if not self.training or self.frozen_bn:
            return F.batch_norm(x, rm.repeat(2), rv.repeat(2), w, bias, False, 0.0, self.bn_eps)
        batch_mean = torch.zeros(2 * rm.numel(), dtype=rm.dtype, device=rm.device)
        batch_var = torch.ones_like(batch_mean)
        out = F.batch_norm(x, batch_mean, batch_var, w, bias, True, 1.0, self.bn_eps)
        with torch.no_grad():  # rm / rv are views of the buffers: updated in place
            m = self.bn_momentum
            for run, stat in ((rm, batch_mean), (rv, batch_var)):
                s_in, s_out = stat.view(2, -1)
                run.mul_((1 - m) ** 2).add_(s_in, alpha=(1 - m) * m).add_(s_out, alpha=m)
        return out

    def _count_bn_calls(self) -> None:
        """Two reference BN calls (input, output) per BatchNorm and head per forward."""
        if self.training and not self.frozen_bn:
            for i in (1, 2):
                getattr(self, f"bn{i}_num_batches_tracked").add_(2)
