"""Whole-model parameter budgets <-> VBP's native knob ``p`` (fraction of all MLP neurons), from configs alone.

VBP removes MLP neurons only; each costs ``2C + 1`` parameters (an fc1 row + its bias and an fc2
column), so ``params(p) = dense - floor(p * L * F) * (2C + 1)`` exactly. MLPs hold ~62-66 % of a
DeiT's parameters, so a larger whole-model cut is unreachable: :class:`BudgetError` says so.

Swin / ConvNeXt: a neuron of a block of width ``C_i`` costs ``2 C_i + 1``, and ``C_i`` doubles stage by
stage, so the parameters VBP removes at a given ``p`` depend on *which* stages the variance ranking
empties -- known only after the statistics pass. :func:`neurons_for_prune_ratio` converts exactly on the
ranking (the fewest lowest-variance neurons whose removal reaches the cut; for plain ViTs it equals the
closed form); :func:`vbp_max_prune_ratio` and :func:`check_vbp_prune_ratio` work from the config for every
family (the early :class:`BudgetError`).
"""

from __future__ import annotations

import math
from typing import Any

from ..cost import count_cost
from ..errors import BudgetError, P3BError
from ..models.families import dense_intermediate_size, family_of, stage_family_of_config

_EPS = 1e-9


def _dims(model_or_config: Any) -> tuple[int, int, int]:
    config = getattr(model_or_config, "config", model_or_config)
    if stage_family_of_config(config) is not None:
        raise P3BError(
            "A Swin / ConvNeXt MLP neuron's parameter cost depends on its stage, so VBP's --prune-ratio "
            "-> --percentage conversion needs the variance ranking: use vbp_plan(model, loader, "
            "prune_ratio=...) (neurons_for_prune_ratio) instead of this closed form."
        )
    return int(config.hidden_size), int(config.num_hidden_layers), dense_intermediate_size(config)


def neuron_params(config: Any, c: Any) -> Any:
    """Parameters of one MLP hidden unit reading and writing ``c`` channels: an fc1 row + bias and an fc2 column
    (``2c + 1``); a gated MLP (the record's ``Family.gated_mlp``) adds the up row + bias (``3c + 2``). ``c`` may
    be a tensor (elementwise)."""
    config = getattr(config, "config", config)
    fam = family_of(config)
    reads = 2 if fam is not None and fam.is_gated(config) else 1
    return reads * (c + 1) + c


def mlp_layout(model_or_config: Any) -> tuple[list[int], list[int]]:
    """``(width, MLP neurons)`` of every block (plain ViTs: every layer alike; Swin / ConvNeXt: per stage)."""
    config = getattr(model_or_config, "config", model_or_config)
    fam = stage_family_of_config(config)
    if fam is None:
        n = int(config.num_hidden_layers)
        return [int(config.hidden_size)] * n, [dense_intermediate_size(config)] * n
    dims = [d for d, depth in zip(fam.stage_dims(config), config.depths) for _ in range(int(depth))]
    return dims, [f for stage in fam.dense_widths(config) for f in stage]


def neurons_for_prune_ratio(config: Any, prune_ratio: float, costs_in_removal_order: list[int]) -> int:
    """Fewest neurons, taken in removal (ranking) order with these parameter costs, whose removal cuts at least
    ``prune_ratio`` of the whole model; :class:`BudgetError` (via :func:`check_vbp_prune_ratio`) if none does."""
    check_vbp_prune_ratio(config, prune_ratio)
    target = prune_ratio * count_cost(config)["params"]
    removed = 0
    for n, cost in enumerate(costs_in_removal_order, start=1):
        removed += cost
        if removed >= target - _EPS:
            return n
    raise BudgetError(
        f"--prune-ratio {prune_ratio} is unreachable with VBP: removing every candidate neuron cuts "
        f"{removed:,} of the {count_cost(config)['params']:,} parameters; give a smaller --prune-ratio."
    )


def neurons_for_percentage(config: Any, percentage: float) -> int:
    """Number of MLP neurons VBP removes at ``percentage`` (floor, as ``int(p * total)``; total = all blocks)."""
    total = sum(mlp_layout(config)[1])
    if not 0.0 <= percentage < 1.0:
        raise BudgetError(
            f"VBP --percentage {percentage} is impossible: give the fraction of MLP neurons to "
            "remove in [0, 1), e.g. 0.5."
        )
    return int(math.floor(percentage * total + _EPS))


def vbp_params(config: Any, percentage: float) -> int:
    """Whole-model parameters after VBP at ``percentage`` (stock config or model of any supported family)."""
    c, _, _ = _dims(config)
    return count_cost(config)["params"] - neurons_for_percentage(config, percentage) * neuron_params(
        config, c
    )


def vbp_max_prune_ratio(config: Any, min_keep: int = 1) -> float:
    """Largest fraction of whole-model params VBP can remove (keeping ``min_keep`` neurons per layer / block)."""
    dims, widths = mlp_layout(config)
    config = getattr(config, "config", config)
    return (
        sum((f - min_keep) * neuron_params(config, c) for c, f in zip(dims, widths))
        / count_cost(config)["params"]
    )


def check_vbp_prune_ratio(config: Any, prune_ratio: float, min_keep: int = 1) -> None:
    """:class:`BudgetError` unless VBP can remove ``prune_ratio`` of the whole model (any family, config only)."""
    if not 0.0 < prune_ratio < 1.0:
        raise BudgetError(
            f"--prune-ratio {prune_ratio} is impossible: give the fraction of whole-model "
            "parameters to remove, strictly between 0 and 1."
        )
    top = vbp_max_prune_ratio(config, min_keep)
    if prune_ratio > top + _EPS:
        dims, widths = mlp_layout(config)
        dense = count_cost(config)["params"]
        mlp = sum(f * neuron_params(config, c) for c, f in zip(dims, widths))
        raise BudgetError(
            f"--prune-ratio {prune_ratio} is unreachable with VBP: it prunes MLP neurons only, which hold "
            f"{100 * mlp / dense:.1f} % of this model's {dense:,} parameters, so at most {100 * top:.1f} % can be "
            f"removed (keeping {min_keep} neuron per layer). Use --prune-ratio <= {math.floor(top * 1000) / 1000} "
            "with --method vbp, or --method global / p3b for larger cuts."
        )


def percentage_for_prune_ratio(config: Any, prune_ratio: float, min_keep: int = 1) -> float:
    """Smallest VBP ``p`` that removes at least ``prune_ratio`` of the whole model's parameters."""
    if not 0.0 < prune_ratio < 1.0:
        raise BudgetError(
            f"--prune-ratio {prune_ratio} is impossible: give the fraction of whole-model "
            "parameters to remove, strictly between 0 and 1."
        )
    c, n_layers, f = _dims(config)
    dense = count_cost(config)["params"]
    config = getattr(config, "config", config)
    unit = neuron_params(config, c)
    neurons = math.ceil(prune_ratio * dense / unit - _EPS)
    if neurons > n_layers * (f - min_keep):
        top = vbp_max_prune_ratio(config, min_keep)
        raise BudgetError(
            f"--prune-ratio {prune_ratio} is unreachable with VBP: it prunes MLP neurons only, which hold "
            f"{100 * n_layers * f * unit / dense:.1f} % of this model's {dense:,} parameters, so at most "
            f"{100 * top:.1f} % can be removed (keeping {min_keep} neuron per layer). Use --prune-ratio <= "
            f"{math.floor(top * 1000) / 1000} with --method vbp, or --method global / p3b for larger cuts."
        )
    return neurons / (n_layers * f)


def target_params_for_prune_ratio(model_or_config: Any, prune_ratio: float) -> int:
    """Whole-model parameter target of ``--prune-ratio`` (fraction of whole-model params to remove)."""
    if not 0.0 < prune_ratio < 1.0:
        raise BudgetError(
            f"--prune-ratio {prune_ratio} is impossible: give the fraction of whole-model "
            "parameters to remove, strictly between 0 and 1."
        )
    return int(round((1.0 - prune_ratio) * count_cost(model_or_config)["params"]))
