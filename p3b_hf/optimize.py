"""Fast, inference-only execution of pruned (and dense / ideal plain) ViT/DeiT models.

:func:`optimize_for_inference` turns a model into a :class:`FastViT`: a flat module holding
pre-arranged weights that returns the logits tensor. Every rewrite is *exact* in real arithmetic
(the tests check ``allclose`` against the eager model); only floating-point rounding differs:

- **patch embedding as a matmul** (``patch_embed_as_matmul``): a stride-P conv is a reshape plus a
  GEMM; cuDNN's conv is slow for this shape (~7 ms vs ~0.4 ms per 1024 images on an H100).
  Conv bias and the patch position embeddings are pre-added into one table.
- **q/k/v as one GEMM** with the softmax scale kept from the config.
- **folded norms** (``fold_norms``): a LayerNorm's affine part is folded into the Linear that reads
  it (``W' = W diag(gamma)``, ``b' = b + W beta``). With P3B's ``full_stats`` LayerNorm the gather of
  the read channels then acts on the bare normalised stream; under ``torch.compile`` statistics,
  gather and scaling fuse into one kernel.
- **scatter-add of a sub-block's output** (``scatter``): ``"index_add"`` (in-place ``index_add_``;
  the eager default), ``"gather"`` (``x + pad(u)[inv]``: a pure pointwise op with an indirect load,
  no atomics; the default under compile, where it fuses with the next norm), ``"dense"`` (the
  output Linear is zero-padded to all C channels; more MACs, no indexing). Full subsets skip it.
- **dense reads** (``dense_reads``, off by default): a ``full_stats`` gather becomes zero columns of
  a full-width first Linear (more MACs, no indexing) -- an option for CPU, where the gather of tiny
  90 %-pruned layers is relatively costly.
- **only the special tokens after the last attention** (``prune_last_layer_tokens``): the last
  layer's queries, output projection and MLP, and the final LayerNorm, run on the cls
  (+ distillation) token(s) only -- the classifier reads nothing else.
- **widths rounded** (``round_to``, default 8; ``None`` = off): inner widths (head dim, MLP), written
  channel subsets and (for ``full_stats`` norms) read subsets are zero-padded to multiples of
  ``round_to``. Zero rows / columns add exact zeros, so the function is unchanged; GEMMs and attention
  get aligned shapes (bf16 tensor-core GEMMs and flash attention want multiples of 8; on CPU it was
  1-3 % faster for 75-90 %-pruned DeiT-S, see docs/bench.md).
- **torch.compile** (``compile``) of the whole forward.

The ideal plain ViT (:mod:`p3b_hf.models.plain_vit`) and dense models go through the same
rewrites (prefix reads/writes instead of index sets), so "optimised pruned vs optimised ideal"
isolates the cost of P3B's channel subsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UnsupportedModelError
from .models import P3BViTConfig
from .models.families import family_of
from .models.modeling_p3b_layers import _take
from .models.plain_vit import is_plain_vit
from .padding import grow_subset, round_up

SCATTER_MODES = ("auto", "index_add", "gather", "dense")


@dataclass
class _Channels:
    """Residual channels a sub-block reads or writes: all, a contiguous prefix, or an index set."""

    kind: str  # "all" | "prefix" | "index"
    width: int
    idx: list[int] | None = None


def _channels(subset: list[int] | None, full: int, plain: bool) -> _Channels:
    if subset is None or len(subset) == full:
        if subset is None or list(subset) == list(range(full)):
            return _Channels("all", full)
    if plain:
        return _Channels("prefix", len(subset))
    return _Channels("index", len(subset), [int(i) for i in subset])


def _pad_subset(ch: _Channels, target: int, full: int) -> _Channels:
    """Grow a channel set to ``target`` channels (new ones get zero weights by the caller)."""
    target = min(target, full)
    if ch.kind == "all" or target <= ch.width:
        return ch
    if ch.kind == "prefix":
        return _Channels("all", full) if target == full else _Channels("prefix", target)
    return _Channels("index", target, grow_subset(ch.idx, target, full))


def _pad_cols(w: torch.Tensor, n: int) -> torch.Tensor:
    return F.pad(w, (0, n - w.shape[1])) if n > w.shape[1] else w


def _pad_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    if n <= t.shape[0]:
        return t
    return F.pad(t, (0, 0, 0, n - t.shape[0])) if t.dim() == 2 else F.pad(t, (0, n - t.shape[0]))


# ---------------------------------------------------------------------------------------- modules
class _Read(nn.Module):
    """LayerNorm of the channels a sub-block reads (affine part optional: it may be folded)."""

    def __init__(
        self,
        ch: _Channels,
        full: int,
        eps: float,
        full_stats: bool,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
    ) -> None:
        super().__init__()
        self.kind, self.width, self.full, self.eps, self.full_stats = ch.kind, ch.width, full, eps, full_stats
        self.register_buffer("idx", torch.tensor(ch.idx or [], dtype=torch.long), persistent=False)
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "all":
            return F.layer_norm(x, (self.full,), self.weight, self.bias, self.eps)
        if self.kind == "prefix":
            return F.layer_norm(x[..., : self.width], (self.width,), self.weight, self.bias, self.eps)
        if not self.full_stats:
            return F.layer_norm(_take(x, self.idx), (self.width,), self.weight, self.bias, self.eps)
        h = _take(F.layer_norm(x, (self.full,), None, None, self.eps), self.idx)
        return h if self.weight is None else torch.addcmul(self.bias, h, self.weight)


class _Write(nn.Module):
    """Adds a sub-block's output into the residual stream (in place: the stream is ours)."""

    def __init__(self, ch: _Channels, full: int, scatter: str) -> None:
        super().__init__()
        self.kind, self.width = ch.kind, ch.width
        self.scatter = scatter
        self.register_buffer("idx", torch.tensor(ch.idx or [], dtype=torch.long), persistent=False)
        inv = [ch.width] * full  # position in the update, or the appended zero
        for pos, c in enumerate(ch.idx or []):
            inv[c] = pos
        self.register_buffer("inv", torch.tensor(inv, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.kind == "all":
            return x.add_(u)
        if self.kind == "prefix":
            x[..., : self.width] += u
            return x
        if self.scatter == "gather":
            return x + _take(F.pad(u, (0, 1)), self.inv)
        return x.index_add_(-1, self.idx, u)


class _Constant(nn.Module):
    """A removed sub-block: its constant output, zero-filled to the full residual width."""

    def __init__(self, full_vector: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("value", full_vector, persistent=False)

    def forward(self, x: torch.Tensor, keep_tokens: int | None = None) -> torch.Tensor:
        return x.add_(self.value)


class _Attention(nn.Module):
    def __init__(
        self,
        read: _Read,
        write: _Write,
        qkv_w: torch.Tensor,
        qkv_b: torch.Tensor | None,
        heads: int,
        head_dim: int,
        scale: float,
        o_w: torch.Tensor,
        o_b: torch.Tensor,
    ) -> None:
        super().__init__()
        self.read, self.write = read, write
        self.heads, self.head_dim, self.scale = heads, head_dim, scale
        for name, t in (("qkv_w", qkv_w), ("qkv_b", qkv_b), ("o_w", o_w), ("o_b", o_b)):
            self.register_buffer(name, t, persistent=False)

    def forward(self, x: torch.Tensor, keep_tokens: int | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = F.linear(self.read(x), self.qkv_w, self.qkv_b)
        q, k, v = qkv.view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if keep_tokens is not None:
            q, x, n = q[:, :, :keep_tokens], x[:, :keep_tokens], keep_tokens
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim)
        return self.write(x, F.linear(out, self.o_w, self.o_b))


class _MLP(nn.Module):
    def __init__(
        self,
        read: _Read,
        write: _Write,
        w1: torch.Tensor,
        b1: torch.Tensor,
        act: nn.Module,
        w2: torch.Tensor,
        b2: torch.Tensor,
    ) -> None:
        super().__init__()
        self.read, self.write, self.act = read, write, act
        for name, t in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
            self.register_buffer(name, t, persistent=False)

    def forward(self, x: torch.Tensor, keep_tokens: int | None = None) -> torch.Tensor:
        if keep_tokens is not None:
            x = x[:, :keep_tokens]
        return self.write(x, F.linear(self.act(F.linear(self.read(x), self.w1, self.b1)), self.w2, self.b2))


class _Embeddings(nn.Module):
    def __init__(self, conv: nn.Conv2d, tokens: torch.Tensor, pos: torch.Tensor, as_matmul: bool) -> None:
        super().__init__()
        k = tokens.shape[1]
        self.patch = conv.kernel_size[0]
        self.in_ch = conv.in_channels
        self.as_matmul = as_matmul
        w = conv.weight.detach()
        self.register_buffer("w", w.reshape(w.shape[0], -1) if as_matmul else w, persistent=False)
        self.register_buffer("patch_add", (pos[:, k:] + conv.bias.detach()).contiguous(), persistent=False)
        self.register_buffer("special", (tokens + pos[:, :k]).contiguous(), persistent=False)
        self.grid = int(round((pos.shape[1] - k) ** 0.5))

    def forward(self, px: torch.Tensor) -> torch.Tensor:
        b, g, p = px.shape[0], self.grid, self.patch
        if px.shape[-1] != g * p or px.shape[-2] != g * p:
            raise ValueError(
                f"Input image size ({px.shape[-2]}*{px.shape[-1]}) doesn't match model ({g * p}*{g * p})."
            )
        px = px.to(self.w.dtype)
        if self.as_matmul:
            cols = px.reshape(b, self.in_ch, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, -1)
            y = F.linear(cols, self.w)
        else:
            y = F.conv2d(px, self.w, stride=p).flatten(2).transpose(1, 2)
        return torch.cat([self.special.expand(b, -1, -1), y + self.patch_add], dim=1)


class FastViT(nn.Module):
    """Inference-only ViT/DeiT built by :func:`optimize_for_inference`; ``forward`` returns logits."""

    def __init__(
        self,
        embeddings: _Embeddings,
        blocks: list[nn.Module],
        last_layer_start: int,
        norm: tuple[torch.Tensor, torch.Tensor, float],
        heads: list[tuple[torch.Tensor, torch.Tensor]],
        head_tokens: int,
        prune_last_layer_tokens: bool,
    ) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.blocks = nn.ModuleList(blocks)
        self.last_layer_start = last_layer_start  # blocks[last_layer_start:] belong to the last layer
        self.register_buffer("norm_w", norm[0], persistent=False)
        self.register_buffer("norm_b", norm[1], persistent=False)
        self.eps = norm[2]
        self.n_heads = len(heads)
        for j, (w, b) in enumerate(heads):
            self.register_buffer(f"head{j}_w", w, persistent=False)
            self.register_buffer(f"head{j}_b", b, persistent=False)
        self.head_tokens = head_tokens
        self.prune_last_layer_tokens = prune_last_layer_tokens

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixel_values)
        keep: int | None = None
        for i, block in enumerate(self.blocks):
            if (
                self.prune_last_layer_tokens
                and i >= self.last_layer_start
                and not isinstance(block, _Constant)
            ):
                keep = self.head_tokens
            x = block(x, keep)
        x = F.layer_norm(x[:, : self.head_tokens], (x.shape[-1],), self.norm_w, self.norm_b, self.eps)
        if self.n_heads == 0:
            return x[:, 0]
        logits = [
            F.linear(x[:, j], getattr(self, f"head{j}_w"), getattr(self, f"head{j}_b"))
            for j in range(self.n_heads)
        ]
        return logits[0] if self.n_heads == 1 else (logits[0] + logits[1]) / 2


# ---------------------------------------------------------------------------------------- building
@dataclass
class _Options:
    fold_norms: bool
    scatter: str
    round_to: int | None
    dense_reads: bool = False


def has_fast_path(config: Any) -> bool:
    """Whether :func:`optimize_for_inference` supports models of this (stock or pruned) config: the family
    record says so (``Family.fast_path``: ViT, DeiT); others run as their HF module."""
    fam = family_of(config) if config is not None else None
    return fam is not None and fam.fast_path


def _as_p3b(model: nn.Module) -> nn.Module:
    if isinstance(getattr(model, "config", None), P3BViTConfig):
        return model
    if not has_fast_path(getattr(model, "config", None)):
        raise UnsupportedModelError(
            f"optimize_for_inference supports ViT/DeiT (pruned or stock) only, not "
            f"{type(model).__name__} yet; run the model itself (eager or torch.compile)."
        )
    from .plan import WidthPlan
    from .slicing import apply_width_plan  # stock HF ViT/DeiT -> full-width P3B model

    try:
        return apply_width_plan(model, WidthPlan.full(model.config))
    except Exception as e:
        raise UnsupportedModelError(
            f"optimize_for_inference supports HF ViT/DeiT and p3b_hf models, not "
            f"{type(model).__name__} ({e})."
        ) from e


def _read_and_first(
    ln: nn.Module,
    ch: _Channels,
    cfg: P3BViTConfig,
    full: int,
    weights: list[torch.Tensor],
    bias: list[torch.Tensor | None],
    opt: _Options,
) -> tuple[_Read, list[torch.Tensor], list[torch.Tensor | None]]:
    """The read-norm of a sub-block and the (folded, padded) weights of the Linears that consume it."""
    g, beta = ln.weight.detach().float(), ln.bias.detach().float()
    if opt.fold_norms:
        bias = [(b.float() if b is not None else 0) + w.float() @ beta for w, b in zip(weights, bias)]
        weights = [w.float() * g for w in weights]
        g = beta = None
    if opt.round_to and ch.kind == "index" and cfg.layernorm_mode == "full_stats":
        # extra channels are normalised like the others and meet zero columns: exact.
        # (A prefix / subset-stats norm would change its statistics, so those stay unpadded.)
        padded = _pad_subset(ch, round_up(ch.width, opt.round_to), full)
        if padded.width != ch.width:
            weights = [_pad_cols(w, padded.width) for w in weights]
            if g is not None:
                g, beta = F.pad(g, (0, padded.width - ch.width)), F.pad(beta, (0, padded.width - ch.width))
            ch = padded
    if opt.dense_reads and ch.kind == "index" and cfg.layernorm_mode == "full_stats":
        # the gather becomes zero columns of a full-width Linear: more MACs, no indexing
        idx = torch.tensor(ch.idx, device=weights[0].device)
        weights = [w.new_zeros(w.shape[0], full).index_copy_(1, idx, w) for w in weights]
        if g is not None:
            g, beta = g.new_zeros(full).index_copy_(0, idx, g), beta.new_zeros(full).index_copy_(0, idx, beta)
        ch = _Channels("all", full)
    dtype = ln.weight.dtype
    read = _Read(
        ch,
        full,
        cfg.layer_norm_eps,
        cfg.layernorm_mode == "full_stats",
        None if g is None else g.to(dtype),
        None if beta is None else beta.to(dtype),
    )
    return read, [w.to(dtype) for w in weights], [None if b is None else b.to(dtype) for b in bias]


def _write_and_last(
    ch: _Channels, full: int, w: torch.Tensor, b: torch.Tensor, opt: _Options, compiled: bool
) -> tuple[_Write, torch.Tensor, torch.Tensor]:
    """The write of a sub-block and its (row-padded) output Linear."""
    if ch.kind != "all" and opt.scatter == "dense":
        idx = (
            torch.arange(ch.width, device=w.device)
            if ch.kind == "prefix"
            else torch.tensor(ch.idx, device=w.device)
        )
        w_full = w.new_zeros(full, w.shape[1]).index_copy_(0, idx, w)
        b_full = b.new_zeros(full).index_copy_(0, idx, b)
        return _Write(_Channels("all", full), full, "dense"), w_full, b_full
    if opt.round_to and ch.kind != "all":
        padded = _pad_subset(ch, round_up(ch.width, opt.round_to), full)
        w, b = _pad_rows(w, padded.width), _pad_rows(b, padded.width)
        ch = padded
    scatter = opt.scatter if opt.scatter != "auto" else ("gather" if compiled else "index_add")
    return _Write(ch, full, scatter), w, b


def _pad_heads(
    w: torch.Tensor, b: torch.Tensor | None, heads: int, hd: int, new_hd: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Zero-pad the per-head output rows of q/k/v (stacked) from ``hd`` to ``new_hd``."""
    w = F.pad(w.reshape(3, heads, hd, -1), (0, 0, 0, new_hd - hd)).reshape(3 * heads * new_hd, -1)
    if b is not None:
        b = F.pad(b.reshape(3, heads, hd), (0, new_hd - hd)).reshape(-1)
    return w, b


def _attention(
    layer: nn.Module, i: int, cfg: P3BViTConfig, plain: bool, opt: _Options, compiled: bool
) -> nn.Module | None:
    c = cfg.hidden_size
    out = _channels(cfg.layer_attn_out[i], c, plain)
    if not layer.attn_active:
        return None
    if layer.attn_removed:
        return _constant(layer.attention.output.dense.bias, out, c)
    sa = layer.attention.attention
    heads, hd = sa.num_heads, sa.head_dim
    qkv_w = torch.cat([sa.query.weight, sa.key.weight, sa.value.weight]).detach()
    qkv_b = None if sa.query.bias is None else torch.cat([sa.query.bias, sa.key.bias, sa.value.bias]).detach()
    new_hd = round_up(hd, opt.round_to)
    if new_hd != hd:
        qkv_w, qkv_b = _pad_heads(qkv_w, qkv_b, heads, hd, new_hd)
    read, (qkv_w,), (qkv_b,) = _read_and_first(
        layer.layernorm_before, _channels(cfg.layer_attn_in[i], c, plain), cfg, c, [qkv_w], [qkv_b], opt
    )
    o = layer.attention.output.dense
    o_w = o.weight.detach()
    if new_hd != hd:
        o_w = F.pad(o_w.reshape(-1, heads, hd), (0, new_hd - hd)).reshape(o_w.shape[0], -1)
    write, o_w, o_b = _write_and_last(out, c, o_w, o.bias.detach(), opt, compiled)
    return _Attention(read, write, qkv_w, qkv_b, heads, new_hd, sa.scale, o_w, o_b)


def _mlp(
    layer: nn.Module, i: int, cfg: P3BViTConfig, plain: bool, opt: _Options, compiled: bool
) -> nn.Module | None:
    c = cfg.hidden_size
    out = _channels(cfg.layer_mlp_out[i], c, plain)
    if not layer.mlp_active:
        return None
    if layer.mlp_removed:
        return _constant(layer.output.dense.bias, out, c)
    fc1, fc2 = layer.intermediate.dense, layer.output.dense
    hidden = round_up(fc1.out_features, opt.round_to)
    w1, b1 = _pad_rows(fc1.weight.detach(), hidden), _pad_rows(fc1.bias.detach(), hidden)
    read, (w1,), (b1,) = _read_and_first(
        layer.layernorm_after, _channels(cfg.layer_mlp_in[i], c, plain), cfg, c, [w1], [b1], opt
    )
    write, w2, b2 = _write_and_last(
        out, c, _pad_cols(fc2.weight.detach(), hidden), fc2.bias.detach(), opt, compiled
    )
    return _MLP(read, write, w1, b1, layer.intermediate.intermediate_act_fn, w2, b2)


def _constant(bias: torch.Tensor, ch: _Channels, full: int) -> _Constant:
    vec = bias.detach().new_zeros(full)
    if ch.kind == "index":
        vec[torch.tensor(ch.idx, device=vec.device)] = bias.detach()
    else:
        vec[: ch.width] = bias.detach()
    return _Constant(vec)


@torch.no_grad()
def optimize_for_inference(
    model: nn.Module,
    *,
    compile: bool | None = None,
    patch_embed_as_matmul: bool = True,
    fold_norms: bool = True,
    scatter: str = "auto",
    round_to: int | None = 8,
    prune_last_layer_tokens: bool = True,
    dense_reads: bool = False,
    compile_mode: str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Return an inference-only module computing ``model``'s logits (a tensor) faster.

    ``model``: a p3b_hf pruned model, an ideal plain ViT (:func:`p3b_hf.models.plain_vit.plain_like`)
    or a stock HF ``ViTForImageClassification`` / ``DeiTForImageClassification[WithTeacher]``.
    The result holds the (re-arranged) weights as buffers on the model's device and dtype (or
    ``dtype``); untouched tensors may share storage with ``model``, so rebuild it after changing the
    model's weights. See the module docstring for what each option does; all are exact rewrites.
    ``compile=True`` wraps it in ``torch.compile(dynamic=False, mode=compile_mode)``; the first call
    compiles (tens of seconds for a 12-layer model on a GPU machine). ``compile=None`` (default)
    compiles on CUDA only: on CPU the inductor C++ kernels were measured several times *slower* than
    the uncompiled fast path (2 shared vCPUs) and compiling took minutes.
    """
    if scatter not in SCATTER_MODES:
        raise ValueError(f"scatter={scatter!r} is not one of {SCATTER_MODES}.")
    if round_to is not None and round_to < 1:
        raise ValueError(f"round_to={round_to} must be a positive int (or None for no rounding).")
    plain = is_plain_vit(model)
    model = _as_p3b(model)
    ref = next(model.parameters())
    if compile is None:
        compile = ref.device.type == "cuda"
    cfg: P3BViTConfig = model.config
    opt = _Options(fold_norms, scatter, round_to, dense_reads)
    base = getattr(model, model.base_model_prefix)
    emb = base.embeddings
    tokens = [emb.cls_token] + ([emb.distillation_token] if hasattr(emb, "distillation_token") else [])
    embeddings = _Embeddings(
        emb.patch_embeddings.projection,
        torch.cat(tokens, 1).detach(),
        emb.position_embeddings.detach(),
        patch_embed_as_matmul,
    )
    blocks: list[nn.Module] = []
    last_start = 0
    for i, layer in enumerate(base.encoder.layer):
        last_start = len(blocks)
        for block in (
            _attention(layer, i, cfg, plain, opt, compile),
            _mlp(layer, i, cfg, plain, opt, compile),
        ):
            if block is not None:
                blocks.append(block)
    if cfg.distillation_head:
        heads_mods, head_tokens = [model.cls_classifier, model.distillation_classifier], 2
    else:
        heads_mods, head_tokens = [model.classifier], 1
    heads = [(h.weight.detach(), h.bias.detach()) for h in heads_mods if isinstance(h, nn.Linear)]
    norm = (base.layernorm.weight.detach(), base.layernorm.bias.detach(), base.layernorm.eps)
    fast = FastViT(embeddings, blocks, last_start, norm, heads, head_tokens, prune_last_layer_tokens).eval()
    fast.requires_grad_(False)
    fast = fast.to(device=ref.device, dtype=dtype or ref.dtype)
    if compile:
        _allow_many_compiled_models()
        return torch.compile(fast, dynamic=False, mode=compile_mode)
    return fast


def _allow_many_compiled_models() -> None:
    """Every compiled FastViT adds guards on the same ``forward`` code; past dynamo's recompile limit
    (8 by default) further models would silently run uncompiled, e.g. in a benchmark of 10 models."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the name since torch 2.6, the older one
        if hasattr(cfg, name):
            setattr(cfg, name, max(64, getattr(cfg, name)))
            return


def describe(fast: nn.Module) -> dict[str, Any]:
    """Counts of the subset operations a :class:`FastViT` performs (for bench reports)."""
    fast = getattr(fast, "_orig_mod", fast)
    reads = [m for m in fast.modules() if isinstance(m, _Read)]
    writes = [m for m in fast.modules() if isinstance(m, _Write)]
    return {
        "reads": {k: sum(r.kind == k for r in reads) for k in ("all", "prefix", "index")},
        "writes": {k: sum(w.kind == k for w in writes) for k in ("all", "prefix", "index")},
        "scatter": sorted({w.scatter for w in writes if w.kind == "index"}),
    }
