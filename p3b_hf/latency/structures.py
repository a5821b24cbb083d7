"""The prunable structures of a model whose time the latency model predicts, from its config alone.

Every family is a list of blocks, each an attention (``h`` heads x ``d`` head dims over ``n`` tokens in
``groups`` windows) or an MLP (hidden width ``f`` over ``n`` tokens), reading and writing a residual stream
of width ``c``. What is not a block (patch embedding, norms, pooling, head, framework overhead) is the
model's *rest*, measured once per calibration. Residual read / write subsets (P3B's ``attn_in`` etc.) are not
a variable: the deployable module folds them into zero columns of full-width Linears (:mod:`p3b_hf.export`),
so they cost what the full residual costs -- the measured speed says so too.

``curve`` names the calibrated timing curve a block uses: blocks of equal shape share one (every layer of
a ViT; every block of a Swin / ConvNeXt stage). A gated MLP (SwiGLU: ``down(act(gate(x)) * up(x))``, the family
record's :meth:`~p3b_hf.models.families.record.Family.is_gated`) reads its input twice per hidden unit, so it
has its own curve (``gmlp:...``) and probe: a curve timed on a plain MLP is never reused for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..models.families import stage_family_of_config


@dataclass(frozen=True)
class Structure:
    """One prunable block at its current width (``width``: head dim for attention, hidden width for an MLP;
    0 = the block is gone)."""

    kind: str  # "attn" | "mlp"
    width: int
    full: int  # the dense width (the grid's top)
    heads: int  # attention heads of the dense block (0 for an MLP)
    c: int  # residual width the block reads / writes now
    c_full: int  # dense residual width
    tokens: int  # tokens per sequence (attention: per window)
    groups: int  # sequences per image (Swin windows; 1 otherwise)
    #: a gated MLP (hidden units ``act(gate(x)) * up(x)``): 1.5x the MACs of a plain one, its own curve
    gated: bool = False

    @property
    def curve(self) -> str:
        h = f":h{self.heads}" if self.kind == "attn" else ""
        kind = "gmlp" if self.gated else self.kind
        return f"{kind}:c{self.c_full}:n{self.tokens}:g{self.groups}{h}:w{self.full}"


def _as_int(v: Any) -> int:
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


def structures(config: Any, image_size: int | None = None, dense_config: Any = None) -> list[Structure]:
    """The blocks of ``config`` (stock or pruned, any supported family) in forward order (ViT: attn0, mlp0,
    attn1, ...). ``dense_config``: the dense model's, so that a pruned config's blocks name the dense curves
    (default: ``config`` itself is dense)."""
    dense_config = dense_config if dense_config is not None else config
    if stage_family_of_config(config) is not None:
        return _stage_structures(config, dense_config, image_size)
    from ..cost import _arch

    a, d = _arch(config, image_size), _arch(dense_config, image_size)
    n = a.patches + a.special
    gated = d.mlp_reads > 1  # the family record's is_gated, as the cost model reads it (one home)
    out = []
    for i in range(a.layers):
        inner = a.num_heads[i] * a.head_dims[i]
        hd = inner // d.num_heads[i] if inner and a.attn_in[i] and a.attn_out[i] else 0  # heads removed: fold
        out.append(Structure("attn", hd, d.head_dims[i], d.num_heads[i], a.c, d.c, n, 1))
        mlp = a.mlp[i] if a.mlp_in[i] and a.mlp_out[i] else 0
        out.append(Structure("mlp", mlp, d.mlp[i], 0, a.c, d.c, n, 1, gated))
    return out


def _stage_structures(config: Any, dense_config: Any, image_size: int | None) -> list[Structure]:
    fam = stage_family_of_config(config)
    p = _as_int(config.patch_size)
    dense_widths = fam.dense_widths(dense_config)
    widths = getattr(config, "block_intermediate_sizes", None) or dense_widths
    dims = fam.stage_dims(config)
    out: list[Structure] = []
    if fam.stage_paths.attention is None:  # MLP-only stages (e.g. ConvNeXt: its depthwise conv stays whole)
        side = (image_size or _as_int(config.image_size)) // p
        for s, (ws, dws) in enumerate(zip(widths, dense_widths)):
            side = side // 2 if s > 0 else side
            out += [
                Structure("mlp", int(f), int(df), 0, dims[s], dims[s], side * side, 1)
                for f, df in zip(ws, dws)
            ]
        return out
    side = -(-(image_size or _as_int(config.image_size)) // p)
    w = int(config.window_size)
    dense_heads, dense_hd = fam.dense_heads(dense_config)
    heads = getattr(config, "block_num_heads", None) or dense_heads
    head_dims = getattr(config, "block_head_dims", None) or dense_hd
    for s, (ws, dws) in enumerate(zip(widths, dense_widths)):
        win = min(side, w)
        padded_side = -(-side // win) * win
        groups = (padded_side // win) ** 2
        for b, (f, df) in enumerate(zip(ws, dws)):
            h, hd, dh = int(heads[s][b]), int(head_dims[s][b]), int(dense_heads[s][b])
            out.append(
                Structure(
                    "attn", (h * hd) // dh, int(dense_hd[s][b]), dh, dims[s], dims[s], win * win, groups
                )
            )
            out.append(Structure("mlp", int(f), int(df), 0, dims[s], dims[s], side * side, 1))
        side = -(-side // 2)
    return out
