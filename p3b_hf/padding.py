"""Exact zero padding of a pruned model's widths to hardware-friendly multiples (``pad_widths``).

P3B, VBP and global pruning keep whatever widths their scores give: head dims like 37, MLP widths like
301, residual subsets of 187 channels. bf16 tensor-core GEMMs and fused attention kernels want
multiples of 8; on an H100 the eager pruned DeiT-B (-75 %, ragged widths) ran at 0.61x its dense
model, and so did the plain ViT of the same shapes (BENCHMARKS.md §2). ``optimize_for_inference``
pads at inference time; :func:`pad_widths` does the same to the *model* that is saved and loaded with
``from_pretrained`` -- for users who run the HF module as is, export it (ONNX, TensorRT) or fine-tune it.

Every padded slot computes an exact zero, so the logits are unchanged (up to float rounding of the
reordered sums):

* head dim ``d -> d'``: q, k, v get zero rows (and zero bias) for the new dims of every head, so they add
  ``0`` to every attention score and produce zero value channels; the output projection gets zero
  columns for them. The softmax scale is an explicit config value and stays the dense one.
* MLP width ``h -> h'``: fc1 zero rows with zero bias (``act(0) = 0`` for GELU/ReLU/SiLU), fc2 zero columns.
* written residual subset ``w -> w'`` (channels not yet written, lowest index first): zero output rows and
  zero bias, i.e. ``+ 0`` to those channels.
* read residual subset (``layernorm_mode="full_stats"`` only, where the statistics cover all channels
  anyway): the new channels are normalised like the others and meet zero input columns. Under
  ``subset_stats`` the read subsets keep their width (padding would change the statistics).

Removed sub-blocks (a constant output) and full-width sets are left alone. The padded zeros are real
parameters: ``count_cost`` counts them (the report of ``p3b-hf prune --pad-to`` gives both counts).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .errors import P3BError
from .models.families import family_of

_ZERO_AT_ZERO = {"gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "relu", "silu", "swish"}


def round_up(n: int, m: int | None) -> int:
    """``n`` rounded up to a multiple of ``m`` (0 stays 0; ``m`` None/0 = unchanged)."""
    return n if not m or n == 0 or n % m == 0 else n + m - n % m


def grow_subset(subset: list[int], target: int, full: int) -> list[int]:
    """``subset`` followed by the lowest unused channels of ``range(full)`` until it has ``target`` entries
    (the channels padding adds; they get zero weights)."""
    used = set(subset)
    return list(subset) + [c for c in range(full) if c not in used][: max(0, target - len(subset))]


def _pad_subset(
    subset: list[int] | None, full: int, multiple: int
) -> tuple[list[int] | None, torch.Tensor | None]:
    """``(new sorted subset, positions of the old channels in it)``; ``(subset, None)`` if unchanged."""
    if subset is None or len(subset) == 0:
        return subset, None
    target = min(full, round_up(len(subset), multiple))
    if target == len(subset):
        return subset, None
    new = sorted(grow_subset(list(subset), target, full))
    where = {c: i for i, c in enumerate(new)}
    return (None if len(new) == full else new), torch.tensor([where[c] for c in subset], dtype=torch.long)


def _head_positions(heads: int, old: int, new: int) -> torch.Tensor:
    """Rows of the old ``heads x old`` q/k/v layout inside the new ``heads x new`` one."""
    return (torch.arange(heads)[:, None] * new + torch.arange(old)[None, :]).reshape(-1)


def _embed(
    old: torch.Tensor, shape: tuple[int, ...], rows: torch.Tensor | None, cols: torch.Tensor | None
) -> torch.Tensor:
    """A zero tensor of ``shape`` holding ``old`` at the given row / column positions (``None``: prefix)."""
    out = old.new_zeros(shape)
    r = rows if rows is not None else torch.arange(old.shape[0])
    if old.dim() == 1:
        out[r] = old
    else:
        c = cols if cols is not None else torch.arange(old.shape[1])
        out[r[:, None], c[None, :]] = old
    return out


def check_pad_to(config: object, multiple: int | None) -> None:
    """Refuse ``--pad-to multiple`` for a model of ``config`` (dense or pruned) that :func:`pad_widths` could not
    pad, from the config alone -- so ``p3b-hf prune`` / ``compare`` refuse it before any training, leaving
    nothing behind. ``multiple`` None/0: no padding asked, nothing to check."""
    if not multiple:
        return
    if not isinstance(multiple, int) or multiple < 1:
        raise P3BError(f"--pad-to {multiple!r} is invalid; give a positive channel multiple such as 8.")
    fam = family_of(config)
    if fam is None or not fam.paddable:  # the record says which families pad_widths pads
        raise P3BError(
            f"--pad-to (pad_widths) supports ViT/DeiT models only, not model_type "
            f"{getattr(config, 'model_type', None)!r} yet; prune the BEiT/DINOv2/Swin/ConvNeXt model without "
            "--pad-to (bench / export pad at inference time: optimize_for_inference(round_to=...))."
        )
    act = getattr(config, "hidden_act", None)
    if act not in _ZERO_AT_ZERO:
        raise P3BError(
            f"pad_widths: activation {act!r} is not known to map 0 to 0, so padded MLP "
            "neurons would not be exact zeros; use optimize_for_inference(round_to=...) instead."
        )


@torch.no_grad()
def pad_widths(model: nn.Module, multiple: int = 8) -> nn.Module:
    """Return a copy of a p3b_hf pruned model whose widths are multiples of ``multiple``, computing
    exactly the same function (see the module docstring). The input model is not modified."""
    cfg = getattr(model, "config", None)
    fam = family_of(cfg) if cfg is not None else None
    if fam is not None and not fam.paddable:
        check_pad_to(cfg, multiple or 8)  # the family's error
    if fam is None or not isinstance(cfg, fam.config_class):  # not a pruned model
        raise P3BError(
            f"pad_widths needs a p3b_hf pruned model (P3BViT/P3BDeiT config), got "
            f"{type(model).__name__}; prune it first (p3b-hf prune) or use optimize_for_inference."
        )
    if not isinstance(multiple, int) or multiple < 1:
        raise P3BError(f"--pad-to {multiple!r} is invalid; give a positive channel multiple such as 8.")
    check_pad_to(cfg, multiple)
    c = cfg.hidden_size
    full_stats = cfg.layernorm_mode == "full_stats"
    new_cfg = copy.deepcopy(cfg)
    # per layer: positions of the old slots in the new tensors (None = unchanged prefix)
    maps: list[dict[str, torch.Tensor | None]] = []
    heads_dims: list[tuple[int, int, int]] = []
    for i in range(cfg.num_hidden_layers):
        m: dict[str, torch.Tensor | None] = {}
        h, d, f = cfg.layer_num_heads[i], cfg.layer_head_dims[i], cfg.layer_intermediate_sizes[i]
        attn_live, mlp_live = h * d > 0, f > 0
        new_d = round_up(d, multiple) if attn_live else d
        new_f = round_up(f, multiple) if mlp_live else f
        new_cfg.layer_head_dims[i], new_cfg.layer_intermediate_sizes[i] = new_d, new_f
        heads_dims.append((h, d, new_d))
        m["qkv"] = _head_positions(h, d, new_d) if new_d != d else None
        m["hid"] = None  # old neurons stay a prefix of the new ones
        for key, live in (
            ("attn_in", attn_live and full_stats),
            ("mlp_in", mlp_live and full_stats),
            ("attn_out", attn_live),
            ("mlp_out", mlp_live),
        ):
            attr = f"layer_{key}"
            subset = getattr(cfg, attr)[i]
            if live:
                new_subset, pos = _pad_subset(subset, c, multiple)
                getattr(new_cfg, attr)[i] = new_subset
                m[key] = pos
            else:
                m[key] = None
        maps.append(m)
    padded = type(model)(new_cfg).to(next(model.parameters()).device)
    old_sd = model.state_dict()
    new_sd = padded.state_dict()
    for name, target in new_sd.items():
        src = old_sd[name]
        if src.shape == target.shape and not _needs_remap(name, maps):
            target.copy_(src)
            continue
        target.copy_(_remap(name, src, tuple(target.shape), maps, heads_dims))
    padded.load_state_dict(new_sd)
    return padded.to(dtype=next(model.parameters()).dtype).train(model.training)


def _layer_of(name: str) -> tuple[int, str] | None:
    parts = name.split(".")
    if "layer" not in parts:
        return None
    k = parts.index("layer")
    return int(parts[k + 1]), ".".join(parts[k + 2 :])


def _needs_remap(name: str, maps: list[dict[str, torch.Tensor | None]]) -> bool:
    where = _layer_of(name)
    if where is None:
        return False
    return any(v is not None for v in maps[where[0]].values())


def _remap(
    name: str,
    src: torch.Tensor,
    shape: tuple[int, ...],
    maps: list[dict[str, torch.Tensor | None]],
    heads_dims: list[tuple[int, int, int]],
) -> torch.Tensor:
    where = _layer_of(name)
    if where is None:
        raise RuntimeError(f"pad_widths: unexpected shape change of {name}")  # invariant, not user input
    i, local = where
    m = maps[i]
    h, d, new_d = heads_dims[i]
    is_w = local.endswith("weight")
    if local.startswith("layernorm_before."):
        return _embed(src, shape, m["attn_in"], None)
    if local.startswith("layernorm_after."):
        return _embed(src, shape, m["mlp_in"], None)
    if local.startswith("attention.attention."):  # query / key / value
        return _embed(src, shape, m["qkv"], m["attn_in"] if is_w else None)
    if local == "attention.output.dense.weight":
        cols = _head_positions(h, d, new_d) if new_d != d else None
        return _embed(src, shape, m["attn_out"], cols)
    if local == "attention.output.dense.bias":
        return _embed(src, shape, m["attn_out"], None)
    if local.startswith("intermediate.dense."):
        return _embed(src, shape, m["hid"], m["mlp_in"] if is_w else None)
    if local == "output.dense.weight":
        return _embed(src, shape, m["mlp_out"], None)
    if local == "output.dense.bias":
        return _embed(src, shape, m["mlp_out"], None)
    raise RuntimeError(f"pad_widths: no rule for {name}")  # invariant: every pruned key is handled above
