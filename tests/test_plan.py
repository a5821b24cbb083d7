"""WidthPlan + apply_width_plan: exact equivalence with channel masking, JSON, validation."""

from __future__ import annotations

import random

import pytest
import torch
from masking import masked_forward

import p3b_hf
from p3b_hf import LayerPlan, PlanError, UnsupportedModelError, WidthPlan, apply_width_plan, locate


def _logits(model, x):
    with torch.no_grad():
        return model(pixel_values=x).logits


@pytest.mark.parametrize("fixture", ["tiny_vit", "tiny_deit_teacher", "tiny_deit"])
def test_identity_plan_is_bit_identical(fixture, request, images):
    model = request.getfixturevalue(fixture)
    pruned = apply_width_plan(model, WidthPlan.full(model.config))
    assert type(pruned).__name__.startswith("P3B")
    assert torch.equal(_logits(pruned, images), _logits(model, images))
    assert sum(p.numel() for p in pruned.parameters()) == sum(p.numel() for p in model.parameters())


def test_head_dims_heads_and_mlp_equal_zero_masking(tiny_vit, images):
    plan = WidthPlan.full(tiny_vit.config)
    plan.layers[0].head_dims = [0, 3, 7, 11]
    plan.layers[1].heads = [1, 3]
    plan.layers[1].head_dims = [2, 5]
    plan.layers[2].mlp = [0, 1, 5, 50, 95]
    plan.layers[0].mlp = list(range(0, 96, 3))
    pruned = apply_width_plan(tiny_vit, plan)
    assert pruned.config.layer_head_dims == [4, 2, 12]
    assert pruned.config.layer_num_heads == [4, 2, 4]
    assert pruned.config.layer_intermediate_sizes == [32, 96, 5]
    ref = masked_forward(tiny_vit, plan, images)
    torch.testing.assert_close(_logits(pruned, images), ref, atol=1e-5, rtol=1e-5)
    # and the plain dense logits differ, so the comparison has teeth
    assert (_logits(tiny_vit, images) - ref).abs().max() > 1e-3


def test_vbp_bias_correction_equals_mean_replacement(tiny_vit, images):
    plan = WidthPlan.full(tiny_vit.config)
    mods = p3b_hf.locate(tiny_vit)
    fills = {}
    for i, lm in enumerate(mods.layers):
        keep = sorted(random.Random(i).sample(range(96), 40))
        removed = sorted(set(range(96)) - set(keep))
        mu = torch.randn(96, generator=torch.Generator().manual_seed(i))
        fills[i] = mu
        plan.layers[i].mlp = keep
        plan.layers[i].mlp_bias_delta = (lm.fc2.weight[:, removed] @ mu[removed]).tolist()
    pruned = apply_width_plan(tiny_vit, plan)
    ref = masked_forward(tiny_vit, plan, images, mlp_fill=fills)
    torch.testing.assert_close(_logits(pruned, images), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layernorm_mode", ["full_stats", "subset_stats"])
def test_residual_subsets_equal_gate_hard_masks(tiny_vit, images, layernorm_mode):
    rng = random.Random(3)
    plan = WidthPlan.full(tiny_vit.config)
    for lp in plan.layers:
        for name in ("attn_in", "attn_out", "mlp_in", "mlp_out"):
            setattr(lp, name, sorted(rng.sample(range(48), rng.randint(10, 40))))
        lp.head_dims = sorted(rng.sample(range(12), 7))
        lp.mlp = sorted(rng.sample(range(96), 50))
    pruned = apply_width_plan(tiny_vit, plan, layernorm_mode=layernorm_mode)
    ref = masked_forward(tiny_vit, plan, images)
    if layernorm_mode == "full_stats":  # LN statistics over the full stream, then gather: exact
        torch.testing.assert_close(_logits(pruned, images), ref, atol=1e-5, rtol=1e-5)
    else:  # reference P3B: LN over the kept subset only -- a different function
        assert (_logits(pruned, images) - ref).abs().max() > 1e-4
    cost = p3b_hf.count_cost(pruned)
    assert cost["params"] == sum(p.numel() for p in pruned.parameters())


def test_removed_sub_blocks_become_exact_constants(tiny_vit, images):
    plan = WidthPlan.full(tiny_vit.config)
    plan.layers[0].head_dims = []  # attention of layer 0: only o's bias remains
    plan.layers[1].mlp_in = []  # MLP of layer 1 reads nothing: fc2(gelu(b1)) + b2
    plan.layers[1].attn_in = []  # attention reads nothing: o(v_bias) + o_bias
    plan.layers[2].attn_out = []  # writes nothing: vanishes
    plan.layers[2].mlp = []
    pruned = apply_width_plan(tiny_vit, plan)
    cfg = pruned.config
    assert (
        cfg.layer_head_dims[0] == 0 and cfg.layer_intermediate_sizes[1] == 0 and cfg.layer_head_dims[1] == 0
    )
    # no empty Linear stored: the only 0-input Linears are the constants (an nn.Linear for peft; bias only)
    assert all(
        type(m).__name__ == "P3BConstantOutput" and "weight" not in dict(m.named_parameters())
        for m in pruned.modules()
        if isinstance(m, torch.nn.Linear) and 0 in m.weight.shape
    )
    ref = masked_forward(tiny_vit, plan, images)
    torch.testing.assert_close(_logits(pruned, images), ref, atol=1e-5, rtol=1e-5)
    assert p3b_hf.count_cost(pruned)["params"] == sum(p.numel() for p in pruned.parameters())


def test_embedding_pruning_slices_every_coupled_tensor(tiny_deit_teacher, images):
    plan = WidthPlan.full(tiny_deit_teacher.config)
    plan.embed = list(range(0, 48, 2))
    plan.layers[0].attn_in = list(range(0, 48, 4))
    pruned = apply_width_plan(tiny_deit_teacher, plan)
    assert pruned.config.hidden_size == 24
    assert pruned.deit.embeddings.distillation_token.shape[-1] == 24
    assert pruned.cls_classifier.weight.shape == (7, 24)
    assert pruned.config.layer_attn_in[0] == list(range(0, 24, 2))
    assert _logits(pruned, images).shape == (3, 7)
    assert p3b_hf.count_cost(pruned)["params"] == sum(p.numel() for p in pruned.parameters())


def test_rescale_attention_changes_scale_only_when_asked(tiny_vit):
    plan = WidthPlan.full(tiny_vit.config)
    plan.layers[0].head_dims = [0, 1, 2]
    kept = apply_width_plan(tiny_vit, plan)
    rescaled = apply_width_plan(tiny_vit, plan, rescale_attention=True)
    assert kept.config.layer_attention_scales[0] == pytest.approx(12**-0.5)
    assert rescaled.config.layer_attention_scales[0] == pytest.approx(3**-0.5)


def test_json_round_trip(tmp_path, tiny_vit):
    plan = WidthPlan.full(tiny_vit.config)
    plan.layers[1] = LayerPlan(head_dims=[1, 2], mlp=[3], attn_out=[0, 5], mlp_bias_delta=[0.5] * 48)
    plan.meta = {"method": "test"}
    plan.to_json(tmp_path / "plan.json")
    again = WidthPlan.from_json(tmp_path / "plan.json")
    assert again == plan


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: setattr(p.layers[0], "mlp", [5, 3]), "not sorted"),
        (lambda p: setattr(p.layers[0], "mlp", [3, 3]), "twice"),
        (lambda p: setattr(p.layers[0], "mlp", [96]), "out of range"),
        (lambda p: setattr(p.layers[0], "head_dims", [-1]), "out of range"),
        (lambda p: setattr(p.layers[2], "attn_in", [1.5]), "must be ints"),
        (lambda p: setattr(p.layers[0], "mlp_bias_delta", [0.0]), "hidden_size=48"),
        (
            lambda p: (setattr(p, "embed", [0, 1]), setattr(p.layers[0], "attn_in", [2])),
            "subset of plan.embed",
        ),
    ],
)
def test_bad_plans_raise_one_clear_error(tiny_vit, mutate, message):
    plan = WidthPlan.full(tiny_vit.config)
    mutate(plan)
    with pytest.raises(PlanError, match=message):
        apply_width_plan(tiny_vit, plan)


def test_plan_for_another_model_is_rejected(tiny_vit):
    from transformers import ViTConfig

    other = WidthPlan.full(
        ViTConfig(hidden_size=64, num_attention_heads=4, intermediate_size=96, num_hidden_layers=3)
    )
    with pytest.raises(PlanError, match="made for another model"):
        apply_width_plan(tiny_vit, other)


def test_unsupported_model_is_rejected():
    from transformers import ResNetConfig, ResNetForImageClassification

    with pytest.raises(UnsupportedModelError, match="supported classes are"):
        apply_width_plan(ResNetForImageClassification(ResNetConfig()), None)


def test_already_pruned_model_is_rejected(tiny_vit):
    plan = WidthPlan.full(tiny_vit.config)
    plan.layers[0].mlp = [0]
    pruned = apply_width_plan(tiny_vit, plan)
    with pytest.raises(UnsupportedModelError, match="already pruned"):
        apply_width_plan(pruned, WidthPlan.full(tiny_vit.config))


def test_not_json_plan(tmp_path):
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(PlanError, match="not valid JSON"):
        WidthPlan.from_json(tmp_path / "bad.json")
    with pytest.raises(PlanError, match="does not exist"):
        WidthPlan.from_json(tmp_path / "missing.json")


def test_embedding_narrower_than_the_head_count(tiny_vit, images):
    """A plan may keep fewer residual channels than there are heads (head dims are separate)."""
    plan = WidthPlan.full(tiny_vit.config)
    plan.embed = [5, 17, 30]  # 3 channels, 4 heads
    pruned = apply_width_plan(tiny_vit, plan)
    assert pruned.config.hidden_size == 3 and pruned.config.layer_head_dims == [12, 12, 12]
    assert pruned.config.layer_attention_scales == [pytest.approx(12**-0.5)] * 3
    assert _logits(pruned, images).shape == (3, 7)


#: what apply_width_plan's config adds to pruned_config's: provenance (and the serialiser's own keys)
_PROVENANCE = (
    "pruning_method",
    "prune_ratio",
    "base_model_name_or_path",
    "p3b_hf_version",
    "transformers_version",
)


def _widths_dict(config) -> dict:
    return {k: v for k, v in config.to_dict().items() if k not in _PROVENANCE}


def _embedding_and_removal_plan(model) -> WidthPlan:
    """Prunes the embedding (40 of 48 channels) and removes sub-blocks every way a plan can: an attention that
    reads nothing while its heads are kept, an MLP with no neurons, an attention with no heads, an MLP that
    writes nothing; plus residual subsets inside the embedding, head / head-dim / neuron subsets."""
    plan = WidthPlan.full(model.config)
    embed = [c for c in range(48) if c % 6 != 5]
    plan.embed = embed
    l0, l1, l2 = plan.layers
    l0.attn_in = []  # removed (reads nothing) -- its 4 heads are still in the plan
    l0.mlp_in = embed[::2]
    l1.heads, l1.head_dims, l1.attn_out = [0, 2, 3], [1, 4, 5, 9], embed[1::3]
    l1.mlp = []  # removed (no neurons)
    l2.heads = []  # removed (no heads)
    n_mlp = locate(model).intermediate_size  # 96; a gated MLP: 64 (gate, up) units
    l2.mlp, l2.mlp_out = list(range(0, n_mlp, 3)), []  # removed (writes nothing)
    return plan


@pytest.mark.parametrize(
    "fixture",
    [
        "tiny_vit",
        "tiny_deit",
        "tiny_deit_teacher",
        "tiny_beit",
        "tiny_beit_shared",
        "tiny_dinov2",
        "tiny_dinov2_registers",
        "tiny_dinov2_swiglu",
        "tiny_ijepa",
        "tiny_clip_full",
    ],
)
@pytest.mark.parametrize("rescale, layernorm_mode", [(False, "full_stats"), (True, "subset_stats")])
def test_pruned_config_equals_the_config_apply_width_plan_builds(fixture, rescale, layernorm_mode, request):
    """pruned_config(plan) is apply_width_plan(...).config, every field (not only the parameter count), with
    the embedding pruned and sub-blocks removed (issue 24: layer_attn_in and the heads of a removed attention
    used to differ)."""
    from p3b_hf.slicing import pruned_config

    model = request.getfixturevalue(fixture)
    plan = _embedding_and_removal_plan(model)
    built = apply_width_plan(model, plan, rescale_attention=rescale, layernorm_mode=layernorm_mode).config
    alone = pruned_config(
        model.config,
        plan,
        distillation_head=fixture == "tiny_deit_teacher",  # (an in-memory config has no `architectures`)
        rescale_attention=rescale,
        layernorm_mode=layernorm_mode,
    )
    assert type(alone) is type(built) and _widths_dict(alone) == _widths_dict(built)
    pos = {c: p for p, c in enumerate(plan.embed)}
    assert alone.hidden_size == 40
    full_mlp = locate(model).intermediate_size
    assert (alone.layer_num_heads, alone.layer_head_dims, alone.layer_intermediate_sizes) == (
        [0, 3, 0],
        [0, 4, 0],
        [full_mlp, 0, 0],
    )
    assert alone.layer_attn_in == [[], None, []]
    assert alone.layer_mlp_in == [[pos[c] for c in plan.embed[::2]], [], []]
    assert alone.layer_attn_out[1] == [pos[c] for c in plan.layers[1].attn_out] == list(range(1, 40, 3))
    scales = [12**-0.5, 4**-0.5 if rescale else 12**-0.5, 12**-0.5]
    assert alone.layer_attention_scales == [pytest.approx(v) for v in scales]
    assert alone.layernorm_mode == layernorm_mode
    if fixture == "tiny_beit_shared":  # the shared bias table keeps the heads layer 1 still uses
        assert (alone.shared_bias_num_heads, alone.layer_bias_heads) == (3, [None, None, None])
    assert p3b_hf.count_cost(alone)["params"] == p3b_hf.count_cost(built)["params"]


@pytest.mark.parametrize("family", ["swin", "convnext"])
def test_pruned_config_equals_apply_width_plan_config_on_stage_families(family):
    from test_stage_families import tiny

    from p3b_hf.slicing import pruned_config

    model = tiny(family)
    plan = WidthPlan.full(model.config)
    for i, lp in enumerate(plan.layers):
        lp.mlp = list(range(0, plan.mlp_size(i), 2 + i % 2))
        if family == "swin":
            lp.heads = list(range(plan.num_heads(i) - 1)) or None
            lp.head_dims = list(range(1, plan.dense_head_dim(i)))
    built = apply_width_plan(model, plan).config
    alone = pruned_config(model.config, plan)
    assert type(alone) is type(built) and _widths_dict(alone) == _widths_dict(built)
    assert (
        alone.block_intermediate_sizes == [[32, 22], [64, 43]] if family == "swin" else [[16, 11], [32, 22]]
    )


def test_plan_is_pure_data_and_the_slicer_depends_on_it_one_way():
    """plan.py holds the data; the slicer imports it, never the reverse -- not even a lazy re-export (a module
    ``__getattr__`` loading p3b_hf.slicing is an edge the import-cycle test cannot see)."""
    import ast
    import inspect

    import p3b_hf.plan as plan_mod
    import p3b_hf.slicing as slicing_mod

    assert not hasattr(plan_mod, "__getattr__") and not hasattr(plan_mod, "apply_width_plan")
    imported = {
        node.module
        for node in ast.walk(ast.parse(inspect.getsource(plan_mod)))
        if isinstance(node, ast.ImportFrom)
    }
    assert "slicing" not in imported and slicing_mod.WidthPlan is plan_mod.WidthPlan
    assert p3b_hf.apply_width_plan is slicing_mod.apply_width_plan


def test_one_check_matches_for_every_kind(tiny_vit):
    """One validation method compares per-block dense shapes for plain and staged plans alike; a plan of the other
    kind or of another block layout is refused with the one message naming where they differ."""
    from test_stage_families import tiny

    swin = tiny("swin")
    vit_plan, swin_plan = WidthPlan.full(tiny_vit.config), WidthPlan.full(swin.config)
    assert vit_plan.block_shapes() == [(48, 96, 4, 12)] * 3
    assert swin_plan.kind() == "staged" and swin_plan.block_shapes()[0] == (16, 64, 2, 8)
    with pytest.raises(PlanError, match=r"plan: a staged model of 4 blocks, model: a plain model of 3"):
        apply_width_plan(tiny_vit, swin_plan)
    with pytest.raises(PlanError, match=r"plan: a plain model of 3 blocks, model: a staged model of 4"):
        apply_width_plan(swin, vit_plan)
    swin_plan.block_intermediate_sizes[2] += 1
    with pytest.raises(PlanError, match=r"block 2 \(residual width, MLP width, heads, head dim\): plan"):
        apply_width_plan(swin, swin_plan)


#: a plain plan as WidthPlan.to_json wrote it before the schema work (version 1, scalar dense widths, no per-block
#: lists set): plans saved by earlier releases must keep loading whatever the schema becomes
_PLAIN_PLAN_V1 = (
    '{"hidden_size":8,"num_attention_heads":2,"head_dim":4,"intermediate_size":6,"layers":[{"head_dims":null,'
    '"heads":[1],"mlp":[0,5],"attn_in":null,"attn_out":[0,1,2],"mlp_in":null,"mlp_out":null,'
    '"attn_bias_delta":null,"mlp_bias_delta":[0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5]},{"head_dims":null,"heads":null,'
    '"mlp":null,"attn_in":null,"attn_out":null,"mlp_in":null,"mlp_out":null,"attn_bias_delta":null,'
    '"mlp_bias_delta":null}],"embed":null,"meta":{"method":"vbp"},"block_dims":null,'
    '"block_intermediate_sizes":null,"block_num_heads":null,"block_head_dims":null,"version":1}'
)


@pytest.mark.parametrize("without_block_fields", [False, True])
def test_a_plain_plan_written_by_earlier_code_loads(tmp_path, without_block_fields):
    import json

    data = json.loads(_PLAIN_PLAN_V1)
    if without_block_fields:  # written before staged families existed
        data = {k: v for k, v in data.items() if not k.startswith("block_")}
    (tmp_path / "plan.json").write_text(json.dumps(data))
    plan = WidthPlan.from_json(tmp_path / "plan.json")
    assert plan.kind() == "plain" and plan.block_shapes() == [(8, 6, 2, 4)] * 2
    assert plan.kept(0) == {
        "heads": 1,
        "head_dim": 4,
        "mlp": 2,
        "attn_in": 8,
        "attn_out": 3,
        "mlp_in": 8,
        "mlp_out": 8,
    }
    assert plan.layers[0].mlp_bias_delta == [0.5] * 8 and plan.meta == {"method": "vbp"}
