"""Structure scores of the grouped-global-pruning baseline (and the criteria it offers).

:func:`structure_scores` maps per-weight scores to one score per prunable structure, with
Torch-Pruning's grouped semantics: per member layer, sum over the channel's slice (rows of a
Linear/Conv it feeds out of, columns of a Linear it feeds into, the LayerNorm gamma entry; biases
and the bare cls/dist/position parameters excluded); "group reduction" over member layers
(default ``mean``); "normaliser" within the group (default ``mean``); head-dimension scores are
averaged over heads (every head keeps the same dims). The gradients the Taylor and Hessian criteria need
are collected by :mod:`p3b_hf.methods.statistics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import P3BError
from ..models.locator import locate, locate_mlps, stage_family_of
from .statistics import accumulate_gradients, mean_squared_per_sample_gradients

CRITERIA = ("hessian", "taylor", "l1", "l2", "random")


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


def element_score_fn(
    criterion: str,
    *,
    grads: dict[str, torch.Tensor] | None = None,
    sq_grads: dict[str, torch.Tensor] | None = None,
) -> ElementScore:
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
            raise P3BError(
                "The hessian criterion needs per-sample squared gradients "
                "(mean_squared_per_sample_gradients)."
            )
        return lambda n, w: w.pow(2) * _get(sq_grads, n)
    raise P3BError(f"Unknown importance {criterion!r}; choose one of {', '.join(CRITERIA)}.")


def _get(d: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    if name not in d:
        raise P3BError(
            f"No gradient statistics for parameter {name}; it received no gradient. Make sure the "
            "calibration batches run through the whole model."
        )
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
def structure_scores(
    model: nn.Module,
    element: ElementScore,
    *,
    reduction: str = "mean",
    normalizer: str | None = "mean",
    criterion: str = "",
) -> StructureScores:
    """Grouped per-structure scores from per-weight scores (Torch-Pruning semantics, see module doc).

    Members of the embedding group: the patch projection (out-channel rows), every LayerNorm gamma,
    q/k/v and fc1 input columns, attention-output and fc2 output rows, the final / pooling LayerNorm and
    the input columns of every classifier head (Torch-Pruning keeps the classifier's *outputs* but still
    scores and prunes its inputs; DINOv2's head is one member whose channel ``c`` sums its columns ``c``
    and ``C + c``, as Torch-Pruning's concat index mapping scatters both into ``c``). Bare parameters --
    tokens, position embeddings, layer scales -- are pruned with the group but not scored (not in
    Torch-Pruning's target types). Head-dim group: q/k/v rows and the attention-output columns of the
    ``heads*head_dim`` inner channels. MLP group: fc1 rows and fc2 columns (a gated MLP: + the up rows, one
    hidden unit being a (gate, up, down) triple; the up columns join the embedding group).

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
        embed += [
            s(lm.ln_before.weight),
            cols(lm.q),
            cols(lm.k),
            cols(lm.v),
            rows(lm.o),
            s(lm.ln_after.weight),
            cols(lm.fc1),
            rows(lm.fc2),
            *([cols(lm.up)] if lm.up is not None else []),  # a gated MLP's up projection reads the stream too
        ]
        inner = _normalize(
            _reduce_group([rows(lm.q), rows(lm.k), rows(lm.v), cols(lm.o)], reduction), normalizer
        )
        head_dims.append(inner.view(mods.num_heads, mods.head_dim).mean(0))
        # one hidden unit: the fc1 (gate) row, a gated MLP's up row, the fc2 (down) column
        unit = [rows(lm.fc1), cols(lm.fc2), *([rows(lm.up)] if lm.up is not None else [])]
        mlp.append(_normalize(_reduce_group(unit, reduction), normalizer))
    embed += [
        s(norm.weight) for norm in (mods.final_norm, mods.pool_norm, mods.embed_norm) if norm is not None
    ]
    c = mods.hidden_size
    for (
        h
    ) in mods.heads.values():  # DINOv2's head reads [CLS, mean]: one member, both halves of a channel summed
        embed.append(cols(h).view(mods.classifier_copies, c).sum(0))
    return StructureScores(_normalize(_reduce_group(embed, reduction), normalizer), head_dims, mlp, criterion)


def _block_scores(
    model: nn.Module, element: ElementScore, reduction: str, normalizer: str | None, criterion: str
) -> StructureScores:
    """Swin / ConvNeXt: scores of every block's MLP hidden units (fc1 rows, fc2 columns) and Swin's head dims."""
    view = locate_mlps(model)
    names = {id(p): n for n, p in view.model.named_parameters()}

    def s(p: torch.Tensor) -> torch.Tensor:
        return element(names[id(p)], p.detach()).float()

    mlp = [
        _normalize(
            _reduce_group(
                [
                    s(b.fc1.weight).sum(1),
                    s(b.fc2.weight).sum(0),
                    *([s(b.up.weight).sum(1)] if b.up is not None else []),
                ],
                reduction,
            ),
            normalizer,
        )
        for b in view.blocks
    ]
    head_dims = []
    for b in view.blocks:  # Swin: q/k/v rows and o columns of each (head, dim), then averaged over the heads
        if b.attn is None:
            head_dims.append(torch.empty(0))
            continue
        a = b.attn
        inner = _reduce_group(
            [
                s(a.q_proj.weight).sum(1),
                s(a.k_proj.weight).sum(1),
                s(a.v_proj.weight).sum(1),
                s(a.o_proj.weight).sum(0),
            ],
            reduction,
        )
        head_dims.append(_normalize(inner, normalizer).view(a.num_attention_heads, a.head_dim).mean(0))
    return StructureScores(torch.empty(0), head_dims, mlp, criterion)


def random_structure_scores(model: nn.Module, seed: int = 0) -> StructureScores:
    """Torch-Pruning's ``RandomImportance``: U(0,1) per channel (head dims: averaged over heads)."""
    if stage_family_of(model) is not None:
        g = torch.Generator().manual_seed(seed)
        blocks = locate_mlps(model).blocks
        head_dims = [
            torch.rand(b.attn.num_attention_heads, b.attn.head_dim, generator=g).mean(0)
            if b.attn is not None
            else torch.empty(0)
            for b in blocks
        ]
        mlp = [torch.rand(b.width, generator=g) for b in blocks]
        return StructureScores(torch.empty(0), head_dims, mlp, "random")
    mods = locate(model)
    g = torch.Generator().manual_seed(seed)
    return StructureScores(
        torch.rand(mods.hidden_size, generator=g),
        [torch.rand(mods.num_heads, mods.head_dim, generator=g).mean(0) for _ in mods.layers],
        [torch.rand(mods.intermediate_size, generator=g) for _ in mods.layers],
        "random",
    )


def compute_structure_scores(
    model: nn.Module,
    criterion: str,
    batches: Iterable[Any] | None = None,
    *,
    taylor_batches: int = 10,
    hessian_samples: int = 256,
    chunk: int = 8,
    reduction: str = "mean",
    normalizer: str | None = "mean",
    seed: int = 0,
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
    return structure_scores(
        model,
        element_score_fn(criterion, grads=grads, sq_grads=sq),
        reduction=reduction,
        normalizer=normalizer,
        criterion=criterion,
    )
