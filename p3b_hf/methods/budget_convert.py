"""Whole-model parameter budgets <-> VBP's native knob ``p`` (fraction of all MLP neurons), from configs alone.

VBP removes MLP neurons only; each costs ``2C + 1`` parameters (an fc1 row + its bias and an fc2
column), so ``params(p) = dense - floor(p * L * F) * (2C + 1)`` exactly. MLPs hold ~62-66 % of a
DeiT's parameters, so a larger whole-model cut is unreachable: :class:`BudgetError` says so.
"""

from __future__ import annotations

import math
from typing import Any

from ..cost import count_cost
from ..errors import BudgetError
from ..models.families import dense_intermediate_size

_EPS = 1e-9


def _dims(model_or_config: Any) -> tuple[int, int, int]:
    config = getattr(model_or_config, "config", model_or_config)
    return int(config.hidden_size), int(config.num_hidden_layers), dense_intermediate_size(config)


def neurons_for_percentage(config: Any, percentage: float) -> int:
    """Number of MLP neurons VBP removes at ``percentage`` (floor, as ``int(p * total)``)."""
    _, n_layers, f = _dims(config)
    if not 0.0 <= percentage < 1.0:
        raise BudgetError(f"VBP --percentage {percentage} is impossible: give the fraction of MLP neurons to "
                          "remove in [0, 1), e.g. 0.5.")
    return int(math.floor(percentage * n_layers * f + _EPS))


def vbp_params(config: Any, percentage: float) -> int:
    """Whole-model parameters after VBP at ``percentage`` (stock config or model of any supported family)."""
    c, _, _ = _dims(config)
    return count_cost(config)["params"] - neurons_for_percentage(config, percentage) * (2 * c + 1)


def vbp_max_prune_ratio(config: Any, min_keep: int = 1) -> float:
    """Largest fraction of whole-model params VBP can remove (keeping ``min_keep`` neurons per layer)."""
    c, n_layers, f = _dims(config)
    return n_layers * (f - min_keep) * (2 * c + 1) / count_cost(config)["params"]


def percentage_for_prune_ratio(config: Any, prune_ratio: float, min_keep: int = 1) -> float:
    """Smallest VBP ``p`` that removes at least ``prune_ratio`` of the whole model's parameters."""
    if not 0.0 < prune_ratio < 1.0:
        raise BudgetError(f"--prune-ratio {prune_ratio} is impossible: give the fraction of whole-model "
                          "parameters to remove, strictly between 0 and 1.")
    c, n_layers, f = _dims(config)
    dense = count_cost(config)["params"]
    neurons = math.ceil(prune_ratio * dense / (2 * c + 1) - _EPS)
    if neurons > n_layers * (f - min_keep):
        top = vbp_max_prune_ratio(config, min_keep)
        raise BudgetError(
            f"--prune-ratio {prune_ratio} is unreachable with VBP: it prunes MLP neurons only, which hold "
            f"{100 * n_layers * f * (2 * c + 1) / dense:.1f} % of this model's {dense:,} parameters, so at most "
            f"{100 * top:.1f} % can be removed (keeping {min_keep} neuron per layer). Use --prune-ratio <= "
            f"{math.floor(top * 1000) / 1000} with --method vbp, or --method global / p3b for larger cuts.")
    return neurons / (n_layers * f)


def target_params_for_prune_ratio(model_or_config: Any, prune_ratio: float) -> int:
    """Whole-model parameter target of ``--prune-ratio`` (fraction of whole-model params to remove)."""
    if not 0.0 < prune_ratio < 1.0:
        raise BudgetError(f"--prune-ratio {prune_ratio} is impossible: give the fraction of whole-model "
                          "parameters to remove, strictly between 0 and 1.")
    return int(round((1.0 - prune_ratio) * count_cost(model_or_config)["params"]))
