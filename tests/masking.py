"""Reference: a dense stock HF ViT with channels zero-masked by hooks (what a WidthPlan must equal)."""

from __future__ import annotations

import torch

from p3b_hf.models.families import prunable
from p3b_hf.models.locator import locate
from p3b_hf.plan import WidthPlan


def _mask(sub: list[int] | None, n: int) -> torch.Tensor:
    m = torch.zeros(n) if sub is not None else torch.ones(n)
    if sub is not None:
        m[sub] = 1.0
    return m


def masked_forward(
    model: torch.nn.Module, plan: WidthPlan, x: torch.Tensor, mlp_fill: dict[int, torch.Tensor] | None = None
) -> torch.Tensor:
    """Logits of ``model`` with every channel the plan drops multiplied by zero.

    ``mlp_fill[i]``: replace dropped MLP activations of layer i by these values instead of zero.
    """
    model = prunable(model)  # a nested stock config (CLIP): its full-width pruned twin, the same function
    mods = locate(model)
    handles = []

    def out_hook(mask):
        return lambda mod, inp, out: out * mask

    for i, (lm, lp) in enumerate(zip(mods.layers, plan.layers)):
        inner = (_mask(lp.heads, mods.num_heads)[:, None] * _mask(lp.head_dims, mods.head_dim)[None]).reshape(
            -1
        )
        for lin in (lm.q, lm.k, lm.v):
            handles.append(lin.register_forward_hook(out_hook(inner)))
        hid = _mask(lp.mlp, mods.intermediate_size)
        fill = None if mlp_fill is None else mlp_fill.get(i)
        handles.append(
            lm.fc2.register_forward_pre_hook(
                lambda mod, inp, hid=hid, fill=fill: (
                    inp[0] * hid + (0 if fill is None else fill * (1 - hid)),
                )
            )
        )
        handles.append(lm.ln_before.register_forward_hook(out_hook(_mask(lp.attn_in, mods.hidden_size))))
        handles.append(lm.o.register_forward_hook(out_hook(_mask(lp.attn_out, mods.hidden_size))))
        handles.append(lm.ln_after.register_forward_hook(out_hook(_mask(lp.mlp_in, mods.hidden_size))))
        handles.append(lm.fc2.register_forward_hook(out_hook(_mask(lp.mlp_out, mods.hidden_size))))
    try:
        with torch.no_grad():
            return model(pixel_values=x).logits
    finally:
        for h in handles:
            h.remove()
