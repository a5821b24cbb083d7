"""P3B, VBP and grouped global pruning on BEiT and DINOv2 (tiny random-init stock models, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from masking import masked_forward
from p3b_tiny_run import TINY_CFG, synthetic_dataset, training_args
from transformers import (
    AutoModelForImageClassification,
    BeitConfig,
    BeitForImageClassification,
    Dinov2Config,
    Dinov2ForImageClassification,
)

import p3b_hf
from p3b_hf import apply_width_plan, count_cost
from p3b_hf.cost import plan_cost
from p3b_hf.methods.budget_convert import vbp_params
from p3b_hf.methods.global_pruning import global_plan
from p3b_hf.methods.importance import (
    CRITERIA,
    compute_structure_scores,
    element_score_fn,
    structure_scores,
)
from p3b_hf.methods.p3b import BPIHeads, Dims, GateSet, P3BPruner, block_params, install_gates
from p3b_hf.methods.p3b.fused_gates import install_fused_gates
from p3b_hf.methods.p3b.grouped_bpi import GroupedBPIHeads
from p3b_hf.methods.statistics import collect_mlp_activation_stats
from p3b_hf.methods.vbp import vbp_plan
from p3b_hf.trainer import P3BConfig, P3BTrainer

FAMS = [
    "tiny_beit",
    "tiny_beit_shared",
    "tiny_dinov2",
    "tiny_dinov2_registers",
    "tiny_ijepa",
    "tiny_clip_full",
    "tiny_siglip_full",
    "tiny_dinov2_swiglu",
]
pytestmark = pytest.mark.usefixtures("one_thread")


def _batches(n: int = 2, bs: int = 6, seed: int = 11) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "pixel_values": torch.randn(bs, 3, 32, 32, generator=g),
            "labels": torch.randint(0, 7, (bs,), generator=g),
        }
        for _ in range(n)
    ]


# ------------------------------------------------------------------------------------------------ P3B
def _random_hard_gates(model: torch.nn.Module, seed: int) -> GateSet:
    gates = GateSet(Dims.from_config(model.config))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _name, _layer, m in gates.named_masks():
            keep = torch.rand(m.shape, generator=g) < 0.7
            keep[0] = True
            m.copy_(
                torch.where(
                    keep,
                    0.5 + 0.5 * torch.rand(m.shape, generator=g),
                    0.49 * torch.rand(m.shape, generator=g),
                )
            )
    return gates


@pytest.mark.parametrize("fixture", FAMS)
@pytest.mark.parametrize("gate_mode", ["hooks", "fused"])
def test_hard_gates_equal_plan_masking_and_pruned_model(
    fixture: str, gate_mode: str, request: pytest.FixtureRequest, images: torch.Tensor
) -> None:
    """P3B's gates on a layer-scaled model (attn_out / mlp_out gate before the layer scale) == the plan's
    masking == the physically pruned model."""
    model = request.getfixturevalue(fixture)
    gates = _random_hard_gates(model, 0)
    gates.hard = True
    handles = (install_gates if gate_mode == "hooks" else install_fused_gates)(model, gates)
    with torch.no_grad():
        gated = model(pixel_values=images).logits
    for h in handles:
        h.remove()
    pr = P3BPruner(model, P3BConfig(handcrafted_keep=[1.0] * 6).resolved())
    pr.gates.load_state_dict(gates.state_dict())
    plan = pr.width_plan()
    pr.detach()
    torch.testing.assert_close(masked_forward(model, plan, images), gated, atol=2e-5, rtol=1e-5)
    pruned = apply_width_plan(model, plan)
    with torch.no_grad():
        torch.testing.assert_close(pruned(pixel_values=images).logits, gated, atol=2e-5, rtol=1e-5)
    assert (model(pixel_values=images).logits - gated).abs().max() > 1e-3


@pytest.mark.parametrize("fixture", FAMS)
def test_p3b_block_sizes_add_up_to_the_model(fixture: str, request: pytest.FixtureRequest) -> None:
    """|W_b| (Linears + LayerNorm + layer scale + per-layer bias table) + non-block params = all params."""
    model = request.getfixturevalue(fixture)
    dims = Dims.from_config(model.config)
    assert dims.k_bias == (not fixture.startswith("tiny_beit"))
    assert dims.mlp_reads == (2 if fixture == "tiny_dinov2_swiglu" else 1)  # gate + up read the stream
    total = float(block_params(dims).sum()) + count_cost(model)["non_block_params"]
    assert total == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "fixture, expected",
    [
        ("tiny_beit", "mean_patches"),
        ("tiny_beit_shared", "cls"),
        ("tiny_dinov2", "cls"),
        ("tiny_dinov2_registers", "cls"),
        ("tiny_ijepa", "mean_patches"),  # no CLS token: the mean of all tokens
        ("tiny_clip_full", "mean_patches"),  # CLIP's classifier reads the mean of the patch tokens
        ("tiny_siglip_full", "mean_patches"),  # no CLS token: the mean of the post-LN patch tokens
    ],
)
def test_bpi_class_heads_read_what_the_family_classifies_from(
    fixture: str, expected: str, request: pytest.FixtureRequest, images: torch.Tensor
) -> None:
    model = request.getfixturevalue(fixture).train()
    mods = p3b_hf.locate(model)
    bpi = BPIHeads.for_model(mods, 7)
    registers = getattr(model.config, "num_register_tokens", 0)  # BPI's patch heads skip the registers too
    special = 0 if fixture in ("tiny_ijepa", "tiny_siglip_full") else 1
    assert bpi.class_input == expected and bpi.special_tokens == special + registers
    handles = bpi.install(model, mods)
    bpi.active = True
    model.eval()  # no drop path: the taps equal the hidden states
    with torch.no_grad():
        out = model(pixel_values=images, output_hidden_states=True)
    x2 = out.hidden_states[1]  # output of layer 0 = X_2: the output of block 1, the input of block 2
    feature = x2[:, special:].mean(1) if expected == "mean_patches" else x2[:, 0]
    cls_logits, patch_logits = bpi.pop_logits()
    torch.testing.assert_close(bpi.cls_heads[1](feature), cls_logits[1, 1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bpi.cls_heads[2](feature), cls_logits[2, 0], atol=1e-5, rtol=1e-5)
    assert patch_logits.shape == (6, 2, 3, 7)
    if registers:  # the patch heads read the 16 patch tokens, not the registers
        assert torch.equal(bpi._patch_tokens([x2], 3)[0], x2[:, 1 + registers :])
    for h in handles:
        h.remove()


def test_bpi_patch_grid_follows_the_input_resolution(tiny_dinov2: torch.nn.Module) -> None:
    """DINOv2 runs at resolutions other than its position grid (518 vs 224 for the real model): the patch
    heads take the grid from the tokens; grouped heads still equal the separate heads there."""
    model = tiny_dinov2
    mods = p3b_hf.locate(model)
    ref = BPIHeads.for_model(mods, 7)
    grouped = GroupedBPIHeads.from_heads(ref)
    big = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))  # 6x6 grid, config has 4x4
    outs = []
    for heads in (ref, grouped):
        handles = heads.install(model, mods)
        heads.active = True
        with torch.no_grad():
            model(pixel_values=big)
            outs.append(heads.pop_logits()[1])
        for h in handles:
            h.remove()
    assert outs[0].shape == (6, 2, 2, 7)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-4, rtol=1e-4)


def _tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    common = dict(TINY_CFG)
    if kind == "beit":
        return BeitForImageClassification(
            BeitConfig(
                **common, use_relative_position_bias=True, layer_scale_init_value=0.1, drop_path_rate=0.0
            )
        )
    common.pop("intermediate_size")
    return Dinov2ForImageClassification(Dinov2Config(**common, mlp_ratio=2))


@pytest.mark.parametrize("kind", ["dinov2"])  # BEiT: the CLI run in tests/test_families_cli.py
def test_p3b_run_reaches_the_ratio_and_the_saved_model_equals_the_masked_one(
    kind: str, tmp_path: Path
) -> None:
    ds = synthetic_dataset(128)
    model = _tiny(kind)
    dense = sum(p.numel() for p in model.parameters())
    phases = dict(
        prune_start_epoch=1, prune_sparse_epoch=3, prune_finalize_epoch=6, update_every=2, bpi_every=2
    )
    trainer = P3BTrainer(
        model=model,
        args=training_args(str(tmp_path), num_train_epochs=6),
        train_dataset=ds,
        eval_dataset=ds.select(range(32)),
        p3b=P3BConfig(prune_ratio=0.5, **phases),
    )
    trainer.train()
    pruned = trainer.pruned_model
    n_pruned = sum(p.numel() for p in pruned.parameters())
    assert abs((1 - n_pruned / dense) - 0.5) <= 0.01
    assert count_cost(pruned)["params"] == n_pruned
    saved = Path(trainer.pruning.history["finalize"]["finalize"]["saved_to"])
    reloaded = AutoModelForImageClassification.from_pretrained(saved).eval()
    assert type(reloaded).__name__ == f"P3B{'Beit' if kind == 'beit' else 'Dinov2'}ForImageClassification"
    x = ds[:16]["pixel_values"]
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(pixel_values=x).logits, model(pixel_values=x).logits, atol=1e-5, rtol=1e-5
        )


# ------------------------------------------------------------------------------------------------ VBP
@pytest.mark.parametrize(
    "fixture",
    [
        "tiny_beit",
        "tiny_dinov2",
        "tiny_dinov2_registers",
        "tiny_ijepa",
        "tiny_clip_full",
        "tiny_siglip_full",
        "tiny_dinov2_swiglu",
    ],
)
def test_vbp_fold_equals_dense_with_removed_activations_replaced_by_means(
    fixture: str, request: pytest.FixtureRequest, images: torch.Tensor
) -> None:
    model = request.getfixturevalue(fixture)
    calib = [{"pixel_values": b["pixel_values"]} for b in _batches()]
    plan = vbp_plan(model, calib, percentage=0.6)
    stats = collect_mlp_activation_stats(model, calib)
    f = plan.intermediate_size  # 96; 64 for the SwiGLU MLP, whose moments are of act(gate) * up
    assert sum(f - k for k in plan.meta["kept_mlp"]) == int(0.6 * 3 * f)
    pruned = apply_width_plan(model, plan)
    fills = {i: s.mean.float() for i, s in enumerate(stats)}
    with torch.no_grad():
        got = pruned(pixel_values=images).logits
    ref = masked_forward(model, plan, images, mlp_fill=fills)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-5)
    assert (masked_forward(model, plan, images) - ref).abs().max() > 1e-3  # the fold matters
    assert (
        sum(p.numel() for p in pruned.parameters()) == vbp_params(model, 0.6) == count_cost(pruned)["params"]
    )


# ------------------------------------------------------------------------------------------------ global
@pytest.mark.parametrize("fixture", FAMS)
@pytest.mark.parametrize("criterion", ["taylor", "hessian"])
def test_global_param_matched_lands_within_one_percent(
    fixture: str, criterion: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(fixture)
    scores = compute_structure_scores(model, criterion, _batches(), taylor_batches=2, hessian_samples=4)
    target = round(0.5 * count_cost(model)["params"])
    plan = global_plan(model, None, criterion, target_params=target, scores=scores)
    pruned = apply_width_plan(model, plan)
    got = sum(p.numel() for p in pruned.parameters())
    assert got == plan_cost(model, plan)["params"] == count_cost(pruned)["params"]
    assert target - 0.01 * target <= got <= target
    assert pruned(pixel_values=_batches()[0]["pixel_values"]).logits.shape == (6, 7)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_criterion_channel_ratio_on_both_families(
    criterion: str,
    tiny_beit,  # noqa: ANN001
    tiny_dinov2,  # noqa: ANN001
    tiny_dinov2_registers,  # noqa: ANN001
    tiny_ijepa,  # noqa: ANN001
    tiny_clip_full,  # noqa: ANN001
    tiny_siglip_full,  # noqa: ANN001
    tiny_dinov2_swiglu,  # noqa: ANN001
) -> None:
    for model in (
        tiny_beit,
        tiny_dinov2,
        tiny_dinov2_registers,
        tiny_ijepa,
        tiny_clip_full,
        tiny_siglip_full,
        tiny_dinov2_swiglu,
    ):
        plan = global_plan(model, _batches(), criterion, ratio=0.5, taylor_batches=2, hessian_samples=4)
        kept = plan.meta["kept"]
        n = 48 + 3 * 12 + 3 * plan.intermediate_size
        assert kept["embed"] + sum(kept["head_dims"]) + sum(kept["mlp"]) in range(n // 2 - 6, n // 2 + 7)
        pruned = apply_width_plan(model, plan)
        assert count_cost(pruned)["params"] == sum(p.numel() for p in pruned.parameters())


def test_gated_mlp_unit_is_scored_as_gate_up_and_down(tiny_dinov2_swiglu) -> None:  # noqa: ANN001
    """A SwiGLU hidden unit's group: the gate row, the up row and the down column (L1, summed); the up columns
    join the embedding group."""
    model = tiny_dinov2_swiglu
    lm = p3b_hf.locate(model).layers[1]
    got = structure_scores(model, element_score_fn("l1"), reduction="sum", normalizer=None)
    w = {n: lin.weight.detach().abs() for n, lin in (("gate", lm.fc1), ("up", lm.up), ("down", lm.fc2))}
    torch.testing.assert_close(got.mlp[1], w["gate"].sum(1) + w["up"].sum(1) + w["down"].sum(0))
    with torch.no_grad():
        lm.up.weight[:, 7] *= 10.0  # residual channel 7 read by the up projection only
    delta = (
        structure_scores(model, element_score_fn("l1"), reduction="sum", normalizer=None).embed - got.embed
    )
    torch.testing.assert_close(delta[7], 9 * w["up"][:, 7].sum(), rtol=1e-5, atol=1e-5)


def test_dinov2_classifier_scores_both_halves_of_its_input(tiny_dinov2) -> None:  # noqa: ANN001
    """The [CLS, mean(patches)] classifier: channel c's score reads columns c and C + c (one group member)."""

    def embed_sums() -> torch.Tensor:
        return structure_scores(tiny_dinov2, element_score_fn("l1"), reduction="sum", normalizer=None).embed

    before = embed_sums()
    col = tiny_dinov2.classifier.weight[:, 48 + 5].detach().abs().sum()
    with torch.no_grad():
        tiny_dinov2.classifier.weight[:, 48 + 5] *= 100.0  # only the mean half of channel 5
    delta = embed_sums() - before
    torch.testing.assert_close(delta[5], 99 * col, rtol=1e-5, atol=1e-5)
    assert torch.equal(delta[torch.arange(48) != 5], torch.zeros(47))


def test_p3b_optimizer_keeps_bias_tables_and_tokens_out_of_weight_decay(
    tiny_beit_shared, tmp_path: Path
) -> None:  # noqa: ANN001
    """As BEiT's own fine-tuning: no decay on relative position bias tables, tokens, positions, layer scales."""
    trainer = P3BTrainer(
        model=tiny_beit_shared,
        args=training_args(str(tmp_path)),
        train_dataset=synthetic_dataset(8),
        p3b=P3BConfig(prune_ratio=0.5, handcrafted_keep=[1.0] * 6),
    )
    names = {id(p): n for n, p in tiny_beit_shared.named_parameters()}
    groups = {g["p3b_group"]: {names[id(p)] for p in g["params"]} for g in trainer._param_groups()}
    no_decay = groups["no_decay"]
    assert any("relative_position_bias_table" in n for n in no_decay)
    assert {
        "beit.embeddings.mask_token",
        "beit.embeddings.cls_token",
        "beit.embeddings.position_embeddings",
    } <= no_decay
    assert any("lambda_1" in n for n in no_decay)
    assert not any("relative_position_bias_table" in n or "token" in n for n in groups["decay"])
    trainer.pruner.detach()
