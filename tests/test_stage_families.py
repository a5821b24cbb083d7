"""Swin and ConvNeXt (issue 17): the pruned formats (per-block MLP widths), VBP's fold and budget conversion,
grouped global pruning of the MLP hidden units, the cost model, and the one clear P3B error. Tiny random-init
models only (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fake_hub import BLOCK_P3B, clean_env, run_python
from transformers import (
    AutoModel,
    AutoModelForImageClassification,
    ConvNextConfig,
    ConvNextForImageClassification,
    SwinConfig,
    SwinForImageClassification,
)

from p3b_hf import UnsupportedModelError, WidthPlan, apply_width_plan, count_cost
from p3b_hf.cost import plan_cost
from p3b_hf.errors import BudgetError, P3BError, PlanError
from p3b_hf.methods.budget_convert import percentage_for_prune_ratio, vbp_max_prune_ratio
from p3b_hf.methods.global_pruning import global_plan
from p3b_hf.methods.importance import CRITERIA
from p3b_hf.methods.statistics import collect_mlp_activation_stats
from p3b_hf.methods.vbp import vbp_plan, vbp_plan_from_stats
from p3b_hf.models.families import STAGE_FAMILIES
from p3b_hf.models.locator import locate_mlps

pytestmark = pytest.mark.usefixtures("one_thread")
FAMS = ["swin", "convnext"]


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial biases, norms, layer scales (ConvNeXt's gamma far from 1) and relative position bias tables
    (zeros at init), so that a fold added after the layer scale, a wrong neuron index or a wrong bias-table
    column changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("bias", "bias_table")) or "norm" in name or "layer_scale" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
    return model.eval()


def tiny(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    labels = dict(num_labels=5)
    if family == "swin":  # 32 px, patch 2: stages at 16x16 (window 4, shifted) and 8x8
        return _randomise(
            SwinForImageClassification(
                SwinConfig(
                    image_size=32,
                    patch_size=2,
                    embed_dim=16,
                    depths=[2, 2],
                    num_heads=[2, 4],
                    window_size=4,
                    drop_path_rate=0.0,
                    **labels,
                )
            ),
            seed,
        )
    return _randomise(
        ConvNextForImageClassification(
            ConvNextConfig(
                hidden_sizes=[8, 16],
                depths=[2, 2],
                num_stages=2,
                image_size=32,
                layer_scale_init_value=0.5,
                **labels,
            )
        ),
        seed,
    )


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def _batches(n: int = 2, bs: int = 4, seed: int = 11) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "pixel_values": torch.randn(bs, 3, 32, 32, generator=g),
            "labels": torch.randint(0, 5, (bs,), generator=g),
        }
        for _ in range(n)
    ]


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=x).logits


def _numel(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _replaced(
    model: torch.nn.Module, x: torch.Tensor, values: dict[int, tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """Dense logits with, in block i, the post-activation units ``idx`` replaced by ``val`` (fc2's input)."""
    blocks = locate_mlps(model).blocks

    def hook(i: int):  # noqa: ANN202
        idx, val = values[i]

        def pre(_m: torch.nn.Module, inp: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
            h = inp[0].clone()
            h[..., idx] = val.to(h.dtype)
            return (h,)

        return pre

    handles = [blocks[i].fc2.register_forward_pre_hook(hook(i)) for i in values]
    try:
        return _logits(model, x)
    finally:
        for h in handles:
            h.remove()


def _subset(n: int, g: torch.Generator) -> list[int]:
    k = int(torch.randint(1, n, (1,), generator=g))
    return sorted(torch.randperm(n, generator=g)[:k].tolist())


def _random_plan(model: torch.nn.Module, seed: int) -> WidthPlan:
    """Random MLP units per block; for Swin also random heads and head dims (at least one of each kept)."""
    g = torch.Generator().manual_seed(seed)
    plan = WidthPlan.full(model.config)
    for i, (lp, f) in enumerate(zip(plan.layers, plan.block_intermediate_sizes)):
        lp.mlp = _subset(f, g)
        if plan.block_num_heads[i]:
            lp.heads, lp.head_dims = _subset(plan.block_num_heads[i], g), _subset(plan.block_head_dims[i], g)
    return plan


def _masked(model: torch.nn.Module, x: torch.Tensor, plan: WidthPlan) -> torch.Tensor:
    """Dense logits with every structure the plan removes zero-masked: MLP units at fc2's input, and (Swin) the
    q/k/v outputs of removed heads and head dims -- a removed head then attends uniformly to zero values, a
    removed dim leaves the scores and the output."""
    handles = []
    for blk, lp, f in zip(locate_mlps(model).blocks, plan.layers, plan.block_intermediate_sizes):
        keep = torch.zeros(f)
        keep[lp.mlp if lp.mlp is not None else list(range(f))] = 1
        handles.append(blk.fc2.register_forward_pre_hook(lambda _m, inp, k=keep: (inp[0] * k,)))
        if blk.attn is not None:
            a = blk.attn
            mask = torch.zeros(a.num_attention_heads, a.head_dim)
            heads = lp.heads if lp.heads is not None else list(range(a.num_attention_heads))
            dims = lp.head_dims if lp.head_dims is not None else list(range(a.head_dim))
            mask[torch.tensor(heads)[:, None], torch.tensor(dims)[None, :]] = 1
            flat = mask.flatten()
            for lin in (a.q_proj, a.k_proj, a.v_proj):
                handles.append(lin.register_forward_hook(lambda _m, _i, out, m=flat: out * m))
    try:
        return _logits(model, x)
    finally:
        for h in handles:
            h.remove()


# ------------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize("family", FAMS)
def test_identity_plan_is_bit_identical_and_cost_is_numel(family: str, images: torch.Tensor) -> None:
    model = tiny(family)
    plan = WidthPlan.full(model.config)
    assert plan.hierarchical and len(plan.layers) == 4
    pruned = apply_width_plan(model, plan)
    assert type(pruned).__name__ == f"P3B{'Swin' if family == 'swin' else 'ConvNext'}ForImageClassification"
    assert torch.equal(_logits(pruned, images), _logits(model, images))
    assert count_cost(model)["params"] == count_cost(pruned)["params"] == _numel(model) == _numel(pruned)


@pytest.mark.parametrize("family", FAMS)
def test_sliced_model_equals_dense_with_removed_structures_zeroed(family: str, images: torch.Tensor) -> None:
    model = tiny(family)
    plan = _random_plan(model, 1)
    pruned = apply_width_plan(model, plan)
    ref = _masked(model, images, plan)
    torch.testing.assert_close(_logits(pruned, images), ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(
        ref, _logits(model, images), atol=1e-3
    )  # the plan removes something that matters
    kept = [plan.kept(i) for i in range(plan.num_layers)]
    assert [f for stage in pruned.config.block_intermediate_sizes for f in stage] == [k["mlp"] for k in kept]
    n = _numel(pruned)
    assert count_cost(pruned)["params"] == plan_cost(model, plan)["params"] == n
    # every removed MLP unit costs 2C+1; a removed (head, dim) pair 4C+3 in Swin (q/k/v rows + biases, o column)
    # and a removed head its bias table column ((2w-1)^2 rows)
    mlp = sum(
        (f - k["mlp"]) * (2 * c + 1) for c, f, k in zip(plan.block_dims, plan.block_intermediate_sizes, kept)
    )
    attn = sum(
        (h * d - k["heads"] * k["head_dim"]) * (4 * c + 3) + (h - k["heads"]) * 49
        for c, h, d, k in zip(plan.block_dims, plan.block_num_heads, plan.block_head_dims, kept)
    )
    assert n == _numel(model) - mlp - attn
    if family == "swin":
        assert attn > 0 and pruned.config.block_num_heads == [
            [k["heads"] for k in kept[:2]],
            [k["heads"] for k in kept[2:]],
        ]
        a = pruned.swin.encoder.layers[1].blocks[0].attention
        dense_a = model.swin.encoder.layers[1].blocks[0].attention
        assert a.scaling == dense_a.scaling  # the softmax scale stays dense: removing dims == masking them
        heads = plan.layers[2].heads
        assert torch.equal(
            a.relative_position_bias.relative_position_bias_table,
            dense_a.relative_position_bias.relative_position_bias_table[:, heads],
        )


@pytest.mark.parametrize("family", FAMS)
def test_pruned_model_keeps_the_hf_contract(family: str, images: torch.Tensor) -> None:
    """hidden_states (Swin: also reshaped_hidden_states), return_dict=False, labels -> loss: the stock forward."""
    model = tiny(family)
    pruned = apply_width_plan(model, _random_plan(model, 5))
    labels = torch.tensor([0, 1, 2])
    with torch.no_grad():
        out, ref = (
            pruned(pixel_values=images, labels=labels, output_hidden_states=True),
            model(pixel_values=images, output_hidden_states=True),
        )
        tup = pruned(pixel_values=images, return_dict=False)
    assert [h.shape for h in out.hidden_states] == [h.shape for h in ref.hidden_states]
    assert len(out.hidden_states) == 3  # the stem and both stages
    if family == "swin":
        assert [h.shape for h in out.reshaped_hidden_states] == [h.shape for h in ref.reshaped_hidden_states]
    assert isinstance(tup, tuple) and torch.equal(tup[0], out.logits)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))


@pytest.mark.parametrize("family", FAMS)
def test_hierarchical_plans_refuse_what_they_cannot_prune(family: str) -> None:
    model = tiny(family)
    plan = WidthPlan.full(model.config)
    if family == "swin":
        plan.layers[0].attn_in = [0]
    else:
        plan.layers[0].heads = [0]
    with pytest.raises(PlanError, match="residual channels are kept; ConvNeXt has no attention"):
        apply_width_plan(model, plan)
    plan = WidthPlan.full(model.config)
    plan.layers[1].mlp = []
    with pytest.raises(PlanError, match="at least one"):
        apply_width_plan(model, plan)
    pruned = apply_width_plan(model, _random_plan(model, 0))
    with pytest.raises(UnsupportedModelError, match="already pruned"):
        apply_width_plan(pruned, WidthPlan.full(pruned.config))


@pytest.mark.parametrize("family", FAMS)
def test_save_reload_and_stock_checkpoint(family: str, tmp_path: Path, images: torch.Tensor) -> None:
    model = tiny(family)
    pruned = apply_width_plan(model, _random_plan(model, 2), provenance={"method": "test"})
    pruned.save_pretrained(tmp_path / "pruned")
    files = {p.name for p in (tmp_path / "pruned").iterdir()}
    assert {f"configuration_p3b_{family}.py", f"modeling_p3b_{family}.py", "model.safetensors"} <= files
    again = AutoModelForImageClassification.from_pretrained(tmp_path / "pruned")
    assert type(again) is type(pruned) and again.config.pruning_method == "test"
    assert again.config.block_intermediate_sizes == pruned.config.block_intermediate_sizes
    assert torch.equal(_logits(again.eval(), images), _logits(pruned, images))
    backbone = AutoModel.from_pretrained(tmp_path / "pruned")
    assert type(backbone).__name__ == f"P3B{'Swin' if family == 'swin' else 'ConvNext'}Model"
    # a full-width config loads the stock checkpoint's state dict (stock parameter names) unchanged
    model.save_pretrained(tmp_path / "stock")
    fam = STAGE_FAMILIES[family]
    full = fam.model_class.from_pretrained(
        tmp_path / "stock", config=fam.config_class.from_dense_config(model.config)
    )
    assert torch.equal(_logits(full.eval(), images), _logits(model, images))
    assert set(full.state_dict()) == set(model.state_dict())


LOAD = r"""
import json, sys, torch
from transformers import AutoModel, AutoModelForImageClassification
x = torch.load(sys.argv[1]); res, info = {}, {}
for d in sys.argv[3:]:
    model = AutoModelForImageClassification.from_pretrained(d, trust_remote_code=True).eval()
    backbone = AutoModel.from_pretrained(d, trust_remote_code=True).eval()
    with torch.no_grad():
        res[d] = {"logits": model(pixel_values=x).logits, "backbone": backbone(pixel_values=x).last_hidden_state}
    info[d] = {"cls": type(model).__module__ + "." + type(model).__name__, "params": sum(p.numel() for p in
               model.parameters()), "p3b": any(m.startswith("p3b_hf") for m in sys.modules)}
torch.save(res, sys.argv[2])
print("\nRESULT " + json.dumps(info))
"""


def test_pruned_swin_and_convnext_load_as_remote_code_without_p3b_hf(
    tmp_path: Path, images: torch.Tensor
) -> None:
    cases = {f: apply_width_plan(tiny(f), _random_plan(tiny(f), 4)).eval() for f in FAMS}
    for f, model in cases.items():
        model.save_pretrained(tmp_path / f)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    torch.save(images, tmp_path / "x.pt")
    out = run_python(
        BLOCK_P3B + LOAD,
        cwd=outside,
        env=clean_env(tmp_path / "hf_home", HF_HUB_OFFLINE="1"),
        args=(str(tmp_path / "x.pt"), str(tmp_path / "out.pt"), *(str(tmp_path / f) for f in FAMS)),
    )
    info = json.loads(out.rsplit("RESULT ", 1)[1])
    res = torch.load(tmp_path / "out.pt")
    for f, model in cases.items():
        d = str(tmp_path / f)
        assert info[d]["cls"].startswith("transformers_modules.") and not info[d]["p3b"], info[d]
        assert info[d]["params"] == _numel(model)
        assert torch.equal(res[d]["logits"], _logits(model, images))
        with torch.no_grad():
            base = getattr(model, f)(pixel_values=images).last_hidden_state
        assert torch.equal(res[d]["backbone"], base)


# ------------------------------------------------------------------------------------------- VBP
@pytest.mark.parametrize("family", FAMS)
def test_vbp_fold_equals_dense_with_removed_activations_replaced_by_means(
    family: str, images: torch.Tensor
) -> None:
    model = tiny(family)
    stats = collect_mlp_activation_stats(model, _batches())
    plan = vbp_plan_from_stats(model, stats, percentage=0.5)
    n_total = sum(plan.block_intermediate_sizes)
    assert plan.meta["removed_neurons"] == n_total // 2
    # one global ranking: the removed neurons are exactly the lowest-variance half (ties aside) of all blocks
    var = torch.cat([s.variance() for s in stats])
    removed = torch.cat(
        [
            torch.tensor([j not in set(lp.mlp or range(f)) for j in range(f)])
            for lp, f in zip(plan.layers, plan.block_intermediate_sizes)
        ]
    )
    assert var[removed].max() <= var[~removed].min()
    assert len({len(lp.mlp or ()) for lp in plan.layers}) > 1  # not a uniform per-block cut
    pruned = apply_width_plan(model, plan)
    values = {}
    for i, (lp, f, s) in enumerate(zip(plan.layers, plan.block_intermediate_sizes, stats)):
        gone = torch.tensor(sorted(set(range(f)) - set(lp.mlp)))
        values[i] = (gone, s.mean[gone].float())
    ref = _replaced(model, images, values)
    torch.testing.assert_close(_logits(pruned, images), ref, rtol=1e-4, atol=1e-4)
    # the fold matters: without it (removed units = 0 instead of their mean) the output moves
    unfolded = WidthPlan.from_dict(plan.to_dict())
    for lp in unfolded.layers:
        lp.mlp_bias_delta = None
    assert not torch.allclose(_logits(apply_width_plan(model, unfolded), images), ref, atol=1e-3)


@pytest.mark.parametrize("family", FAMS)
def test_vbp_prune_ratio_is_converted_on_the_ranking(family: str) -> None:
    model = tiny(family)
    dense = count_cost(model)["params"]
    plan = vbp_plan(model, _batches(1), prune_ratio=0.3)
    after = plan_cost(model, plan)["params"]
    n = plan.meta["removed_neurons"]
    assert after <= 0.7 * dense  # reaches the cut ...
    # ... with the fewest lowest-variance neurons: putting back the last one removed misses it
    assert after + 2 * max(plan.block_dims) + 1 > 0.7 * dense
    assert plan.meta["percentage"] == n / sum(plan.block_intermediate_sizes)
    again = vbp_plan(model, _batches(1), percentage=plan.meta["percentage"])
    assert [lp.mlp for lp in again.layers] == [lp.mlp for lp in plan.layers]
    with pytest.raises(BudgetError, match="unreachable with VBP"):
        vbp_plan(model, _batches(1), prune_ratio=0.95)
    # reachability from the config alone: every unit but one per block, each at its block's 2C+1
    top = sum((f - 1) * (2 * c + 1) for c, f in zip(plan.block_dims, plan.block_intermediate_sizes)) / dense
    assert vbp_max_prune_ratio(model.config) == pytest.approx(top)
    with pytest.raises(P3BError, match="needs the variance ranking"):  # no closed form across stages
        percentage_for_prune_ratio(model.config, 0.3)


# ------------------------------------------------------------------------------------------- global
@pytest.mark.parametrize("family", FAMS)
@pytest.mark.parametrize("criterion", CRITERIA)
def test_global_pruning_every_criterion(family: str, criterion: str, images: torch.Tensor) -> None:
    model = tiny(family)
    kw = dict(taylor_batches=1, hessian_samples=4)
    plan = global_plan(model, _batches(1), criterion, ratio=0.5, **kw)
    # the channels: every block's MLP units and (Swin) head dims; half of them go, at least one per group stays
    kept = [plan.kept(i) for i in range(plan.num_layers)]
    n_kept = sum(k["mlp"] + (k["head_dim"] if h else 0) for k, h in zip(kept, plan.block_num_heads))
    total = sum(plan.block_intermediate_sizes) + sum(plan.block_head_dims)
    assert abs(n_kept - total / 2) <= 1 and min(k["mlp"] for k in kept) >= 1
    assert all(
        k["heads"] == h for k, h in zip(kept, plan.block_num_heads)
    )  # heads themselves are kept (as ViT)
    target = int(0.75 * count_cost(model)["params"])
    matched = global_plan(model, _batches(1), criterion, target_params=target, **kw)
    params = plan_cost(model, matched)["params"]
    assert target - 2 * max(plan.block_dims) - 1 < params <= target
    pruned = apply_width_plan(model, matched)
    assert _numel(pruned) == params and _logits(pruned, images).shape == (3, 5)


def test_global_l1_keeps_the_largest_weight_units() -> None:
    model = tiny("convnext")
    plan = global_plan(model, None, "l1", ratio=0.25)
    blocks = locate_mlps(model).blocks
    scores = []
    for b in blocks:
        s = (b.fc1.weight.abs().sum(1) + b.fc2.weight.abs().sum(0)) / 2
        scores.append(s / s.mean())
    flat = torch.cat(scores)
    removed = torch.cat(
        [
            torch.tensor([j not in set(lp.mlp or range(len(s))) for j in range(len(s))])
            for lp, s in zip(plan.layers, scores)
        ]
    )
    assert removed.sum() == len(flat) - int(len(flat) * 0.75)
    assert flat[removed].max() <= flat[~removed].min()


# ------------------------------------------------------------------------------------------- cost
def test_standard_sizes_count_as_published() -> None:
    """Swin-T/S/B, ConvNeXt-T/S/B from the stock config defaults: params == numel (meta device), MACs at 224 px
    (papers: Swin-T 28.3 M / 4.5 G, ConvNeXt-T 28.6 M / 4.5 G)."""
    cases = [
        (SwinConfig(num_labels=1000), SwinForImageClassification, 28_288_354, 4_503_738_856),
        (
            SwinConfig(depths=[2, 2, 18, 2], num_labels=1000),
            SwinForImageClassification,
            49_606_258,
            8_762_175_976,
        ),
        (
            SwinConfig(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], num_labels=1000),
            SwinForImageClassification,
            87_768_224,
            15_459_347_432,
        ),
        (ConvNextConfig(num_labels=1000), ConvNextForImageClassification, 28_589_128, 4_468_966_888),
        (
            ConvNextConfig(depths=[3, 3, 27, 3], num_labels=1000),
            ConvNextForImageClassification,
            50_223_688,
            8_705_276_392,
        ),
        (
            ConvNextConfig(hidden_sizes=[128, 256, 512, 1024], depths=[3, 3, 27, 3], num_labels=1000),
            ConvNextForImageClassification,
            88_591_464,
            15_383_481_320,
        ),
    ]
    for cfg, cls, params, macs in cases:
        with torch.device("meta"):
            model = cls(cfg)
        cost = count_cost(cfg)
        assert cost["params"] == _numel(model) == params
        assert cost["macs"] == macs
        assert cost["block_params"] + cost["non_block_params"] == params
    assert round(cases[0][2] / 1e6, 1) == 28.3 and round(cases[0][3] / 1e9, 1) == 4.5
    assert round(cases[3][2] / 1e6, 1) == 28.6 and round(cases[3][3] / 1e9, 1) == 4.5


def test_tiny_macs_by_hand() -> None:
    """The tiny Swin's MACs from the formula, written out: window attention 2 * tokens * w^2 * C per block."""
    cfg = tiny("swin").config
    c0, t0, t1 = 16, 16 * 16, 8 * 8
    stem = t0 * c0 * (3 * 4 + 1)
    s0 = 2 * (t0 * (3 * c0 * (c0 + 1) + c0 * (c0 + 1)) + 2 * t0 * 16 * c0 + t0 * (64 * (c0 + 1) + c0 * 65))
    merge = t1 * 8 * c0 * c0
    c1 = 32
    s1 = 2 * (t1 * (3 * c1 * (c1 + 1) + c1 * (c1 + 1)) + 2 * t1 * 16 * c1 + t1 * (128 * (c1 + 1) + c1 * 129))
    assert count_cost(cfg)["macs"] == stem + s0 + merge + s1 + 5 * (c1 + 1)


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("family", FAMS)
def test_p3b_and_vit_only_tools_refuse_with_one_clear_error(family: str) -> None:
    from p3b_hf import locate
    from p3b_hf.methods.p3b.method import check_supported

    model = tiny(family)
    name = type(model).__name__
    with pytest.raises(UnsupportedModelError) as err:
        check_supported(model)
    msg = str(err.value)
    assert "P3B is defined for plain ViT blocks" in msg and name in msg
    assert "--method vbp" in msg and "--method global" in msg and "DeiTForImageClassification" in msg
    with pytest.raises(UnsupportedModelError, match="--method vbp or --method global"):
        locate(model)
