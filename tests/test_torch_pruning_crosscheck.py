"""Cross-check of the native grouped global pruning against Torch-Pruning 1.6.1 (test-only dependency).

Same tiny HF 5.x ViT, same criterion (L1 = ``GroupMagnitudeImportance(p=1)``, Taylor =
``GroupTaylorImportance()``), same channel ratio, ``global_pruning=True``, heads kept, head dims
pruned: the kept index sets of every group and the pruned logits must match.

Choices where Torch-Pruning is ambiguous or quirky (documented here and in docs/baselines.md):
* The classifier is in ``ignored_layers`` (its 7 outputs are kept) but Torch-Pruning still scores
  and prunes its *input* columns with the embedding group; we do the same.
* The bare ``cls_token``/``position_embeddings`` parameters are pruned with the embedding group but
  not scored (they are not in Torch-Pruning's target types); same here.
* Torch-Pruning does not update HF's ``head_dim``/``scaling``; we patch ``head_dim`` so the pruned HF
  model runs, and keep ``scaling`` at the dense ``d**-0.5`` -- the function-preserving choice that
  ``apply_width_plan`` also makes by default.
* The ratio is chosen so that no group would be emptied (Torch-Pruning then skips the whole group,
  while we keep one channel).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp  # noqa: E402  (a dev dependency: a missing install must fail, not skip)

from p3b_hf.methods.global_pruning import global_plan  # noqa: E402
from p3b_hf.plan import apply_width_plan  # noqa: E402

RATIO = 0.4


def _batches(n: int = 2, bs: int = 6, classes: int = 7) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(11)
    return [{"pixel_values": torch.randn(bs, 3, 32, 32, generator=g),
             "labels": torch.randint(0, classes, (bs,), generator=g)} for _ in range(n)]


def _tp_prune(model: torch.nn.Module, importance: str, batches: list[dict[str, torch.Tensor]]
              ) -> tuple[torch.nn.Module, dict[str, list[int]]]:
    """Prune a copy of ``model`` with Torch-Pruning; return it and the kept indices per group."""
    model = copy.deepcopy(model).eval()
    layers = list(model.vit.layers)
    heads = model.config.num_attention_heads
    num_heads = {}
    for lay in layers:
        for lin in (lay.attention.q_proj, lay.attention.k_proj, lay.attention.v_proj):
            num_heads[lin] = heads
    if importance == "taylor":
        imp = tp.importance.GroupTaylorImportance()
        model.zero_grad()
        for b in batches:  # TP recipe: gradients accumulate over batches (no zeroing in between)
            F.cross_entropy(model(pixel_values=b["pixel_values"]).logits, b["labels"]).backward()
    else:
        imp = tp.importance.GroupMagnitudeImportance(p=1)
    pruner = tp.pruner.BasePruner(
        model, batches[0]["pixel_values"][:1], importance=imp, pruning_ratio=RATIO, global_pruning=True,
        ignored_layers=[model.classifier], num_heads=num_heads, prune_head_dims=True, prune_num_heads=False,
        output_transform=lambda out: out.logits.sum())
    hidden, hd, inter = model.config.hidden_size, model.config.hidden_size // heads, model.config.intermediate_size
    kept = {"embed": list(range(hidden))}
    for i in range(len(layers)):
        kept[f"head_dims.{i}"] = list(range(hd))
        kept[f"mlp.{i}"] = list(range(inter))
    for group in pruner.step(interactive=True):
        dep, idxs = group[0]
        module = dep.target.module
        pruned = set(int(j) for j in idxs)
        for i, lay in enumerate(layers):
            if module is lay.mlp.fc1:
                kept[f"mlp.{i}"] = [j for j in range(inter) if j not in pruned]
                break
            if module is lay.attention.o_proj and dep.handler in (tp.prune_linear_in_channels,):
                dims = {j % hd for j in pruned}
                assert pruned == {h * hd + j for h in range(heads) for j in dims}  # same dims in every head
                kept[f"head_dims.{i}"] = [j for j in range(hd) if j not in dims]
                break
        else:
            assert len(idxs) < hidden and len(group) > 20  # the embedding group
            kept["embed"] = [j for j in range(hidden) if j not in pruned]
        group.prune()
    for lay in layers:  # TP cannot see HF attributes; keep the dense scaling (function preserving)
        lay.attention.head_dim = lay.attention.q_proj.out_features // heads
    model.zero_grad(set_to_none=True)
    return model, kept


def _our_kept(plan) -> dict[str, list[int]]:
    out = {"embed": plan.embed if plan.embed is not None else list(range(plan.hidden_size))}
    for i, lp in enumerate(plan.layers):
        out[f"head_dims.{i}"] = lp.head_dims if lp.head_dims is not None else list(range(plan.head_dim))
        out[f"mlp.{i}"] = lp.mlp if lp.mlp is not None else list(range(plan.intermediate_size))
    return out


@pytest.mark.parametrize("importance", ["l1", "taylor"])
def test_kept_sets_and_logits_match_torch_pruning(tiny_vit, importance):
    batches = _batches()
    plan = global_plan(tiny_vit, batches, importance, ratio=RATIO, taylor_batches=len(batches))
    ours = _our_kept(plan)
    tp_model, theirs = _tp_prune(tiny_vit, importance, batches)
    assert set(ours) == set(theirs)
    for key in ours:
        assert ours[key] == theirs[key], key
    # the ratio really pruned every kind of group (so the comparison is not vacuous)
    assert len(ours["embed"]) < tiny_vit.config.hidden_size
    assert any(len(ours[k]) < 12 for k in ours if k.startswith("head_dims"))
    assert all(len(ours[k]) < 96 for k in ours if k.startswith("mlp"))

    pruned = apply_width_plan(tiny_vit, plan)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(pruned(pixel_values=x).logits, tp_model(pixel_values=x).logits,
                                   rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in pruned.parameters()) == sum(p.numel() for p in tp_model.parameters())
