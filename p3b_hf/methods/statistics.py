"""What the baselines measure on data: per-neuron activation moments (VBP) and gradients (Taylor / Hessian).

All collectors run the model in eval mode (no dropout) and accept any iterable of batches (dicts with
``pixel_values`` / ``labels``, or ``(x, y)`` tuples):

* :class:`RunningMoments` + :func:`collect_mlp_activation_stats`: per-neuron mean/variance of the
  post-GELU MLP activations (the input of ``fc2``) over every token of every image. Each batch is
  reduced in float32 and merged into float64 accumulators with Chan et al.'s parallel update, so
  results are exact to float64 rounding whatever the batch split; :meth:`RunningMoments.merge` and
  :meth:`RunningMoments.all_reduce` combine shards from several DDP ranks with the same rule.
* :func:`accumulate_gradients`: sum over batches of batch-mean gradients (what Torch-Pruning's
  Taylor recipe leaves in ``.grad``: it never zeroes between batches).
* :func:`mean_squared_per_sample_gradients`: the empirical-Fisher diagonal ``E_n[g_n^2]`` used by
  the Hessian (OBD) criterion, averaged over *all* samples (Torch-Pruning 1.6.1's
  ``accumulate_grad`` keeps only the last sample's ``g^2`` because of a dict-key bug).

The structure scores built from them live in :mod:`p3b_hf.methods.importance`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError
from ..models.locator import locate_mlps


# ====================================================================== batches
def _pixels_and_labels(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Accept ``{"pixel_values", "labels"}`` dicts, ``(x, y)`` tuples or bare image tensors."""
    if isinstance(batch, dict) or hasattr(batch, "keys"):
        return batch["pixel_values"], batch.get("labels")
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def iter_batches(
    batches: Iterable[Any], max_batches: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    for i, b in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            return
        yield _pixels_and_labels(b)


def _hard_labels(y: torch.Tensor) -> torch.Tensor:
    return y.argmax(-1) if y.dim() > 1 else y


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


# ====================================================================== activation moments (VBP)
@dataclass
class RunningMoments:
    """float64 count / mean / sum of squared deviations (M2) per feature; Chan-mergeable."""

    count: float
    mean: torch.Tensor
    m2: torch.Tensor

    @classmethod
    def empty(cls, num_features: int, device: torch.device | str = "cpu") -> RunningMoments:
        z = torch.zeros(num_features, dtype=torch.float64, device=device)
        return cls(0.0, z, z.clone())

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge a batch ``x[..., F]`` (every leading index is one sample, e.g. every token)."""
        x = x.reshape(-1, x.shape[-1]).float()
        n = x.shape[0]
        if n == 0:
            return
        # Reduce in float32 around a shift (the running mean, or the first sample): the float32 sums
        # then only see deviations, so a large common offset costs no precision.
        shift = self.mean.to(x.device, torch.float32) if self.count > 0 else x[0].clone()
        d = x - shift
        m_d = d.mean(0)
        m2_b = (d - m_d).pow(2).sum(0)
        self._merge_parts(float(n), shift.double() + m_d.double(), m2_b.double())

    def _merge_parts(self, n: float, mean: torch.Tensor, m2: torch.Tensor) -> None:
        if n == 0:
            return
        mean, m2 = mean.to(self.mean.device), m2.to(self.m2.device)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.pow(2) * (self.count * n / total)
        self.count = total

    def merge(self, other: RunningMoments) -> RunningMoments:
        """Combine with another shard (another rank / data part); returns ``self``."""
        self._merge_parts(other.count, other.mean, other.m2)
        return self

    def variance(self, unbiased: bool = True) -> torch.Tensor:
        denom = self.count - 1 if unbiased else self.count
        if denom <= 0:
            raise DataError(
                "Activation statistics need at least two tokens; give a non-empty training split."
            )
        return self.m2 / denom

    def all_reduce(self) -> RunningMoments:
        """Merge the shards of every DDP rank (no-op without ``torch.distributed``); returns ``self``."""
        from ..runtime import all_gather_cat, world_size

        if world_size() == 1:
            return self
        mine = torch.cat(
            [torch.tensor([self.count], dtype=torch.float64, device=self.mean.device), self.mean, self.m2]
        )
        f = self.mean.numel()
        merged = RunningMoments.empty(f, self.mean.device)
        for p in all_gather_cat(
            mine[None]
        ):  # rank order, same on every rank -> bit-identical results everywhere
            merged._merge_parts(float(p[0]), p[1 : 1 + f], p[1 + f :])
        self.count, self.mean, self.m2 = merged.count, merged.mean, merged.m2
        return self


@torch.no_grad()
def collect_mlp_activation_stats(
    model: nn.Module, batches: Iterable[Any], *, max_batches: int | None = None, reduce_ranks: bool = True
) -> list[RunningMoments]:
    """Post-activation (GELU output = ``fc2`` input) moments of every MLP neuron, per layer / block.

    Every token (CLS and distillation token included) of every image is one sample, because the
    folded bias is added to every token; for Swin / ConvNeXt every spatial position of every image
    (ConvNeXt's ``pwconv2`` reads channels-last ``[B, H, W, F]``).
    """
    view = locate_mlps(model)
    device, dtype = _device_dtype(model)
    stats = [RunningMoments.empty(blk.width, device) for blk in view.blocks]
    handles = [
        blk.fc2.register_forward_pre_hook(lambda _m, inp, s=s: s.update(inp[0]))
        for blk, s in zip(view.blocks, stats)
    ]
    was_training = model.training
    model.eval()
    try:
        seen = 0
        for x, _ in iter_batches(batches, max_batches):
            model(pixel_values=x.to(device=device, dtype=dtype))
            seen += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if seen == 0:
        raise DataError("No batches to collect activation statistics from; the training split is empty.")
    if reduce_ranks:
        for s in stats:
            s.all_reduce()
    return stats


# ====================================================================== gradients (Taylor / Hessian)
def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(pixel_values=x).logits.float(), y)


def accumulate_gradients(
    model: nn.Module, batches: Iterable[Any], *, max_batches: int | None = None
) -> dict[str, torch.Tensor]:
    """Sum over batches of the batch-mean cross-entropy gradient, per parameter name (float32)."""
    device, dtype = _device_dtype(model)
    was_training = model.training
    model.eval()
    grads: dict[str, torch.Tensor] = {}
    try:
        for x, y in iter_batches(batches, max_batches):
            if y is None:
                raise DataError(
                    "Gradient-based importance needs labelled batches ({'pixel_values', 'labels'})."
                )
            model.zero_grad(set_to_none=True)
            _loss(model, x.to(device=device, dtype=dtype), _hard_labels(y).to(device)).backward()
            for name, p in model.named_parameters():
                if p.grad is not None:
                    g = p.grad.detach().float()
                    grads[name] = grads[name] + g if name in grads else g.clone()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if not grads:
        raise DataError("No batches to compute gradients from; the training split is empty.")
    return grads


def mean_squared_per_sample_gradients(
    model: nn.Module, batches: Iterable[Any], *, max_samples: int = 256, chunk: int = 8, use_vmap: bool = True
) -> dict[str, torch.Tensor]:
    """``E_n[(dL_n/dw)^2]`` over up to ``max_samples`` samples (empirical Fisher diagonal, float32).

    Per-sample gradients come from ``torch.func.vmap`` over chunks of ``chunk`` samples (memory:
    ``chunk`` x model size); if vmap cannot run the model (or ``use_vmap=False``), one backward per
    sample is used instead.
    """
    import warnings

    from torch.func import functional_call, grad, vmap

    device, dtype = _device_dtype(model)
    was_training = model.training
    model.eval()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    count = 0

    def one(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, p, (), {"pixel_values": x[None]})
        return F.cross_entropy(out.logits.float(), y[None])

    per_sample = vmap(grad(one), in_dims=(None, 0, 0))
    try:
        for x, y in iter_batches(batches):
            if y is None:
                raise DataError("The Hessian criterion needs labelled batches ({'pixel_values', 'labels'}).")
            x, y = x.to(device=device, dtype=dtype), _hard_labels(y).to(device)
            for s in range(0, x.shape[0], chunk):
                if count >= max_samples:
                    break
                xs, ys = (
                    x[s : s + min(chunk, max_samples - count)],
                    y[s : s + min(chunk, max_samples - count)],
                )
                if use_vmap:
                    try:
                        with warnings.catch_warnings():  # "no batching rule for SDPA": falls back, fine
                            warnings.simplefilter("ignore", UserWarning)
                            g = per_sample(params, xs, ys)
                        for n in names:
                            sums[n] += g[n].float().pow(2).sum(0)
                        count += xs.shape[0]
                        continue
                    except (RuntimeError, NotImplementedError):
                        use_vmap = False
                for i in range(xs.shape[0]):
                    model.zero_grad(set_to_none=True)
                    _loss(model, xs[i : i + 1], ys[i : i + 1]).backward()
                    for n, p in model.named_parameters():
                        if p.grad is not None:
                            sums[n] += p.grad.detach().float().pow(2)
                    count += 1
            if count >= max_samples:
                break
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if count == 0:
        raise DataError("No samples to compute per-sample gradients from; the training split is empty.")
    return {n: v / count for n, v in sums.items()}
