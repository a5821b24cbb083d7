"""P3B correctness pins: each test breaks when one step of the method is changed.

* a replica of the keep-ratio step (docs/p3b.md §3) over several updates with unequal remaining counts
  (EMA, its weights, importance per *remaining* parameter, the α-merge, the solver);
* the Taylor score's mask factor, the Taylor window reset, τ inside an update;
* the finalisation merge of the previous window, counted once per process (simulated two ranks);
* the denormal floor: no subnormal gated weight, activation or gradient late in a run;
* frozen masks after finalisation: training on keeps the hard-masked model == the saved pruned model;
* the KD loss value against hand formulas (DeiT's scaling and batchmean, α, the teacher term);
* backbone-only gradient clipping and the recipe warning of P3BTrainer.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from p3b_tiny_run import synthetic_dataset, tiny_model, training_args

from p3b_hf.methods.p3b import P3BPruner, Schedule, block_masks
from p3b_hf.methods.p3b import pruner as pruner_module
from p3b_hf.methods.p3b.gates import BLOCK_GATES
from p3b_hf.trainer import P3BConfig, P3BTrainer
from p3b_hf.training import KDConfig, kd_loss

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_SUBNORMAL = torch.finfo(torch.float32).tiny


# ---------------------------------------------------------------------------------- §3 replica
def _np_gamma(x: np.ndarray, s: float) -> np.ndarray:
    sp = lambda z: np.logaddexp(0.0, z)  # noqa: E731  softplus
    return sp(1.4 * s * x) - sp(1.4 * s * x - s)


def _np_importance(dpsi: np.ndarray, remaining: np.ndarray, s: float) -> np.ndarray:
    imp = _np_gamma(dpsi / dpsi.max(), s) / (remaining + 1e-6)
    return imp / imp.mean()


def _np_solver(imp: np.ndarray, full: np.ndarray, non_block: float, keep: float) -> np.ndarray:
    target = keep * (full.sum() + non_block) - non_block
    k = imp.copy()
    dense, dead = np.zeros(len(k), bool), k <= 0
    for _ in range(21):
        k[dead], k[dense] = 0.0, 1.0
        free = ~(dense | dead)
        k[free] *= (target - full[dense].sum()) / (k[free] * full[free]).sum()
        if not ((k > 1) | (k < 0)).any():
            break
        dense |= k >= 1
        dead |= k <= 0
    return np.clip(k, 0, 1)


def _set_window(st, d_cls: np.ndarray, d_patch: np.ndarray, n: int) -> None:
    st.dpsi_cls_sum.copy_(torch.from_numpy(d_cls * n))
    st.dpsi_patch_sum.copy_(torch.from_numpy(d_patch * n))
    st.dpsi_count.fill_(n)
    st.dpsi_cls_count.fill_(n)


def test_keep_ratio_step_matches_a_replica_over_updates_with_unequal_remaining(tiny_vit):
    cfg = P3BConfig(prune_ratio=0.6, pr_gamma=0.3, pr_alpha=0.7, block_imp_scale=8.0).resolved()
    pr = P3BPruner(tiny_vit, cfg)
    pr.schedule = Schedule(0, 10, 40, 1)
    rng = np.random.default_rng(3)
    full = pr.full.numpy()
    ema_c = ema_p = None
    for update in range(4):
        remaining = pr.state.remaining.numpy().copy()
        if update > 0:  # the masks of the previous update left unequal remaining counts
            assert not np.allclose(remaining / full, (remaining / full)[0])
        pr.state.taylor_sum.copy_(torch.from_numpy(rng.random(pr.state.taylor_sum.numel())))
        pr.state.taylor_count.fill_(1)
        d_cls, d_patch = rng.normal(0.3, 0.5, 6), rng.normal(0.2, 0.5, 6)
        _set_window(pr.state, d_cls, d_patch, n=3)
        entry = pr.update(10 + update, rho=1.0, tau=0.05)
        i_c, i_p = _np_importance(d_cls, remaining, 8.0), _np_importance(d_patch, remaining, 8.0)
        ema_c = i_c if ema_c is None else 0.3 * i_c + 0.7 * ema_c
        ema_p = i_p if ema_p is None else 0.3 * i_p + 0.7 * ema_p
        expected = _np_solver(0.7 * ema_c + 0.3 * ema_p, full, pr.non_block, 0.4)
        np.testing.assert_allclose(entry["keep_target"], expected, rtol=1e-10, atol=1e-12)
        assert entry["dpsi_cls"] == pytest.approx(d_cls.tolist(), abs=1e-12)


# ---------------------------------------------------------------------------------- §4 Taylor, τ
def test_taylor_score_multiplies_by_the_mask(tiny_vit):
    pr = P3BPruner(tiny_vit, P3BConfig(handcrafted_keep=[0.5] * 6).resolved())
    with torch.no_grad():
        for _, _, m in pr.gates.named_masks():
            m.fill_(0.5)
            m.grad = torch.full_like(m, 3.0)
    assert pr.record_taylor(0)
    assert float(pr.state.taylor_sum.min()) == float(pr.state.taylor_sum.max()) == pytest.approx(2.25)


def _handcrafted(model: torch.nn.Module) -> P3BPruner:
    layers = model.config.num_hidden_layers
    pr = P3BPruner(model, P3BConfig(handcrafted_keep=[0.6, 0.5] * layers).resolved())
    pr.schedule = Schedule(0, 10, 40, 1)
    return pr


def _window(pr: P3BPruner, scores: torch.Tensor) -> None:
    pr.state.taylor_sum.copy_(scores)
    pr.state.taylor_count.fill_(1)


def test_taylor_window_is_reset_after_every_update():
    first, second = tiny_model(seed=0), tiny_model(seed=0)
    n = sum(m.numel() for _, _, m in _handcrafted(tiny_model()).gates.named_masks())
    g = torch.Generator().manual_seed(0)
    old, new = (
        torch.rand(n, generator=g, dtype=torch.float64),
        torch.rand(n, generator=g, dtype=torch.float64),
    )
    a = _handcrafted(first)
    _window(a, old * 100)  # a window that favours other channels, by far
    a.update(1, rho=1.0, tau=0.05)
    assert float(a.state.taylor_sum.abs().sum()) == 0 and float(a.state.taylor_count) == 0
    _window(a, new)
    a.update(2, rho=1.0, tau=0.05)
    b = _handcrafted(second)
    _window(b, new)
    b.update(2, rho=1.0, tau=0.05)
    for (_, _, ma), (_, _, mb) in zip(a.gates.named_masks(), b.gates.named_masks()):
        torch.testing.assert_close(ma.detach(), mb.detach(), rtol=0, atol=0)


def test_update_uses_the_given_tau(tiny_vit):
    pr = _handcrafted(tiny_vit)
    scores = torch.rand(
        pr.state.taylor_sum.numel(), generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    masks = {}
    for tau in (0.1, 0.02):
        _window(pr, scores)
        pr.update(1, rho=1.0, tau=tau)
        masks[tau] = torch.cat([m.detach().clone() for _, _, m in pr.gates.named_masks()])
    assert not torch.equal(masks[0.1], masks[0.02])
    # layer 0's attention gates equal the threshold search's masks at that τ
    sizes = [pr.dims.gate_size(gname) for gname in BLOCK_GATES["attn"]]
    offsets = {gname: 0 for gname in BLOCK_GATES["attn"]}
    pos = 0
    for gname, layer, m in pr.gates.named_masks():
        if layer == 0 and gname in offsets:
            offsets[gname] = pos
        pos += m.numel()
    per_gate = [scores[offsets[gname] : offsets[gname] + n] for gname, n in zip(BLOCK_GATES["attn"], sizes)]
    want, *_ = block_masks(
        pr.dims, "attn", per_gate, [pr.config.gate_scales[gname] for gname in BLOCK_GATES["attn"]], 0.6, 0.02
    )
    for gname, w in zip(BLOCK_GATES["attn"], want):
        torch.testing.assert_close(pr.gates.mask(gname, 0).detach().double(), w.float().double())


# ---------------------------------------------------------------------------------- §9.4 merge under DDP
@pytest.mark.parametrize("reference", [False, True])
def test_finalize_merge_counts_the_previous_window_once_per_process(tiny_vit, monkeypatch, reference):
    world = 2

    def all_reduce_two_identical_ranks(t: torch.Tensor, mean: bool = False) -> torch.Tensor:
        if not mean:  # SUM over two ranks that hold the same sums
            t.mul_(world)
        return t

    monkeypatch.setattr(pruner_module, "all_reduce_", all_reduce_two_identical_ranks)
    cfg = P3BConfig(prune_ratio=0.5, finalize_reselect=True, reference=reference).resolved()
    pr = P3BPruner(tiny_vit, cfg)
    pr.schedule = Schedule(0, 4, 8, 2)
    rng = np.random.default_rng(0)
    for _ in range(4):  # previous window: 4 micro-batches on this rank
        pr.estimators[0].record(torch.tensor(rng.random((6, 2))), torch.tensor(rng.random((6, 2))))
    pr.update(2)
    for _ in range(4):  # the current, partial window
        pr.estimators[0].record(torch.tensor(rng.random((6, 2))), torch.tensor(rng.random((6, 2))))
    pr.finalize(3)
    reselect = pr.state.history[-1]
    assert reselect["phase"] == "finalize_reselect"
    # clean: (4 + 4) local forwards summed over 2 ranks; reference: the previous window counted twice more
    assert reselect["window_forwards"] == (24 if reference else 16)


# ---------------------------------------------------------------------------------- denormal floor
def _gated_tensors(model: torch.nn.Module, pr: P3BPruner, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Every module output, every gated weight (weight x mask) and every gradient of one forward/backward."""
    seen: list[tuple[str, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(
            lambda mod, i, o, name=name: seen.append(
                (f"act:{name}", o.detach() if isinstance(o, torch.Tensor) else o[0].detach())
            )
        )
        for name, m in model.named_modules()
        if name
        and not name.startswith("p3b_")
        and isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.GELU))
    ]
    out = model(pixel_values=x).logits
    for h in hooks:
        h.remove()
    (out.square().mean()).backward()
    for layer, lm in enumerate(pruner_module.locate(model).layers):
        m_out, m_in = pr.gates.effective("mlp_out", layer), pr.gates.effective("mlp_hid", layer)
        seen.append((f"w:fc2.{layer}", (lm.fc2.weight * torch.outer(m_out, m_in)).detach()))
        seen.append((f"w:o.{layer}", (lm.o.weight * pr.gates.effective("attn_out", layer)[:, None]).detach()))
    seen += [(f"grad:{n}", p.grad) for n, p in model.named_parameters() if p.grad is not None]
    return seen


def _subnormal(t: torch.Tensor) -> int:
    t = t.float()
    return int(((t != 0) & (t.abs() < TINY_SUBNORMAL)).sum())


@pytest.mark.parametrize("gate_mode", ["fused", "hooks"])
def test_late_masks_produce_no_subnormal_floats(gate_mode):
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    counts = {}
    for floor in (1e-6, 0.0):
        model = tiny_model(seed=0)
        cfg = P3BConfig(prune_ratio=0.5, gate_mode=gate_mode, mask_floor=floor).resolved()
        pr = P3BPruner(model, cfg)
        sched = Schedule(0, 40, 80, 2)  # the README's shape: τ falls to ~0 over sharpening
        pr.schedule = sched
        scores = torch.rand(
            pr.state.taylor_sum.numel(), generator=torch.Generator().manual_seed(2), dtype=torch.float64
        )
        _window(pr, scores)
        pr.update(78, rho=1.0, tau=sched.tau(78))  # the update before the last: τ = 0.1 / 20
        assert 0 < sched.tau(78) < 0.01
        masks = torch.cat([m.detach() for _, _, m in pr.gates.named_masks()])
        tensors = [("mask", masks)] + _gated_tensors(model, pr, x)
        counts[floor] = {name: _subnormal(t) for name, t in tensors if _subnormal(t)}
        if floor:
            below = masks[(masks > 0) & (masks < 0.5)]
            assert below.numel() > 0 and float(below.min()) >= floor  # soft band kept above the floor
    assert counts[1e-6] == {}, counts[1e-6]
    assert counts[0.0].get("mask", 0) > 0  # without the floor the late sigmoid does give subnormals


# ---------------------------------------------------------------------------------- frozen after finalize
@pytest.mark.parametrize("gate_mode", ["fused", "hooks"])
def test_training_past_finalize_keeps_trained_model_equal_to_saved_pruned_model(tmp_path, gate_mode):
    ds = synthetic_dataset(64)
    model = tiny_model("vit")
    cfg = P3BConfig(
        prune_ratio=0.5,
        prune_start_epoch=0.5,
        prune_sparse_epoch=1.5,
        prune_finalize_epoch=3,
        update_every=2,
        bpi_every=1,
        mask_lr=0.05,
        gate_mode=gate_mode,
        save_dir="auto",
    )
    args = training_args(str(tmp_path / "run"), num_train_epochs=5, per_device_train_batch_size=16)
    trainer = P3BTrainer(model=model, args=args, train_dataset=ds, eval_dataset=ds.select(range(16)), p3b=cfg)
    trainer.train()
    assert trainer.pruner.state.finalize_step == 12 and trainer.state.global_step == 20
    masks = [m for _, _, m in trainer.pruner.gates.named_masks()]
    assert all(not m.requires_grad and set(m.detach().unique().tolist()) <= {0.0, 1.0} for m in masks)
    x = ds[:16]["pixel_values"]
    model.eval()
    pruned = trainer.pruned_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            pruned(pixel_values=x).logits, model(pixel_values=x).logits, rtol=1e-5, atol=1e-5
        )
    saved = type(pruned).from_pretrained(tmp_path / "run" / "pruned_model").eval()
    with torch.no_grad():
        torch.testing.assert_close(
            saved(pixel_values=x).logits, model(pixel_values=x).logits, rtol=1e-5, atol=1e-5
        )


def test_frozen_masks_stay_in_the_graph_under_ddp_but_never_move(tiny_vit, images):
    pr = P3BPruner(tiny_vit, P3BConfig(handcrafted_keep=[0.5] * 6).resolved())
    with torch.no_grad():
        for _, _, m in pr.gates.named_masks():
            m.uniform_(0.2, 0.9)
    pr.gates.freeze(keep_in_graph=True)
    m = pr.gates.mask("mlp_hid", 0)
    assert m.requires_grad and set(m.detach().unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(pr.gates.effective("mlp_hid", 0), m.detach())
    tiny_vit(pixel_values=images).logits.sum().backward()
    assert m.grad is not None  # DDP's reducer sees it ...
    pr.gates.drop_grads()
    assert all(mm.grad is None for _, _, mm in pr.gates.named_masks())  # ... the optimizer does not


# ---------------------------------------------------------------------------------- KD loss
def test_kd_loss_values_against_hand_formulas():
    g = torch.Generator().manual_seed(0)
    b, k, t, alpha = 4, 10, 2.0, 0.3
    s, te = torch.randn(b, k, generator=g), torch.randn(b, k, generator=g)
    y = torch.randint(0, k, (b,), generator=g)
    ps, pt = F.softmax(s / t, -1).double(), F.softmax(te / t, -1).double()
    kl_sum = float((pt * (pt.log() - ps.log())).sum())
    ce = float(F.cross_entropy(s, y))
    deit = kd_loss({"logits": s}, te, y, KDConfig(alpha=alpha, temperature=t, reduction="deit"))
    batchmean = kd_loss({"logits": s}, te, y, KDConfig(alpha=alpha, temperature=t, reduction="batchmean"))
    assert float(deit) == pytest.approx((1 - alpha) * ce + alpha * kl_sum * t * t / (b * k), rel=1e-5)
    assert float(batchmean) == pytest.approx((1 - alpha) * ce + alpha * kl_sum * t * t / b, rel=1e-5)
    hard = kd_loss({"logits": s}, te, y, KDConfig(alpha=alpha, kind="hard"))
    assert float(hard) == pytest.approx(
        (1 - alpha) * ce + alpha * float(F.cross_entropy(s, te.argmax(-1))), rel=1e-6
    )
    with pytest.raises(Exception, match="reduction"):
        KDConfig(reduction="mean")


def test_p3b_dist_uses_deit_scaling_by_default(tmp_path):
    ds = synthetic_dataset(32)
    tr = P3BTrainer(
        model=tiny_model("vit"),
        args=training_args(str(tmp_path), num_train_epochs=1),
        train_dataset=ds,
        teacher=tiny_model("vit", seed=1),
        p3b=P3BConfig(prune_ratio=0.3, save_dir=None),
    )
    assert tr.kd.reduction == "deit"
    assert KDConfig().reduction is None  # unset: each trainer fills in its method's convention (resolve_kd)


# ---------------------------------------------------------------------------------- clipping, recipe warning
def test_clipping_acts_on_the_backbone_alone(tmp_path, caplog):
    ds = synthetic_dataset(32)
    with caplog.at_level(logging.WARNING, logger="p3b_hf.methods.p3b.trainer"):
        tr = P3BTrainer(
            model=tiny_model("vit"),
            args=training_args(
                str(tmp_path), max_grad_norm=0.5, lr_scheduler_type="linear", weight_decay=0.0
            ),
            train_dataset=ds,
            p3b=P3BConfig(prune_ratio=0.3, save_dir=None),
        )
    text = caplog.text
    assert "depart from the reference pruning recipe" in text
    assert "lr_scheduler_type='linear'" in text and "max_grad_norm=0.5" in text and "weight_decay=0.0" in text
    tr.accelerator.gradient_accumulation_steps = 1
    model = tr.model
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.01)
    bpi = [p for n, p in model.named_parameters() if n.startswith("p3b_bpi.")]
    tr._clip_grad_norm(model)
    backbone = [p for n, p in model.named_parameters() if not n.startswith("p3b_")]
    norm = math.sqrt(sum(float(p.grad.double().square().sum()) for p in backbone))
    assert norm == pytest.approx(0.5, rel=1e-4)
    assert all(torch.all(p.grad == 0.01) for p in bpi)


def test_reference_recipe_gives_no_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="p3b_hf.methods.p3b.trainer"):
        P3BTrainer(
            model=tiny_model("vit"),
            args=training_args(str(tmp_path)),
            train_dataset=synthetic_dataset(16),
            p3b=P3BConfig(prune_ratio=0.3, save_dir=None),
        )
    assert "depart" not in caplog.text
