"""The deployable form of a model -- what is exported and timed as "deployable".

Not the HF module as is but :func:`p3b_hf.optimize.optimize_for_inference` (patch embedding as one GEMM,
fused q/k/v, LayerNorm affine folded into the next Linear, cls-only last layer, widths zero-padded to
multiples of 8) with P3B's residual index operations **folded away** where that is exact (``fold="all"``,
the default):

- a ``full_stats`` read (LayerNorm statistics over all C channels, then a gather of the read
  subset) feeds a Linear; the gather becomes zero columns of that Linear (``x[:, idx] @ W.T ==
  x @ W_full.T`` with ``W_full[:, idx] = W`` and zeros elsewhere). The LayerNorm affine is folded
  into the same Linear first, so the op between the statistics and the GEMM is gone entirely;
- a scatter-add of a sub-block's output into its written subset becomes zero rows of the output
  Linear (``x.index_add(-1, idx, u @ W.T + b) == x + u @ W_full.T + b_full``).

Zero columns and rows add exact zeros, so the function is unchanged; the graph then has exactly
the operators of the dense model (fewer, where sub-blocks were removed) with narrower inner GEMMs,
no Gather / ScatterND. On CPU at batch 1 the gathers and scatter-adds cost more than the MACs the
zero columns/rows add (docs/export.md has the figures); ``fold="reads"`` / ``"none"`` keep them.
``subset_stats`` reads (LayerNorm over the subset only) cannot be folded and stay gathers.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .stack import ExportError

FOLDS = ("all", "reads", "none")
GRAPHS = ("deploy", "hf")


class LogitsModule(nn.Module):
    """The HF module as is, returning the logits tensor (``graph="hf"``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def deploy_module(
    model: nn.Module, *, fold: str = "all", graph: str = "deploy", round_to: int | None = 8
) -> nn.Module:
    """The module that is exported: ``pixel_values -> logits``, exactly the function of ``model``.

    ``graph="deploy"`` (default): :func:`p3b_hf.optimize.optimize_for_inference` with the residual
    gathers (``fold`` in ``"all"``, ``"reads"``) and scatter-adds (``"all"``) folded into zero
    columns / rows of the adjacent Linears (module docstring). ``graph="hf"``: the HF module as is.
    Works for p3b_hf pruned models and stock HF ViT/DeiT (the dense baseline); BEiT, DINOv2, Swin and ConvNeXt,
    which ``optimize_for_inference`` does not rewrite, always export their HF module.
    """
    if fold not in FOLDS:
        raise ExportError(f"--fold {fold!r} is not one of {', '.join(FOLDS)}.")
    if graph not in GRAPHS:
        raise ExportError(f"--graph {graph!r} is not one of {', '.join(GRAPHS)}.")
    from ..optimize import has_fast_path, optimize_for_inference

    if graph == "deploy" and not has_fast_path(model.config):
        graph = "hf"  # BEiT / DINOv2 / Swin / ConvNeXt: no optimize_for_inference rewrite; their HF module is exported
    if graph == "hf":
        # a copy: the p3b modules cache index tensors per device, and tracing would cache fake tensors
        return LogitsModule(copy.deepcopy(model).eval())

    kwargs: dict[str, Any] = {"compile": False, "round_to": round_to}
    if fold in ("all", "reads"):
        kwargs["dense_reads"] = True
    if fold == "all":
        kwargs["scatter"] = "dense"
    return optimize_for_inference(model, **kwargs).eval()


def residual_index_ops(module: nn.Module) -> dict[str, int]:
    """How many residual gathers / scatter-adds are left in a deploy module (0 / 0 when fully folded)."""
    from ..optimize import describe

    if isinstance(module, LogitsModule):
        return {}
    d = describe(module)
    return {"gathers": d["reads"]["index"], "scatter_adds": d["writes"]["index"]}


# ------------------------------------------------------------------------------------------- export
def _image_shape(config: Any, processor: Any = None) -> tuple[int, int]:
    """``(channels, size)`` of the exported input: ``config.image_size``, except DINOv2, whose config holds its
    pretraining grid (518 px on the Hub) while its image processor crops 224 (:func:`p3b_hf.data.model_image_size`):
    the processor's crop size when there is one, else the config's grid."""
    from ..data import model_image_size

    size = model_image_size(config)
    if size is None:
        crop = getattr(processor, "crop_size", None) or {}
        size = int(crop.get("height") or _as_int(config.image_size))
    return int(getattr(config, "num_channels", 3)), size


def _as_int(v: Any) -> int:
    return int(v if isinstance(v, int) else v[0])
