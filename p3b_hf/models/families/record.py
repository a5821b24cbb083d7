"""The :class:`Family` record: everything p3b_hf knows about one backbone family, as data and small hooks.

Generic code (locator, slicer, cost model, P3B's gates, data, padding, hub, bench) asks a family's record --
``family_of(config_or_model)`` in :mod:`p3b_hf.models.families` -- and never names a family. A record holds:

* identity: the stock ``model_type`` (:attr:`Family.name`), the attribute of the backbone inside the classifier
  (:attr:`Family.prefix`), the stock classifier classes and the pruned config / classifier / backbone classes;
* the kind: :data:`PLAIN` (one stage of equal blocks, every piece prunable: ViT, DeiT, BEiT, DINOv2) or
  :data:`STAGED` (stages of blocks whose width grows; MLP hidden units and window-attention heads prunable:
  Swin, ConvNeXt);
* where the pieces live: :class:`LayerPaths` (plain: per layer, for the stock transformers modules and for the
  pruned format, whose paths are also its state-dict keys) or :class:`StagePaths` (staged);
* what differs as numbers -- cost terms, P3B's dimensions, what the classifier reads (and so BPI's input),
  slicing extras (layer scale, relative position bias tables, a teacher head) -- as hooks on the config;
* run-time knowledge: whether ``optimize_for_inference`` / ``pad_widths`` handle it, the input resolution to
  feed, the demo's source model, and a slot for latency structures.

This module imports nothing of p3b_hf but :mod:`p3b_hf.errors`: records never depend on ``cost`` or ``plan``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

#: a family of one stage of equal pre-LN transformer blocks (the full WidthPlan: heads, dims, MLP, residual)
PLAIN = "plain"
#: a family of stages of blocks (per-block MLP widths, and window-attention heads / dims where there is one)
STAGED = "staged"


def as_int(v: Any) -> int:
    """``image_size`` / ``patch_size`` as one int (HF configs allow a pair)."""
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


def get_path(obj: Any, path: str | None) -> Any:
    """``obj.a.b.c`` for ``path="a.b.c"``; ``None`` when ``path`` is ``None`` or any step is missing / None."""
    if path is None:
        return None
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


@dataclass(frozen=True)
class LayerPaths:
    """Where a plain family's pieces live: ``blocks`` from the backbone to its list of layers, the rest relative
    to one layer (``ls1`` / ``ls2``: layer scales; ``rel_bias``: the layer's relative position bias table;
    ``None`` where the family has none), ``final_norm`` / ``pool_norm`` / ``shared_rel_bias`` / ``embed_norm`` / ``pooler_norm``
    relative to the backbone (``None``: the family has none). For the pruned format the paths are also the state-dict keys the slicer writes."""

    blocks: str
    ln_before: str
    q: str
    k: str
    v: str
    o: str
    ln_after: str
    fc1: str
    act: str
    fc2: str
    ls1: str | None = None
    ls2: str | None = None
    rel_bias: str | None = None
    final_norm: str | None = "layernorm"
    pool_norm: str | None = None
    shared_rel_bias: str | None = None
    #: a LayerNorm on the embeddings before the first layer (CLIP's ``pre_layrnorm``), relative to the backbone
    embed_norm: str | None = None
    #: a LayerNorm only the backbone's ``pooler_output`` reads, not the classifier (CLIP's ``post_layernorm`` of
    #: the CLS token): sliced with the embedding, never scored; relative to the backbone
    pooler_norm: str | None = None
    #: a gated (GLU / SwiGLU) MLP's up projection: the hidden units are ``act(fc1(x)) * up(x)`` with ``fc1``
    #: the gate and ``fc2`` the down projection; one hidden unit is a (gate row, up row, down column) triple,
    #: pruned together. ``None``: an ungated MLP ``fc2(act(fc1(x)))``
    up: str | None = None


#: transformers 5.x ViT-style layer (``vit.layers[i].attention.q_proj``)
STOCK_VIT_LAYOUT = LayerPaths(
    "layers",
    "layernorm_before",
    "attention.q_proj",
    "attention.k_proj",
    "attention.v_proj",
    "attention.o_proj",
    "layernorm_after",
    "mlp.fc1",
    "mlp.activation_fn",
    "mlp.fc2",
)
#: p3b_hf's pruned ViT-style layer (the legacy checkpoint names)
PRUNED_VIT_LAYOUT = LayerPaths(
    "encoder.layer",
    "layernorm_before",
    "attention.attention.query",
    "attention.attention.key",
    "attention.attention.value",
    "attention.output.dense",
    "layernorm_after",
    "intermediate.dense",
    "intermediate.intermediate_act_fn",
    "output.dense",
)


@dataclass(frozen=True)
class StagePaths:
    """Where a staged family's pieces live (attribute paths): ``stages`` from the backbone, ``blocks`` from a
    stage, the rest from a block; ``layer_scale`` scales fc2's output after its bias; ``attention`` is the
    block's window attention (``None``: none), and ``attn_*`` are relative to it: the q/k/v/o Linears, the
    relative position bias table ``[rows, heads]`` (its columns are sliced with the kept heads) and the
    attributes holding the head count and head dimension."""

    stages: str
    blocks: str
    fc1: str
    act: str
    fc2: str
    layer_scale: str | None = None
    attention: str | None = None
    attn_q: str = "q_proj"
    attn_k: str = "k_proj"
    attn_v: str = "v_proj"
    attn_o: str = "o_proj"
    attn_rel_bias: str | None = "relative_position_bias.relative_position_bias_table"
    attn_num_heads: str = "num_attention_heads"
    attn_head_dim: str = "head_dim"


@dataclass(frozen=True)
class GatedMLP:
    """A family whose MLP may be gated (``fc2(act(fc1(x)) * up(x))``: SwiGLU / GeGLU), e.g. DINOv2's
    ``use_swiglu_ffn``. ``applies`` says from the config whether this model's MLP is gated; ``stock`` / ``pruned``
    override the plain layouts' MLP paths for such a model (``fc1`` = the gate, ``up``, ``act``, ``fc2`` = the
    down projection; see :class:`LayerPaths`); ``width`` is the stock config's hidden-unit count (``None``: the
    family's ungated rule). Generic code reads the layout from :meth:`Family.layout` and never branches on the
    family."""

    applies: Callable[[Any], bool]
    stock: dict[str, str]
    pruned: dict[str, str]
    width: Callable[[Any], int] | None = None


@dataclass(frozen=True)
class RelativePositionBias:
    """A family's relative position bias tables (``[rows, heads]``): per layer and / or one shared table. The
    slicer keeps the columns of the kept heads (a shared table: the union over layers)."""

    rows: Callable[[Any], int]  # config -> table rows
    per_layer: Callable[[Any], bool]  # config -> each layer has its own table
    shared: Callable[[Any], bool]  # config -> one table shared by every layer


def _false(_config: Any) -> bool:
    return False


def _true(_config: Any) -> bool:
    return True


def _cls(_config: Any) -> str:
    return "cls"


def _no_registers(_config: Any) -> int:
    return 0


def _use_mask_token(config: Any) -> bool:
    return bool(getattr(config, "use_mask_token", False))


def _special_tokens(config: Any) -> int:
    return 2 if getattr(config, "distilled", False) else 1


@dataclass(frozen=True)
class Family:
    """One supported backbone family (see the module docstring)."""

    name: str  # the stock model_type; the pruned one is config_class.model_type
    kind: str  # PLAIN or STAGED
    prefix: str  # base_model_prefix: the backbone attribute of the classifier, the state-dict prefix
    stock_classes: tuple[str, ...]
    config_class: type  # pruned config
    model_class: type  # pruned classifier
    backbone_class: type  # pruned backbone (AutoModel)
    pruned_classes: tuple[str, ...] = ()
    # ------------------------------------------------------------ plain families
    stock_layout: LayerPaths | None = None
    pruned_layout: LayerPaths | None = None
    #: config -> what the classifier reads: "cls", "mean" (the patch mean, through ``pool_norm`` where the layout
    #: has one), "cls+mean" (concatenated) or "patch_mean" (the mean of the final-normalised tokens after the
    #: special ones, no pooling LN: a family without a CLS token, whose ``special_tokens`` is then 0)
    pooling: Callable[[Any], str] = _cls
    #: config -> special tokens before the patches (CLS [+ distillation])
    special_tokens: Callable[[Any], int] = _special_tokens
    #: config -> register tokens after the special tokens (``embeddings.register_tokens``): no position
    #: embedding, never pruned as tokens, sliced with the embedding; the classifier's patch mean skips them
    register_tokens: Callable[[Any], int] = _no_registers
    #: config -> the embeddings carry a mask token (``embeddings.mask_token``, counted by the cost model)
    mask_token: Callable[[Any], bool] = _use_mask_token
    #: the stock model may carry a second (distillation) classifier; the pruned config records it
    teacher_head: bool = False
    #: whether the key projection has a bias (BEiT's has none: q and v only)
    k_bias: bool = True
    #: config -> per-channel layer scale on both sub-blocks' outputs
    layer_scale: Callable[[Any], bool] = _false
    #: config -> an absolute position embedding (rows: patches + special tokens)
    absolute_positions: Callable[[Any], bool] = _true
    rel_bias: RelativePositionBias | None = None
    #: a gated MLP (some configs of the family): see :class:`GatedMLP` and :meth:`layout`
    gated_mlp: GatedMLP | None = None
    #: config -> why p3b_hf refuses this model (None: it does not)
    refuse: Callable[[Any], str | None] = lambda _config: None
    #: whether the patch projection has a bias (CLIP's Conv has none)
    patch_bias: bool = True
    #: stock classifier -> the same function in the family's full-width pruned format, for a stock model whose
    #: layout generic code cannot read as is (CLIP: a nested ``CLIPConfig``, the ``vision_config`` holds the
    #: widths); ``None``: generic code reads the stock model directly. Applied by :func:`~.registry.prunable`.
    from_stock: Callable[[Any], Any] | None = None
    #: stock classifier class names / ``model_type`` s of a sibling the family's code cannot run, each with why
    #: and what to load instead (SigLIP: the NaFlex ``Siglip2ForImageClassification``); every entry point's
    #: :class:`~p3b_hf.errors.UnsupportedModelError` for such a model carries the reason
    refused_classes: dict[str, str] = field(default_factory=dict)
    # ------------------------------------------------------------ staged families
    stage_paths: StagePaths | None = None
    dense_widths: Callable[[Any], list[list[int]]] | None = None  # config -> MLP width per stage and block
    stage_dims: Callable[[Any], list[int]] | None = None  # config -> residual width of each stage
    dense_heads: Callable[[Any], tuple[list[list[int]], list[list[int]]]] | None = None  # (heads, head_dims)
    #: (config, image_size) -> count_cost's dict; plain families use the generic count from the terms above
    cost: Callable[[Any, int | None], dict[str, int]] | None = None
    # ------------------------------------------------------------ run time
    fast_path: bool = False  # optimize_for_inference rewrites it (bench / export "fast" variant)
    paddable: bool = False  # pad_widths pads its pruned format
    #: feed config.image_size (False: the image processor decides, as for DINOv2's 518 px pretraining grid)
    feeds_config_image_size: bool = True
    #: (common ViT-style config kwargs, MLP width) -> a random stock classifier (the demo's source model)
    demo_model: Callable[[dict[str, Any], int], Any] | None = None
    #: per-family latency structures (p3b_hf.latency.structures reads this; None: not described yet)
    latency_structures: Any = None
    #: anything else a plug-in needs (read with ``family.extras.get(key)``)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def plain(self) -> bool:
        return self.kind == PLAIN

    @property
    def staged(self) -> bool:
        return self.kind == STAGED

    def classifier_copies(self, config: Any) -> int:
        """How many copies of the residual stream a classifier head reads (2 for ``[CLS, mean]``)."""
        return 2 if self.pooling(config) == "cls+mean" else 1

    @property
    def pruned_model_type(self) -> str:
        return str(self.config_class.model_type)

    @property
    def classes(self) -> tuple[str, ...]:
        """Every classifier class name of the family, stock and pruned."""
        return (*self.stock_classes, *self.pruned_classes)

    def is_gated(self, config: Any) -> bool:
        """Whether ``config``'s MLP is gated (hidden units ``act(gate x) * up x``)."""
        return self.gated_mlp is not None and bool(self.gated_mlp.applies(config))

    def layout(self, config: Any, pruned: bool) -> LayerPaths | None:
        """The plain layout of a model of ``config`` (``pruned``: the pruned format's, also its state-dict keys),
        with the gated MLP's paths where :meth:`is_gated`."""
        base = self.pruned_layout if pruned else self.stock_layout
        if base is None or not self.is_gated(config):
            return base
        gated = self.gated_mlp
        return replace(base, **(gated.pruned if pruned else gated.stock))

    # legacy name of the pruned layout (the state-dict keys apply_width_plan writes)
    @property
    def keys(self) -> LayerPaths | None:
        return self.pruned_layout
