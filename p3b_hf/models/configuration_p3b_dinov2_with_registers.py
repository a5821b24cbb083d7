# Remote code: copied next to pruned checkpoints (``auto_map``) with its relative imports
# (configuration_p3b_dinov2.py and configuration_p3b_widths.py), so stock transformers loads it with
# ``trust_remote_code=True``; it imports only transformers and those files.
"""Configuration of a structurally pruned DINOv2 with registers (``model_type="p3b_dinov2_with_registers"``).

The stock ``Dinov2WithRegistersConfig`` plus DINOv2's per-layer widths
(:class:`~configuration_p3b_dinov2.P3BDinov2Widths`, same semantics as ViT's). Beyond DINOv2 it has
``num_register_tokens`` register tokens between CLS and the patches (no position embedding; never pruned as
tokens, their channels sliced with the embedding) and always a mask token. The MLP width is stored as
``intermediate_size`` (stock: ``hidden_size * mlp_ratio``); with the SwiGLU MLP (``use_swiglu_ffn``) it is the
gate / up / down width.
"""

from __future__ import annotations

from transformers import Dinov2WithRegistersConfig

from .configuration_p3b_dinov2 import LAYERNORM_MODES, P3BDinov2Widths, without_mlp_ratio_check

__all__ = ["LAYERNORM_MODES", "P3BDinov2WithRegistersConfig"]


class P3BDinov2WithRegistersConfig(P3BDinov2Widths, Dinov2WithRegistersConfig):
    r"""``Dinov2WithRegistersConfig`` + DINOv2's per-layer widths (:class:`P3BDinov2Widths`)."""

    model_type = "p3b_dinov2_with_registers"
    _family_dense_keys = (*P3BDinov2Widths._family_dense_keys, "num_register_tokens")
    __validators__ = without_mlp_ratio_check(Dinov2WithRegistersConfig.__validators__)
