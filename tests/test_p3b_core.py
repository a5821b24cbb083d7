"""P3B building blocks: the numbers of docs/p3b.md §1-§5, budget solver, threshold search, soft masks, gates, BPI, schedule."""

from __future__ import annotations

import math

import pytest
import torch
from masking import masked_forward
from transformers import ViTConfig

from p3b_hf import apply_width_plan, count_cost
from p3b_hf.methods.p3b import (
    DEFAULT_GATE_SCALES,
    GATES,
    BPIHeads,
    Dims,
    GateSet,
    P3BPruner,
    Schedule,
    block_importance,
    block_masks,
    block_params,
    default_phase_epochs,
    gamma,
    install_gates,
    non_block_params,
    param_per_element,
    per_head_ce,
    rank_normalise,
    soft_mask_values,
    solve_keep_ratios,
)
from p3b_hf.methods.p3b.gates import BLOCK_GATES, attn_linear_params, full_linear_params, mlp_linear_params
from p3b_hf.models.locator import locate
from p3b_hf.trainer import P3BConfig

pytestmark = pytest.mark.usefixtures("one_thread")

DEIT_S = ViTConfig(
    hidden_size=384,
    num_hidden_layers=12,
    num_attention_heads=6,
    intermediate_size=1536,
    image_size=224,
    patch_size=16,
    num_labels=100,
)


# ---------------------------------------------------------------------------------- docs/p3b.md numbers
def test_deit_s_counts_from_config_alone():
    d = Dims.from_config(DEIT_S)
    full = block_params(d)
    assert full.shape == (24,)
    assert int(full[0]) == 592_128 and int(full[1]) == 1_182_336
    assert torch.equal(full[0::2], full[0].expand(12)) and torch.equal(full[1::2], full[1].expand(12))
    assert non_block_params(DEIT_S) == 410_596
    # blocks + non-blocks = the exact dense parameter count
    assert int(full.sum()) + 410_596 == count_cost(DEIT_S)["params"]


def test_gamma_values():
    # SP(0) - SP(-s) = ln 2 - ln(1 + e^-10)
    assert float(gamma(torch.tensor(0.0))) == pytest.approx(
        math.log(2) - math.log1p(math.exp(-10)), abs=1e-12
    )
    assert float(gamma(torch.tensor(0.0))) == pytest.approx(math.log(2), abs=1e-4)
    assert float(gamma(torch.tensor(1.0))) == pytest.approx(9.98, abs=0.01)
    assert float(gamma(torch.tensor(0.5))) == pytest.approx(6.95, abs=0.01)
    assert float(gamma(torch.tensor(-0.5))) < 0.002


def test_param_per_element_is_the_drop_in_kept_linear_params():
    d = Dims.from_config(DEIT_S)
    w = {"attn_in": 300, "attn_qkv": 50, "attn_out": 200, "mlp_in": 250, "mlp_hid": 1000, "mlp_out": 280}
    attn = lambda x: attn_linear_params(d, x["attn_in"], x["attn_qkv"], x["attn_out"])  # noqa: E731
    mlp = lambda x: mlp_linear_params(d, x["mlp_in"], x["mlp_hid"], x["mlp_out"])  # noqa: E731
    bias_drop = {
        "attn_in": 0,
        "attn_qkv": 3 * d.heads,
        "attn_out": 1,
        "mlp_in": 0,
        "mlp_hid": 1,
        "mlp_out": 1,
    }
    ln_phantom = {"attn_in": 1, "mlp_in": 1}
    for g in GATES:
        fn = attn if g.startswith("attn") else mlp
        drop = fn(w) - fn({**w, g: w[g] - 1})
        assert param_per_element(d, g, w) == drop - bias_drop[g] + ln_phantom.get(g, 0), g


# ---------------------------------------------------------------------------------- budget solver
def _solve(seed: int, ratio: float, spread: float = 1.0):
    d = Dims.from_config(DEIT_S)
    full = block_params(d)
    g = torch.Generator().manual_seed(seed)
    dpsi = torch.rand(24, generator=g, dtype=torch.float64) * spread - 0.2
    imp = block_importance(dpsi, full)
    nb = non_block_params(DEIT_S)
    return solve_keep_ratios(imp, full, nb, 1 - ratio), full, nb, imp


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7, 0.9])
def test_budget_solver_hits_target_and_respects_bounds(ratio):
    for seed in range(4):
        kappa, full, nb, _ = _solve(seed, ratio)
        target = (1 - ratio) * (full.sum() + nb) - nb
        assert abs(float((kappa * full).sum() - target)) <= 0.005 * float(full.sum())
        assert float(kappa.min()) >= 0.0 and float(kappa.max()) <= 1.0


def test_budget_solver_redistributes_clipped_excess():
    full = torch.tensor([100.0, 200.0, 100.0, 200.0], dtype=torch.float64)
    imp = torch.tensor([10.0, 1.0, 1.0, 1.0], dtype=torch.float64)  # block 0 wants far more than it has
    kappa = solve_keep_ratios(imp, full, 0.0, 0.5)
    assert float(kappa[0]) == 1.0
    # the remaining 200 params go to the free blocks, still proportional to importance
    assert float((kappa * full).sum()) == pytest.approx(300.0)
    assert float(kappa[1]) == pytest.approx(float(kappa[2])) == pytest.approx(float(kappa[3]))
    assert float(kappa[1]) == pytest.approx(200.0 / 500.0)


def test_budget_guards():
    full = torch.tensor([100.0, 200.0], dtype=torch.float64)
    for dpsi in (torch.tensor([-1.0, -2.0]), torch.zeros(2)):
        imp = block_importance(dpsi, full)
        assert torch.isfinite(imp).all()
    # all-zero benefit: equal γ, importance ∝ 1/|w|
    imp = block_importance(torch.zeros(2), full)
    assert float(imp[0]) == pytest.approx(2 * float(imp[1]))
    # keep everything: every block dense, no free block left -> no 0/0
    kappa = solve_keep_ratios(torch.tensor([1.0, 3.0]), full, 10.0, 1.0)
    assert torch.equal(kappa, torch.ones(2, dtype=torch.float64))


# ---------------------------------------------------------------------------------- local importance
def test_rank_normalise_is_scaled_rank_with_stable_ties():
    r = rank_normalise(torch.tensor([0.3, 0.1, 0.3, 0.2]), scale=2.0)
    assert r.tolist() == pytest.approx([2 * 3 / 4, 2 * 1 / 4, 2 * 4 / 4, 2 * 2 / 4])


def test_soft_mask_formula():
    n, t, tau = 1000, 400, 0.1
    m = soft_mask_values(n, t, tau)
    assert float(m[t - 1]) == 0.5  # rank t (1-based) is the threshold element, kept
    assert float(m[t - 1 + int(tau * n)]) == pytest.approx(0.9, abs=1e-6)
    assert float(m[t - 1 - int(tau * n)]) == pytest.approx(0.1, abs=1e-6)
    assert bool((m[: t - 1] < 0.5).all()) and bool((m[t - 1 :] >= 0.5).all())
    hard = soft_mask_values(n, t, 0.0)
    assert (
        set(hard[: t - 1].tolist()) == {0.0} and float(hard[t - 1]) == 0.5 and set(hard[t:].tolist()) == {1.0}
    )


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_threshold_search_hits_every_block_goal(ratio):
    d = Dims.from_config(DEIT_S)
    fa, fm = full_linear_params(d)
    kappa, *_ = _solve(1, ratio)
    g = torch.Generator().manual_seed(7)
    for b in range(24):
        kind, full = ("attn", fa) if b % 2 == 0 else ("mlp", fm)
        names = BLOCK_GATES[kind]
        scores = [torch.rand(d.gate_size(n), generator=g, dtype=torch.float64) for n in names]
        masks, cut, kept = block_masks(
            d, kind, scores, [DEFAULT_GATE_SCALES[n] for n in names], float(kappa[b]), 0.1
        )
        assert abs(kept - float(kappa[b]) * full) <= 0.005 * full, (b, kept, float(kappa[b]) * full)
        # the reported count is the hard-mask count of the masks produced
        w = [int((m >= 0.5).sum()) for m in masks]
        fn = attn_linear_params if kind == "attn" else mlp_linear_params
        assert fn(d, w[0], w[2], w[1]) == kept
        # within a gate the kept elements are the top-ranked ones
        for s, m in zip(scores, masks):
            keep = m >= 0.5
            if keep.any() and (~keep).any():
                assert float(s[keep].min()) >= float(s[~keep].max())


def test_pure_threshold_is_within_half_an_element_step():
    d = Dims.from_config(DEIT_S)
    fa, _ = full_linear_params(d)
    g = torch.Generator().manual_seed(3)
    max_step = 3 * d.heads * d.hidden + d.heads * d.hidden  # one head-dim element with everything kept
    for keep in torch.linspace(0.1, 0.95, 12).tolist():
        scores = [torch.rand(d.gate_size(n), generator=g, dtype=torch.float64) for n in BLOCK_GATES["attn"]]
        masks, cut, kept = block_masks(d, "attn", scores, [1.0, 1.5, 1.0], keep, 0.1, exact=False)
        assert abs(kept - keep * fa) <= max_step / 2
        assert sum(int((m >= 0.5).sum()) for m in masks) == sum(m.numel() for m in masks) - cut


def test_gate_scales_set_how_many_go_per_gate():
    d = Dims.from_config(DEIT_S)
    scores = [
        torch.rand(d.gate_size(n), generator=torch.Generator().manual_seed(0)) for n in BLOCK_GATES["mlp"]
    ]
    masks, *_ = block_masks(d, "mlp", scores, [1.0, 1.5, 0.75], 0.5, 0.0)
    frac_pruned = [float((m < 0.5).float().mean()) for m in masks]  # in, out, hid
    theta = frac_pruned[0]
    assert frac_pruned[1] == pytest.approx(theta / 1.5, abs=0.01)
    assert frac_pruned[2] == pytest.approx(min(theta / 0.75, 1.0), abs=0.01)


# ---------------------------------------------------------------------------------- gates and BPI
def _random_hard_gates(model, seed: int) -> GateSet:
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


@pytest.mark.parametrize("fixture", ["tiny_vit", "tiny_deit_teacher"])
def test_hard_gates_equal_plan_masking_and_pruned_model(fixture, request, images):
    model = request.getfixturevalue(fixture)
    gates = _random_hard_gates(model, 0)
    gates.hard = True
    handles = install_gates(model, gates)
    with torch.no_grad():
        gated = model(pixel_values=images).logits
    for h in handles:
        h.remove()
    pruner_cfg = P3BConfig(handcrafted_keep=[1.0] * 6).resolved()
    pr = P3BPruner(model, pruner_cfg)
    pr.gates.load_state_dict(gates.state_dict())
    plan = pr.width_plan()
    pr.detach()
    ref = masked_forward(model, plan, images)
    assert torch.allclose(gated, ref, atol=1e-5)
    pruned = apply_width_plan(model, plan)
    with torch.no_grad():
        assert torch.allclose(pruned(pixel_values=images).logits, gated, atol=1e-5)


def test_soft_gates_scale_activations_and_receive_gradients(tiny_vit, images):
    gates = GateSet(Dims.from_config(tiny_vit.config))
    handles = install_gates(tiny_vit, gates)
    out = tiny_vit(pixel_values=images).logits
    out.square().sum().backward()
    assert all(m.grad is not None and bool(m.grad.abs().sum() > 0) for _, _, m in gates.named_masks())
    with torch.no_grad():
        gates.mask("attn_out", 0).mul_(0.0)
        changed = tiny_vit(pixel_values=images).logits
    assert not torch.allclose(out.detach(), changed)
    for h in handles:
        h.remove()


@pytest.mark.parametrize("fixture,special", [("tiny_vit", 1), ("tiny_deit_teacher", 2)])
def test_bpi_heads_taps_and_detach(fixture, special, request, images):
    model = request.getfixturevalue(fixture).train()
    mods = locate(model)
    bpi = BPIHeads.for_model(mods, 7)
    assert bpi.special_tokens == special and bpi.grid == 4
    handles = bpi.install(model, mods)
    bpi.active = True
    out = model(pixel_values=images)
    assert not any(k.startswith("p3b") for k in out.keys())  # BPI logits stay out of the ModelOutput (§9.5)
    cls_logits, patch_logits = bpi.pop_logits()
    assert cls_logits.shape == (6, 2, 3, 7) and patch_logits.shape == (6, 2, 3, 7)
    with pytest.raises(RuntimeError, match="not active"):
        bpi.pop_logits()  # handed over once
    labels = torch.tensor([0, 3, 6])
    ce = per_head_ce(cls_logits, labels)
    manual = torch.nn.functional.cross_entropy(cls_logits[2, 1], labels)
    assert float(ce[2, 1].detach()) == pytest.approx(float(manual.detach()), rel=1e-5)
    (ce.sum() + per_head_ce(patch_logits, labels).sum()).backward()
    backbone = [p for n, p in model.named_parameters() if not n.startswith("p3b")]
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in backbone)  # detached taps
    assert all(p.grad is not None for p in bpi.parameters())
    # the class head of block b scores X_b (in) and X_{b+1} (out): the out of b is the in of b+1
    with torch.no_grad():
        bpi.active = True
        hs = model(pixel_values=images, output_hidden_states=True)
    x2 = hs.hidden_states[1]  # output of layer 0 = X_2
    cls_logits = bpi.pop_logits()[0]
    assert torch.allclose(bpi.cls_heads[1](x2[:, 0]), cls_logits[1, 1], atol=1e-5)
    assert torch.allclose(bpi.cls_heads[2](x2[:, 0]), cls_logits[2, 0], atol=1e-5)
    for h in handles:
        h.remove()


def test_dense_targets_in_bpi_ce():
    logits = torch.randn(2, 2, 5, 4)
    y = torch.tensor([0, 1, 2, 3, 1])
    dense = torch.nn.functional.one_hot(y, 4).float()
    assert torch.allclose(per_head_ce(logits, y), per_head_ce(logits, dense), atol=1e-6)


# ---------------------------------------------------------------------------------- schedule
def test_schedule_phases_and_ramp():
    assert default_phase_epochs(50) == (3.0, 25.0, 50.0)
    assert default_phase_epochs(10) == pytest.approx((0.6, 5.0, 10.0))
    s = Schedule.from_epochs(10, 3, 25, 50, update_every=20)
    assert (s.start, s.sparse, s.finalize) == (30, 250, 500)
    updates = [k for k in range(600) if s.is_update(k)]
    assert updates[0] == 50 and updates[-1] == 490 and all(b - a == 20 for a, b in zip(updates, updates[1:]))
    assert s.rho(30) == 0.0 and s.rho(140) == pytest.approx(0.5) and s.rho(300) == 1.0
    assert s.tau(100) == pytest.approx(0.1) and s.tau(375) == pytest.approx(0.05) and s.tau(500) == 0.0
    assert [s.phase(k) for k in (0, 30, 250, 500)] == ["warmup", "sparsify", "sharpening", "finalized"]
    assert not s.accumulating(29) and s.accumulating(30) and not s.accumulating(500)


def test_taylor_accumulation_skips_non_finite_and_unscales(tiny_vit):
    cfg = P3BConfig(handcrafted_keep=[0.5] * 6).resolved()
    pr = P3BPruner(tiny_vit, cfg)
    for _, _, m in pr.gates.named_masks():
        m.grad = torch.full_like(m, 4.0)
    assert pr.record_taylor(0, grad_scale=2.0)
    assert float(pr.state.taylor_sum.max()) == 4.0 and float(pr.state.taylor_count) == 1
    assert not pr.record_taylor(0)  # once per optimizer step
    pr.gates.mask("mlp_hid", 1).grad[3] = float("inf")
    assert not pr.record_taylor(1)
    assert pr.state.skipped_taylor_steps == 1 and float(pr.state.taylor_count) == 1
    pr.detach()
    assert not hasattr(tiny_vit, "p3b_gates")
