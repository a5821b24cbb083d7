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

BEiT and DINOv2 (layer scales passed to Torch-Pruning as ``unwrapped_parameters`` on dim 0, pruned with
the embedding group and, as bare parameters, not scored -- same here):
* BEiT without relative position bias: kept sets and pruned logits match exactly. With the bias tables
  Torch-Pruning treats each ``[R, heads]`` table as an unwrapped parameter coupled to the attention and
  then keeps every head dimension of BEiT's layers: not a reference there (so not compared).
* DINOv2: Torch-Pruning traces only the CLS half of the classifier's ``[CLS, mean(patches)]`` input (it
  scores and prunes those columns only; its pruned model then fails on a shape mismatch). We score both
  halves of a channel; with the mean half of the classifier zeroed the two definitions coincide, and the
  kept sets match exactly.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp  # noqa: E402  (a dev dependency: a missing install must fail, not skip)

from p3b_hf.methods.global_pruning import global_plan  # noqa: E402
from p3b_hf.models.locator import locate  # noqa: E402
from p3b_hf.slicing import apply_width_plan  # noqa: E402

RATIO = 0.4


def _batches(n: int = 2, bs: int = 6, classes: int = 7) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(11)
    return [
        {
            "pixel_values": torch.randn(bs, 3, 32, 32, generator=g),
            "labels": torch.randint(0, classes, (bs,), generator=g),
        }
        for _ in range(n)
    ]


def _tp_prune(
    model: torch.nn.Module, importance: str, batches: list[dict[str, torch.Tensor]]
) -> tuple[torch.nn.Module, dict[str, list[int]]]:
    """Prune a copy of ``model`` with Torch-Pruning; return it and the kept indices per group."""
    model = copy.deepcopy(model).eval()
    mods = locate(model)
    layers = [lm.block for lm in mods.layers]  # stock layers: attention.q_proj ..., mlp.fc1 in every family
    scales = [(ls, 0) for lm in mods.layers for ls in (lm.ls1, lm.ls2) if ls is not None]
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
        model,
        batches[0]["pixel_values"][:1],
        importance=imp,
        pruning_ratio=RATIO,
        global_pruning=True,
        ignored_layers=[model.classifier],
        num_heads=num_heads,
        prune_head_dims=True,
        prune_num_heads=False,
        output_transform=lambda out: out.logits.sum(),
        unwrapped_parameters=scales or None,
    )
    hidden, hd, inter = model.config.hidden_size, model.config.hidden_size // heads, mods.intermediate_size
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
        torch.testing.assert_close(
            pruned(pixel_values=x).logits, tp_model(pixel_values=x).logits, rtol=1e-4, atol=1e-5
        )
    assert sum(p.numel() for p in pruned.parameters()) == sum(p.numel() for p in tp_model.parameters())


@pytest.mark.parametrize("family", ["beit", "dinov2"])
@pytest.mark.parametrize("importance", ["l1", "taylor"])
def test_beit_and_dinov2_kept_sets_match_torch_pruning(family, importance):
    from conftest import TINY_BEIT, TINY_DINOV2, _randomise_family
    from transformers import (
        BeitConfig,
        BeitForImageClassification,
        Dinov2Config,
        Dinov2ForImageClassification,
    )

    torch.manual_seed(0)
    if family == "beit":  # without the relative position tables (see the module docstring)
        model = BeitForImageClassification(BeitConfig(**dict(TINY_BEIT, use_relative_position_bias=False)))
    else:
        model = Dinov2ForImageClassification(Dinov2Config(**TINY_DINOV2))
    model = _randomise_family(model, 0)
    if family == "dinov2":  # Torch-Pruning reads only the CLS half of the classifier input
        with torch.no_grad():
            model.classifier.weight[:, model.config.hidden_size :] = 0
    batches = _batches()
    plan = global_plan(model, batches, importance, ratio=RATIO, taylor_batches=len(batches))
    ours = _our_kept(plan)
    tp_model, theirs = _tp_prune(model, importance, batches)
    assert ours == theirs
    assert len(ours["embed"]) < 48 and all(len(ours[k]) < 96 for k in ours if k.startswith("mlp"))
    if family == "beit":
        pruned = apply_width_plan(model, plan)
        x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            torch.testing.assert_close(
                pruned(pixel_values=x).logits, tp_model(pixel_values=x).logits, rtol=1e-4, atol=1e-5
            )
        assert sum(p.numel() for p in pruned.parameters()) == sum(p.numel() for p in tp_model.parameters())
