"""Statistics collectors and structure scorers shared by the VBP and grouped-global-pruning baselines.

Collectors (all run the model in eval mode, i.e. without dropout):

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

Scorer: :func:`structure_scores` maps per-weight scores to one score per prunable structure, with
Torch-Pruning's grouped semantics: per member layer, sum over the channel's slice (rows of a
Linear/Conv it feeds out of, columns of a Linear it feeds into, the LayerNorm gamma entry; biases
and the bare cls/dist/position parameters excluded); "group reduction" over member layers
(default ``mean``); "normaliser" within the group (default ``mean``); head-dimension scores are
averaged over heads (every head keeps the same dims).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, P3BError
from ..models.locator import locate, locate_mlps, stage_family_of

CRITERIA = ("hessian", "taylor", "l1", "l2", "random")


# ====================================================================== batches
def _pixels_and_labels(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Accept ``{"pixel_values", "labels"}`` dicts, ``(x, y)`` tuples or bare image tensors."""
    if isinstance(batch, dict) or hasattr(batch, "keys"):
        return batch["pixel_values"], batch.get("labels")
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def iter_batches(batches: Iterable[Any], max_batches: int | None = None) -> Iterator[tuple[torch.Tensor,
                                                                                         torch.Tensor | None]]:
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
            raise DataError("Activation statistics need at least two tokens; give a non-empty training split.")
        return self.m2 / denom

    def all_reduce(self) -> RunningMoments:
        """Merge the shards of every DDP rank (no-op without ``torch.distributed``); returns ``self``."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        mine = torch.cat([torch.tensor([self.count], dtype=torch.float64, device=self.mean.device),
                          self.mean, self.m2])
        parts = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, mine)
        f = self.mean.numel()
        merged = RunningMoments.empty(f, self.mean.device)
        for p in parts:  # same order on every rank -> bit-identical results everywhere
            merged._merge_parts(float(p[0]), p[1:1 + f], p[1 + f:])
        self.count, self.mean, self.m2 = merged.count, merged.mean, merged.m2
        return self


@torch.no_grad()
def collect_mlp_activation_stats(model: nn.Module, batches: Iterable[Any], *, max_batches: int | None = None,
                                 reduce_ranks: bool = True) -> list[RunningMoments]:
    """Post-activation (GELU output = ``fc2`` input) moments of every MLP neuron, per layer / block.

    Every token (CLS and distillation token included) of every image is one sample, because the
    folded bias is added to every token; for Swin / ConvNeXt every spatial position of every image
    (ConvNeXt's ``pwconv2`` reads channels-last ``[B, H, W, F]``).
    """
    view = locate_mlps(model)
    device, dtype = _device_dtype(model)
    stats = [RunningMoments.empty(blk.width, device) for blk in view.blocks]
    handles = [blk.fc2.register_forward_pre_hook(lambda _m, inp, s=s: s.update(inp[0]))
               for blk, s in zip(view.blocks, stats)]
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


def accumulate_gradients(model: nn.Module, batches: Iterable[Any], *, max_batches: int | None = None
                         ) -> dict[str, torch.Tensor]:
    """Sum over batches of the batch-mean cross-entropy gradient, per parameter name (float32)."""
    device, dtype = _device_dtype(model)
    was_training = model.training
    model.eval()
    grads: dict[str, torch.Tensor] = {}
    try:
        for x, y in iter_batches(batches, max_batches):
            if y is None:
                raise DataError("Gradient-based importance needs labelled batches ({'pixel_values', 'labels'}).")
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


def mean_squared_per_sample_gradients(model: nn.Module, batches: Iterable[Any], *, max_samples: int = 256,
                                      chunk: int = 8, use_vmap: bool = True) -> dict[str, torch.Tensor]:
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
                xs, ys = x[s:s + min(chunk, max_samples - count)], y[s:s + min(chunk, max_samples - count)]
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
                    _loss(model, xs[i:i + 1], ys[i:i + 1]).backward()
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


# ====================================================================== structure scores
@dataclass
class StructureScores:
    """One score per prunable structure: embedding channels, head dims per layer, MLP neurons per layer."""

    embed: torch.Tensor  # [C]
    head_dims: list[torch.Tensor]  # L x [d]
    mlp: list[torch.Tensor]  # L x [F]
    criterion: str = ""


# Per-weight score of a parameter: f(name, weight) -> tensor of the weight's shape.
ElementScore = Callable[[str, torch.Tensor], torch.Tensor]


def element_score_fn(criterion: str, *, grads: dict[str, torch.Tensor] | None = None,
                     sq_grads: dict[str, torch.Tensor] | None = None) -> ElementScore:
    """Torch-Pruning's per-weight terms: l1 ``|w|``, l2 ``w^2``, taylor ``|w*g|``, hessian ``w^2*E[g^2]``."""
    if criterion == "l1":
        return lambda _n, w: w.abs()
    if criterion == "l2":
        return lambda _n, w: w.pow(2)
    if criterion == "taylor":
        if grads is None:
            raise P3BError("The taylor criterion needs accumulated gradients (accumulate_gradients).")
        return lambda n, w: (w * _get(grads, n)).abs()
    if criterion == "hessian":
        if sq_grads is None:
            raise P3BError("The hessian criterion needs per-sample squared gradients "
                           "(mean_squared_per_sample_gradients).")
        return lambda n, w: w.pow(2) * _get(sq_grads, n)
    raise P3BError(f"Unknown importance {criterion!r}; choose one of {', '.join(CRITERIA)}.")


def _get(d: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    if name not in d:
        raise P3BError(f"No gradient statistics for parameter {name}; it received no gradient. Make sure the "
                       "calibration batches run through the whole model.")
    return d[name]


def _reduce_group(members: list[torch.Tensor], reduction: str) -> torch.Tensor:
    stack = torch.stack([m.float() for m in members])
    if reduction == "mean":
        return stack.mean(0)
    if reduction == "sum":
        return stack.sum(0)
    if reduction == "max":
        return stack.max(0).values
    if reduction == "first":
        return stack[0]
    raise P3BError(f"Unknown group reduction {reduction!r}; choose mean, sum, max or first.")


def _normalize(scores: torch.Tensor, normalizer: str | None) -> torch.Tensor:
    if normalizer is None or normalizer == "none":
        return scores
    if normalizer == "mean":
        return scores / scores.mean()
    if normalizer == "sum":
        return scores / scores.sum()
    if normalizer == "max":
        return scores / scores.max()
    raise P3BError(f"Unknown normaliser {normalizer!r}; choose mean, sum, max or none.")


@torch.no_grad()
def structure_scores(model: nn.Module, element: ElementScore, *, reduction: str = "mean",
                     normalizer: str | None = "mean", criterion: str = "") -> StructureScores:
    """Grouped per-structure scores from per-weight scores (Torch-Pruning semantics, see module doc).

    Members of the embedding group: the patch projection (out-channel rows), every LayerNorm gamma,
    q/k/v and fc1 input columns, attention-output and fc2 output rows, the final / pooling LayerNorm and
    the input columns of every classifier head (Torch-Pruning keeps the classifier's *outputs* but still
    scores and prunes its inputs; DINOv2's head is one member whose channel ``c`` sums its columns ``c``
    and ``C + c``, as Torch-Pruning's concat index mapping scatters both into ``c``). Bare parameters --
    tokens, position embeddings, layer scales -- are pruned with the group but not scored (not in
    Torch-Pruning's target types). Head-dim group: q/k/v rows and the attention-output columns of the
    ``heads*head_dim`` inner channels. MLP group: fc1 rows and fc2 columns.

    Swin / ConvNeXt: the MLP groups and (Swin) the head-dim group of every block's window attention, as for
    ViT; ``embed`` is empty (their residual channels, which change width at every stage, are not pruned) and
    so is ConvNeXt's ``head_dims`` entry.
    """
    if stage_family_of(model) is not None:
        return _block_scores(model, element, reduction, normalizer, criterion)
    mods = locate(model)
    names = {id(p): n for n, p in mods.model.named_parameters()}

    def s(p: torch.Tensor) -> torch.Tensor:
        return element(names[id(p)], p.detach()).float()

    def rows(lin: nn.Module) -> torch.Tensor:
        return s(lin.weight).flatten(1).sum(1)

    def cols(lin: nn.Module) -> torch.Tensor:
        return s(lin.weight).sum(0)

    embed = [rows(mods.patch_projection)]
    head_dims, mlp = [], []
    for lm in mods.layers:
        embed += [s(lm.ln_before.weight), cols(lm.q), cols(lm.k), cols(lm.v), rows(lm.o),
                  s(lm.ln_after.weight), cols(lm.fc1), rows(lm.fc2)]
        inner = _normalize(_reduce_group([rows(lm.q), rows(lm.k), rows(lm.v), cols(lm.o)], reduction), normalizer)
        head_dims.append(inner.view(mods.num_heads, mods.head_dim).mean(0))
        mlp.append(_normalize(_reduce_group([rows(lm.fc1), cols(lm.fc2)], reduction), normalizer))
    embed += [s(norm.weight) for norm in (mods.final_norm, mods.pool_norm) if norm is not None]
    c = mods.hidden_size
    for h in mods.heads.values():  # DINOv2's head reads [CLS, mean]: one member, both halves of a channel summed
        embed.append(cols(h).view(mods.classifier_copies, c).sum(0))
    return StructureScores(_normalize(_reduce_group(embed, reduction), normalizer), head_dims, mlp, criterion)


def _block_scores(model: nn.Module, element: ElementScore, reduction: str, normalizer: str | None,
                     criterion: str) -> StructureScores:
    """Swin / ConvNeXt: scores of every block's MLP hidden units (fc1 rows, fc2 columns) and Swin's head dims."""
    view = locate_mlps(model)
    names = {id(p): n for n, p in view.model.named_parameters()}

    def s(p: torch.Tensor) -> torch.Tensor:
        return element(names[id(p)], p.detach()).float()

    mlp = [_normalize(_reduce_group([s(b.fc1.weight).sum(1), s(b.fc2.weight).sum(0)], reduction), normalizer)
           for b in view.blocks]
    head_dims = []
    for b in view.blocks:  # Swin: q/k/v rows and o columns of each (head, dim), then averaged over the heads
        if b.attn is None:
            head_dims.append(torch.empty(0))
            continue
        a = b.attn
        inner = _reduce_group([s(a.q_proj.weight).sum(1), s(a.k_proj.weight).sum(1), s(a.v_proj.weight).sum(1),
                               s(a.o_proj.weight).sum(0)], reduction)
        head_dims.append(_normalize(inner, normalizer).view(a.num_attention_heads, a.head_dim).mean(0))
    return StructureScores(torch.empty(0), head_dims, mlp, criterion)


def random_structure_scores(model: nn.Module, seed: int = 0) -> StructureScores:
    """Torch-Pruning's ``RandomImportance``: U(0,1) per channel (head dims: averaged over heads)."""
    if stage_family_of(model) is not None:
        g = torch.Generator().manual_seed(seed)
        blocks = locate_mlps(model).blocks
        head_dims = [torch.rand(b.attn.num_attention_heads, b.attn.head_dim, generator=g).mean(0)
                     if b.attn is not None else torch.empty(0) for b in blocks]
        mlp = [torch.rand(b.width, generator=g) for b in blocks]
        return StructureScores(torch.empty(0), head_dims, mlp, "random")
    mods = locate(model)
    g = torch.Generator().manual_seed(seed)
    return StructureScores(
        torch.rand(mods.hidden_size, generator=g),
        [torch.rand(mods.num_heads, mods.head_dim, generator=g).mean(0) for _ in mods.layers],
        [torch.rand(mods.intermediate_size, generator=g) for _ in mods.layers], "random")


def compute_structure_scores(model: nn.Module, criterion: str, batches: Iterable[Any] | None = None, *,
                             taylor_batches: int = 10, hessian_samples: int = 256, chunk: int = 8,
                             reduction: str = "mean", normalizer: str | None = "mean", seed: int = 0
                             ) -> StructureScores:
    """Collect what ``criterion`` needs from ``batches`` and return grouped structure scores."""
    if criterion not in CRITERIA:
        raise P3BError(f"Unknown importance {criterion!r}; choose one of {', '.join(CRITERIA)}.")
    if criterion == "random":
        return random_structure_scores(model, seed)
    grads = sq = None
    if criterion in ("taylor", "hessian") and batches is None:
        raise P3BError(f"The {criterion} criterion needs calibration batches; pass a dataloader.")
    if criterion == "taylor":
        grads = accumulate_gradients(model, batches, max_batches=taylor_batches)
    elif criterion == "hessian":
        sq = mean_squared_per_sample_gradients(model, batches, max_samples=hessian_samples, chunk=chunk)
    return structure_scores(model, element_score_fn(criterion, grads=grads, sq_grads=sq), reduction=reduction,
                            normalizer=normalizer, criterion=criterion)
