"""Mutation-testing pins (docs/p3b.md "Mutation testing"): each test kills mutants of the P3B algorithm or
the KD loss that the other unit-level tests let survive. Everything here is unit-level (no Trainer run):
real inputs, real numbers, hand-computed or replica expectations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers.models.deit.modeling_deit import DeiTForImageClassificationWithTeacherOutput

from p3b_hf.errors import BudgetError, P3BError
from p3b_hf.methods.p3b import (
    DEFAULT_GATE_SCALES,
    MASK_FLOOR,
    BPIHeads,
    GroupedBPIHeads,
    P3BPruner,
    Schedule,
    block_importance,
    block_masks,
    ema,
    non_block_params,
    parse_gate_scales,
    ramp,
    solve_keep_ratios,
)
from p3b_hf.methods.p3b import pruner as pruner_module
from p3b_hf.methods.p3b.config import P3BConfig
from p3b_hf.methods.p3b.gates import BLOCK_GATES, Dims, attn_linear_params, block_params, mlp_linear_params
from p3b_hf.methods.p3b.local import _shift_gate, kept_params_per_cut, rank_normalise, soft_mask_values
from p3b_hf.methods.p3b.method import resolve_config
from p3b_hf.methods.p3b.state import P3BState
from p3b_hf.training import KDConfig, kd_loss, logits_of

pytestmark = pytest.mark.usefixtures("one_thread")


def _f64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# ---------------------------------------------------------------------------------- §3 block importance
def _np_gamma(x: np.ndarray, s: float) -> np.ndarray:
    sp = lambda z: np.logaddexp(0.0, z)  # noqa: E731  softplus
    return sp(1.4 * s * x) - sp(1.4 * s * x - s)


def test_block_importance_default_scale_is_ten():
    dpsi, remaining = _f64(0.8, 0.1, -0.05, 0.4), _f64(100.0, 300.0, 200.0, 50.0)
    x = dpsi.numpy() / 0.8
    want = _np_gamma(x, 10.0) / (remaining.numpy() + 1e-6)
    np.testing.assert_allclose(block_importance(dpsi, remaining).numpy(), want / want.mean(), rtol=1e-12)


def test_guard_normalises_negative_benefits_by_their_largest_magnitude():
    # no block helps (max ΔΨ < 0) and every |ΔΨ| < 1: x = ΔΨ / max|ΔΨ| = (-0.2, -1, -0.6)
    dpsi, remaining = _f64(-0.1, -0.5, -0.3), _f64(100.0, 100.0, 100.0)
    want = _np_gamma(np.array([-0.2, -1.0, -0.6]), 10.0)
    np.testing.assert_allclose(block_importance(dpsi, remaining).numpy(), want / want.mean(), rtol=1e-12)


def test_a_block_far_below_zero_gets_zero_importance_and_is_pruned_away():
    full = _f64(100.0, 200.0, 100.0, 200.0)
    imp = block_importance(_f64(0.001, -0.06, 0.0005, 0.0008), full)
    assert float(imp[1]) == 0.0  # γ(-60) underflows to exactly 0
    kappa = solve_keep_ratios(imp, full, 0.0, 0.5)
    assert float(kappa[1]) == 0.0 and float(kappa[0]) == 1.0  # one block dead, one dense
    assert float((kappa * full).sum()) == pytest.approx(300.0, rel=1e-12)
    # the free blocks share the rest in proportion to their importance
    assert float(kappa[2] / kappa[3]) == pytest.approx(float(imp[2] / imp[3]), rel=1e-12)


def test_ema_weights_new_and_previous():
    new, prev = _f64(1.0, 3.0), _f64(5.0, -1.0)
    assert ema(new, None, 0.2) is new
    torch.testing.assert_close(ema(new, prev, 0.2), _f64(0.2 * 1 + 0.8 * 5, 0.2 * 3 - 0.8 * 1))


def test_ramp_is_linear_in_rho():
    kappa = _f64(0.2, 0.6, 1.0)
    torch.testing.assert_close(ramp(kappa, 0.0), _f64(1.0, 1.0, 1.0))
    torch.testing.assert_close(ramp(kappa, 0.5), _f64(0.6, 0.8, 1.0))
    torch.testing.assert_close(ramp(kappa, 0.25), _f64(0.8, 0.9, 1.0))


# ---------------------------------------------------------------------------------- §3 budget solver
def test_solver_does_not_depend_on_the_unit_of_the_parameter_counts():
    g = torch.Generator().manual_seed(4)
    imp = torch.rand(8, generator=g, dtype=torch.float64) * 3
    full = torch.rand(8, generator=g, dtype=torch.float64) * 1e6 + 1e5
    kappa = solve_keep_ratios(imp, full, 4e5, 0.8)
    assert bool((kappa == 1).any())  # the case includes a clipped, redistributed block
    # the same counts in millions of parameters: every Σ κ·|W| is then below 1
    torch.testing.assert_close(solve_keep_ratios(imp, full * 1e-6, 0.4, 0.8), kappa, rtol=1e-12, atol=1e-12)


def test_solver_budget_edge_cases():
    imp, full = _f64(1.0, 2.0, 3.0), _f64(100.0, 200.0, 300.0)
    # keep nothing of the blocks (block-only ratio 1): every κ is 0, no error
    assert solve_keep_ratios(imp, full, 0.0, 0.0).tolist() == [0.0, 0.0, 0.0]
    # a negative block budget within rounding (1e-6 parameters) still prunes every block instead of raising
    assert solve_keep_ratios(imp, full, 1e-6, 0.0).tolist() == [0.0, 0.0, 0.0]
    # less than one parameter short is already an error, which names the non-block parameters
    with pytest.raises(
        BudgetError,
        match=r"^Keep ratio 0\.0000 leaves -1 parameters for the blocks: the non-block "
        r"parameters \(1\) alone exceed it\. Use a smaller prune ratio\.$",
    ):
        solve_keep_ratios(imp, full, 0.75, 0.0)
    with pytest.raises(BudgetError, match="non-block parameters"):
        solve_keep_ratios(imp, full, 1e6, 0.5)


def _cascade(rounds: int, rho: float = 2.0, q: float = 1.4, budget: float = 1e9):
    """Importances and block sizes for which every solver round clips exactly one more block to κ = 1:
    importances fall by ``rho`` per block and each block's size is chosen so that clipping it raises the
    scale of the others by ``rho`` as well; a last block with a small importance takes the rest (κ = 0.5)."""
    x = (rho - 1) / (rho * q - 1)
    imp, full, left = [], [], budget
    for r in range(rounds):
        imp.append(rho**-r)
        full.append(x * left)
        left -= x * left
    imp.append(rho**-rounds / (2 * q))
    full.append(2 * left)
    full_t = torch.tensor(full, dtype=torch.float64)
    return torch.tensor(imp, dtype=torch.float64), full_t, budget / float(full_t.sum())


def test_solver_redistributes_for_twenty_rounds_then_gives_up():
    imp, full, keep = _cascade(20)  # 20 clipping rounds + the final one that fits
    kappa = solve_keep_ratios(imp, full, 0.0, keep)
    assert kappa[:20].tolist() == [1.0] * 20 and float(kappa[20]) == pytest.approx(0.5, rel=1e-6)
    imp, full, keep = _cascade(21)
    with pytest.raises(
        BudgetError,
        match=r"^The P3B budget solver did not converge in 20 rounds; report this "
        r"with your config\.$",
    ):
        solve_keep_ratios(imp, full, 0.0, keep)


# ---------------------------------------------------------------------------------- state: windows
# the six sums and counts of one window, named out here (not via ``window_tensors``, which is under test)
WINDOW = ("dpsi_cls_sum", "dpsi_patch_sum", "dpsi_count", "dpsi_cls_count", "taylor_sum", "taylor_count")


def _window_of(st: P3BState, prefix: str = "") -> tuple[torch.Tensor, ...]:
    """``st``'s window tensors in ``WINDOW`` order; ``prefix="prev_"``: the previous window kept for S2."""
    return tuple(getattr(st, prefix + name) for name in WINDOW)


def _state_with_window(seed: int) -> P3BState:
    g = torch.Generator().manual_seed(seed)
    st = P3BState.fresh(4, 6, _f64(10.0, 20.0, 10.0, 20.0))
    st.dpsi_cls_sum.copy_(torch.rand(4, generator=g, dtype=torch.float64))
    st.dpsi_patch_sum.copy_(torch.rand(4, generator=g, dtype=torch.float64) - 0.5)
    st.dpsi_count.fill_(3 + seed)
    st.dpsi_cls_count.fill_(7 + seed)
    st.taylor_sum.copy_(torch.rand(6, generator=g, dtype=torch.float64))
    st.taylor_count.fill_(5 + seed)
    return st


def test_roll_window_keeps_each_sum_as_its_own_previous_and_zeroes_the_window():
    st = _state_with_window(0)
    window = [t.clone() for t in _window_of(st)]
    st.roll_window()
    for p, w in zip(_window_of(st, "prev_"), window):
        torch.testing.assert_close(p, w, rtol=0, atol=0)
    for t in _window_of(st):
        assert float(t.abs().sum()) == 0.0
    # with the local (pre-all-reduce) ΔΨ sums given, those are kept instead
    st2 = _state_with_window(1)
    local = tuple(t * 0.5 for t in st2.window_tensors())
    st2.roll_window(local)
    for p, w in zip(_window_of(st2, "prev_")[:4], local):  # the four ΔΨ sums and counts
        torch.testing.assert_close(p, w, rtol=0, atol=0)


def test_merge_previous_window_adds_every_sum_and_count():
    st = _state_with_window(0)
    st.roll_window()
    cur = _state_with_window(2)
    for name in WINDOW:
        getattr(st, name).copy_(getattr(cur, name))
    prev = {n: getattr(st, f"prev_{n}").clone() for n in WINDOW}
    st.merge_previous_window()
    for name, p in prev.items():
        torch.testing.assert_close(getattr(st, name), getattr(cur, name) + p, rtol=0, atol=0, msg=name)
    # nothing to merge before the first roll
    fresh = _state_with_window(3)
    before = [t.clone() for t in fresh.window_tensors()]
    fresh.merge_previous_window()
    for a, b in zip(fresh.window_tensors(), before):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------------------- KD loss
def _kd_inputs(b: int = 4, k: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, k, generator=g),
        torch.randn(b, k, generator=g),
        torch.randn(b, k, generator=g),
        torch.randint(0, k, (b,), generator=g),
    )


def _soft_kd(s: torch.Tensor, te: torch.Tensor, t: float, per: float) -> float:
    ps, pt = F.softmax(s.double() / t, -1), F.softmax(te.double() / t, -1)
    return float((pt * (pt.log() - ps.log())).sum()) * t * t / per


def test_kd_loss_of_a_two_headed_student_uses_cls_for_ce_and_dist_for_kd():
    cls, dist, te, y = _kd_inputs()
    out = DeiTForImageClassificationWithTeacherOutput(
        logits=(cls + dist) / 2, cls_logits=cls, distillation_logits=dist
    )
    alpha, t = 0.3, 2.0
    soft = kd_loss(out, te, y, KDConfig(alpha=alpha, temperature=t, reduction="deit"))
    want = (1 - alpha) * float(F.cross_entropy(cls, y)) + alpha * _soft_kd(dist, te, t, dist.numel())
    assert float(soft) == pytest.approx(want, rel=1e-5)
    hard = kd_loss(out, te, y, KDConfig(alpha=alpha, kind="hard"))
    want = (1 - alpha) * float(F.cross_entropy(cls, y)) + alpha * float(F.cross_entropy(dist, te.argmax(-1)))
    assert float(hard) == pytest.approx(want, rel=1e-6)


def test_kd_loss_uses_the_given_criterion_for_the_task_term():
    cls, _, te, y = _kd_inputs(seed=1)
    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.2)
    alpha = 0.4
    got = kd_loss({"logits": cls}, te, y, KDConfig(alpha=alpha, reduction="batchmean"), ce=ce)
    want = (1 - alpha) * float(ce(cls, y)) + alpha * _soft_kd(cls, te, 1.0, cls.shape[0])
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert float(ce(cls, y)) != pytest.approx(float(F.cross_entropy(cls, y)), rel=1e-3)


def test_kd_alpha_endpoints_are_the_pure_terms():
    cls, _, te, y = _kd_inputs(seed=2)
    out = {"logits": cls}
    assert float(kd_loss(out, te, y, KDConfig(alpha=0.0, reduction="deit"))) == pytest.approx(
        float(F.cross_entropy(cls, y)), rel=1e-6
    )
    assert float(
        kd_loss(out, te, y, KDConfig(alpha=1.0, temperature=3.0, reduction="deit"))
    ) == pytest.approx(_soft_kd(cls, te, 3.0, cls.numel()), rel=1e-5)


@pytest.mark.parametrize(
    "kwargs", [dict(alpha=1.5), dict(alpha=-0.1), dict(temperature=0.0), dict(temperature=-1.0)]
)
def test_kd_config_rejects_alpha_outside_0_1_and_non_positive_temperature(kwargs):
    with pytest.raises(
        P3BError, match=r"^KD alpha must lie in \[0, 1\] and the temperature be > 0 \(got alpha="
    ):
        KDConfig(**kwargs)


def test_kd_config_rejects_unknown_kind():
    with pytest.raises(P3BError, match=r"^KD kind must be 'soft' or 'hard', got 'medium'\.$"):
        KDConfig(kind="medium")
    assert math.isclose(KDConfig(alpha=1.0, temperature=0.5).alpha, 1.0)


# ---------------------------------------------------------------------------------- §5.3 schedule
def test_schedule_from_epochs_defaults_and_edge_cases():
    readme = Schedule.from_epochs(195, 10, 25, 50, update_every=None)  # README CIFAR-100 run, one process
    assert (readme.start, readme.sparse, readme.finalize, readme.update_every) == (1950, 4875, 9750, 100)
    assert readme.num_updates() == 78 and Schedule(0, 5, 10, 3).num_updates() == 3
    assert Schedule.from_epochs(100, 3, 25, 50, update_every=None).update_every == (5000 - 300) // 78
    assert Schedule.from_epochs(10, 0, 1, 10, update_every=None).update_every == 1  # 100 // 78 = 1
    assert Schedule.from_epochs(10, 0, 0.5, 1, update_every=None).update_every == 1  # at least 1
    # a sparsify phase shorter than one step still lasts one step
    s = Schedule.from_epochs(10, 1, 1, 5, update_every=2)
    assert (s.start, s.sparse, s.finalize) == (10, 11, 50)
    s = Schedule.from_epochs(10, 1, 5, 5, update_every=2, tau_max=0.2, tau_min=0.05)
    assert (s.tau_max, s.tau_min) == (0.2, 0.05)
    assert s.to_dict() == {
        "start": 10,
        "sparse": 50,
        "finalize": 50,
        "update_every": 2,
        "tau_max": 0.2,
        "tau_min": 0.05,
    }


def test_schedule_updates_tau_and_bounds():
    s = Schedule(1, 4, 10, 3)
    assert [d for d in range(12) if s.is_update(d)] == [4, 7, 10]  # the last one at S2 itself
    s = Schedule(0, 4, 8, 2, tau_max=0.1, tau_min=0.02)
    assert s.tau(8) == pytest.approx(0.02) and s.tau(20) == pytest.approx(0.02)  # τ stays at τ_min after S2
    # no sharpening phase (S1 = S2): τ_max before, τ_min from S1 on
    s = Schedule(0, 5, 5, 1, tau_max=0.1, tau_min=0.02)
    assert (s.tau(4), s.tau(5), s.tau(6)) == (0.1, 0.02, 0.02)


@pytest.mark.parametrize(
    "args,message",
    [
        (
            (3, 3, 10, 1),
            "P3B phases must satisfy 0 <= start < sparse <= finalize (got 3, 3, 10 steps). Fix "
            "--prune-start-epoch/--prune-sparse-epoch/--prune-finalize-epoch (or train longer).",
        ),
        ((0, 2, 6, 0), "--update-every must be >= 1 optimizer step."),
        (
            (2, 4, 6, 4),
            "--update-every 4 is not shorter than the pruning window (4 optimizer steps from step 2 to 6): no "
            "mask would ever be updated. Use --update-every <= 2, or train longer (--epochs).",
        ),
        (
            (1, 2, 4, 3),
            "--update-every 3 is not shorter than the pruning window (3 optimizer steps from step 1 to 4): no "
            "mask would ever be updated. Use --update-every <= 1, or train longer (--epochs).",
        ),
    ],
)
def test_schedule_rejects_impossible_phases(args, message):
    with pytest.raises(P3BError) as e:
        Schedule(*args)
    assert str(e.value) == message


def test_schedule_accepts_the_tightest_valid_phases():
    s = Schedule(0, 5, 5, 4)  # S1 = S2 and U = window - 1: a single update
    assert [d for d in range(8) if s.is_update(d)] == [4]


# ---------------------------------------------------------------------------------- pruner: keep ratios
def _np_importance(
    dpsi: np.ndarray, remaining: np.ndarray, s: float = 10.0, guard: bool = True
) -> np.ndarray:
    top = dpsi.max()
    if guard and top <= 0:
        top = np.abs(dpsi).max()
    imp = _np_gamma(dpsi / top, s) / (remaining + 1e-6)
    return imp / imp.mean()


def _np_solver(imp: np.ndarray, full: np.ndarray, non_block: float, keep: float) -> np.ndarray:
    target = keep * (full.sum() + non_block) - non_block
    k = imp.copy()
    dense, dead = np.zeros(len(k), bool), k <= 0
    for _ in range(21):
        k[dead], k[dense] = 0.0, 1.0
        free = ~(dense | dead)
        if not free.any():
            break
        k[free] *= (target - full[dense].sum()) / (k[free] * full[free]).sum()
        if not ((k > 1) | (k < 0)).any():
            break
        dense |= k >= 1
        dead |= k <= 0
    return np.clip(k, 0, 1)


def _pruner(model: torch.nn.Module, update_every: int | None = None, **config) -> P3BPruner:
    """A pruner of ``P3BConfig(**config)`` on ``model``. With ``update_every``: the schedule S0 = 0, S1 = 10,
    S2 = 40 (what the Trainer derives from the epochs), so the updates these tests make fall before S1."""
    pr = P3BPruner(model, P3BConfig(**config).resolved())
    if update_every is not None:
        pr.schedule = Schedule(0, 10, 40, update_every)
    return pr


def _random_scores(pr: P3BPruner, seed: int) -> torch.Tensor:
    """One random float64 Taylor score per mask element of ``pr`` (seeded)."""
    return torch.rand(
        pr.state.taylor_sum.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def _taylor_window(pr: P3BPruner, scores: torch.Tensor) -> None:
    """A window of one Taylor step that scored ``scores``."""
    pr.state.taylor_sum.copy_(scores)
    pr.state.taylor_count.fill_(1)


def _window(pr: P3BPruner, rng: np.random.Generator, n_cls: int, n_patch: int, mean_cls: float = 0.3):
    """A finished window: ``n_cls`` class-head and ``n_patch`` patch-head micro-batches, and one Taylor step."""
    st = pr.state
    d_cls, d_patch = rng.normal(mean_cls, 0.5, pr.num_blocks), rng.normal(0.2, 0.5, pr.num_blocks)
    st.dpsi_cls_sum.copy_(torch.from_numpy(d_cls * n_cls))
    st.dpsi_patch_sum.copy_(torch.from_numpy(d_patch * n_patch))
    st.dpsi_cls_count.fill_(n_cls)
    st.dpsi_count.fill_(n_patch)
    st.taylor_sum.copy_(torch.from_numpy(rng.random(st.taylor_sum.numel())))
    st.taylor_count.fill_(1)
    return (d_cls if n_cls else None), (d_patch if n_patch else None)


NO_BPI = "P3B update with no BPI forward in its window: keeping the previous block keep ratios."
NO_PATCH = (
    "P3B update with no patch-head forward in its window (--bpi-every larger than the window): the "
    "patch-head importance keeps its previous value. Use --bpi-every <= --update-every x gradient "
    "accumulation steps."
)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    out = [r.getMessage() for r in caplog.records if r.name == "p3b_hf.methods.p3b.pruner"]
    caplog.clear()
    return out


def test_keep_ratios_when_one_head_type_or_both_missed_the_window(tiny_vit, caplog):
    """Windows with (class, patch) micro-batch counts (1, 0), (1, 1), (0, 1), (3, 2), (0, 0): ΔΨ means, EMAs,
    α-merge and solver against a replica; a head type that did not run keeps its EMA; an empty window keeps κ."""
    pr = _pruner(tiny_vit, update_every=1, prune_ratio=0.5, pr_gamma=0.3, pr_alpha=0.7)
    rng = np.random.default_rng(5)
    full = pr.full.numpy()
    ema_c = ema_p = None
    caplog.set_level("WARNING", logger="p3b_hf.methods.p3b.pruner")
    for step, (n_cls, n_patch) in enumerate([(1, 0), (1, 1), (0, 1), (3, 2)], start=1):
        remaining = pr.state.remaining.numpy().copy()
        d_cls, d_patch = _window(pr, rng, n_cls, n_patch)
        entry = pr.update(step, rho=1.0, tau=0.05)
        if d_cls is not None:
            ema_c = (
                _np_importance(d_cls, remaining)
                if ema_c is None
                else 0.3 * _np_importance(d_cls, remaining) + 0.7 * ema_c
            )
        if d_patch is not None:
            ema_p = (
                _np_importance(d_patch, remaining)
                if ema_p is None
                else 0.3 * _np_importance(d_patch, remaining) + 0.7 * ema_p
            )
        imp = ema_c if ema_p is None else ema_p if ema_c is None else 0.7 * ema_c + 0.3 * ema_p
        np.testing.assert_allclose(entry["keep_target"], _np_solver(imp, full, pr.non_block, 0.5), rtol=1e-10)
        for key, want in (("dpsi_cls", d_cls), ("dpsi_patch", d_patch)):
            if want is None:
                assert entry[key] is None, (step, key)
            else:
                np.testing.assert_allclose(entry[key], want, rtol=1e-12, err_msg=f"{step} {key}")
        assert (entry["window_forwards_cls"], entry["window_forwards"]) == (n_cls, n_patch)
        assert _warnings(caplog) == ([NO_PATCH] if n_patch == 0 else []), step
    # an update whose window saw no BPI forward at all keeps the previous target
    previous = pr.state.kappa.clone()
    _window(pr, rng, 0, 0)
    entry = pr.update(5, rho=1.0, tau=0.05)
    assert entry["keep_target"] == previous.tolist()
    assert entry["dpsi_cls"] is None and entry["dpsi_patch"] is None
    assert _warnings(caplog) == [NO_BPI]


def test_first_update_with_only_patch_heads_uses_the_patch_importance(tiny_vit):
    pr = _pruner(tiny_vit, update_every=1, prune_ratio=0.4)
    _, d_patch = _window(pr, np.random.default_rng(6), 0, 2)
    entry = pr.update(1, rho=1.0, tau=0.05)
    want = _np_solver(_np_importance(d_patch, pr.full.numpy()), pr.full.numpy(), pr.non_block, 0.6)
    np.testing.assert_allclose(entry["keep_target"], want, rtol=1e-10)
    assert pr.state.ema_cls is None


def test_guards_off_normalise_by_the_signed_maximum(tiny_vit):
    """``guards=False`` (the reference's missing guard): with every ΔΨ < 0 the benefits are divided by the
    negative maximum, which flips their order."""
    pr = _pruner(tiny_vit, update_every=1, prune_ratio=0.5, guards=False)
    st = pr.state
    d = -np.linspace(0.1, 0.6, pr.num_blocks)
    for s, c in ((st.dpsi_cls_sum, st.dpsi_cls_count), (st.dpsi_patch_sum, st.dpsi_count)):
        s.copy_(torch.from_numpy(d))
        c.fill_(1)
    entry = pr.update(1, rho=1.0, tau=0.05)
    full = pr.full.numpy()
    want = _np_solver(_np_importance(d, full, guard=False), full, pr.non_block, 0.5)
    np.testing.assert_allclose(entry["keep_target"], want, rtol=1e-10)
    guarded = _np_solver(_np_importance(d, full, guard=True), full, pr.non_block, 0.5)
    assert not np.allclose(want, guarded)


# ---------------------------------------------------------------------------------- pruner: local masks
def _expected_masks(
    pr: P3BPruner, scores: torch.Tensor, applied: list[float], tau: float
) -> list[torch.Tensor]:
    """Every gate's mask from the threshold search of its block, in ``named_masks`` order."""
    offsets, pos = {}, 0
    for g, layer, m in pr.gates.named_masks():
        offsets[(g, layer)] = (pos, m.numel())
        pos += m.numel()
    want = {}
    for layer in range(pr.dims.layers):
        for k, kind in enumerate(("attn", "mlp")):
            names = BLOCK_GATES[kind]
            per_gate = [scores[offsets[(g, layer)][0] : sum(offsets[(g, layer)])] for g in names]
            masks, _, _ = block_masks(
                pr.dims,
                kind,
                per_gate,
                [pr.config.gate_scales.get(g, 1.0) for g in names],
                applied[2 * layer + k],
                tau,
                exact=pr.config.exact_budget,
                floor=pr.config.mask_floor,
            )
            want.update({(g, layer): m for g, m in zip(names, masks)})
    return [want[(g, layer)] for g, layer, _ in pr.gates.named_masks()]


@pytest.mark.parametrize("exact", [True, False])
def test_every_block_gets_its_own_keep_ratio_gate_scales_and_threshold_mode(tiny_vit, exact):
    keep = [0.9, 0.3, 0.7, 0.5, 0.8, 0.4]
    # a partial gate_scales dict: the gates it leaves out have scale 1
    gate_scales = {"attn_out": 2.0, "mlp_hid": 0.6}
    pr = _pruner(tiny_vit, update_every=1, handcrafted_keep=keep, gate_scales=gate_scales, exact_budget=exact)
    scores = _random_scores(pr, 8)
    _taylor_window(pr, scores)
    entry = pr.update(3, rho=0.5, tau=0.03)
    assert entry["keep_target"] == keep  # exactly the given floats
    applied = [1 - (1 - k) * 0.5 for k in keep]
    assert entry["keep_applied"] == pytest.approx(applied, abs=1e-15)
    for (g, layer, m), w in zip(pr.gates.named_masks(), _expected_masks(pr, scores, applied, 0.03)):
        torch.testing.assert_close(m.detach(), w.float(), rtol=0, atol=0, msg=f"{g} {layer}")


def test_exact_budget_changes_an_attention_block(tiny_vit):
    """The two threshold modes of the test above differ on this model, so both are pinned."""
    pr = _pruner(tiny_vit, handcrafted_keep=[0.5] * 6)
    scores = _random_scores(pr, 8)
    applied = [0.95, 0.65, 0.85, 0.75, 0.9, 0.7]
    exact = _expected_masks(pr, scores, applied, 0.03)
    pr.config.exact_budget = False
    pure = _expected_masks(pr, scores, applied, 0.03)
    assert any(not torch.equal(a, b) for a, b in zip(exact, pure))


# ---------------------------------------------------------------------------------- pruner: DDP reduction
def test_window_reduction_sums_dpsi_and_averages_taylor_over_ranks(tiny_vit, monkeypatch):
    """Two simulated ranks holding the same window: ΔΨ sums and counts double (SUM), the Taylor sums and
    count stay (mean); the previous window kept for finalisation is this rank's own."""
    import torch.distributed as dist

    world = 2
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: world)
    monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **kw: t.mul_(world))
    pr = _pruner(tiny_vit, update_every=2, prune_ratio=0.5)
    _window(pr, np.random.default_rng(9), 3, 2)
    pr.state.taylor_count.fill_(2)
    st = pr.state
    before = [t.clone() for t in _window_of(st)]
    local = pr._reduce_window()[id(st)]
    for got, want in zip(local, before[:4]):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    for got, want, factor in zip(_window_of(st), before, (2, 2, 2, 2, 1, 1)):
        torch.testing.assert_close(got, want * factor, rtol=0, atol=0)
    # the update's history reports the reduced window
    _window(pr, np.random.default_rng(9), 3, 2)
    pr.state.taylor_count.fill_(2)
    entry = pr.update(2)
    assert (entry["window_forwards_cls"], entry["window_forwards"], entry["window_steps"]) == (6, 4, 2)


# ---------------------------------------------------------------------------------- §4-§5 local masks
TINY_DIMS = Dims(hidden=48, heads=4, head_dim=12, mlp=96, layers=3, qkv_bias=True)


def test_rank_normalise_default_scale_and_index_order_among_many_ties():
    # elements below the mask floor all score exactly 0: among themselves they are ranked by index
    scores = torch.zeros(300, dtype=torch.float64)
    scores[::7] = torch.linspace(1.0, 2.0, len(range(0, 300, 7)), dtype=torch.float64)
    ties = [j for j in range(300) if j % 7]
    want = torch.empty(300, dtype=torch.float64)
    want[ties] = torch.arange(1, len(ties) + 1, dtype=torch.float64)
    want[::7] = torch.arange(len(ties) + 1, 301, dtype=torch.float64)
    torch.testing.assert_close(rank_normalise(scores), want / 300, rtol=0, atol=0)


def test_local_helpers_compute_on_the_scores_device():
    meta = torch.device("meta")
    assert rank_normalise(torch.rand(20).to(meta), 1.5).device == meta
    assert soft_mask_values(20, 8, 0.1, device=meta, floor=1e-6).device == meta
    gate_of_sorted = torch.tensor([0, 2, 1, 0, 2, 1], device=meta)
    assert kept_params_per_cut(TINY_DIMS, "attn", gate_of_sorted, [2, 2, 2]).device == meta


def test_soft_mask_values_are_the_float64_sigmoid():
    n, t, tau = 1000, 400.0, 0.1
    got = soft_mask_values(n, t, tau)
    assert got.dtype == torch.float64
    k = math.log(0.9 / 0.1)
    want = [1.0 / (1.0 + math.exp(-k * (r - t) / (n * tau + 1e-8))) for r in range(1, n + 1)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-14, atol=0)


def test_mask_floor_keeps_a_value_exactly_at_the_floor():
    plain = soft_mask_values(50, 30, 0.05)
    floor = float(plain[20])  # some value well below 0.5
    got = soft_mask_values(50, 30, 0.05, floor=floor)
    assert float(got[20]) == floor and float(got[19]) == 0.0
    torch.testing.assert_close(got[20:], plain[20:], rtol=0, atol=0)


def test_kept_params_per_cut_is_exact_for_large_blocks():
    # a ViT-g-sized MLP block: more Linear parameters than float32 represents exactly (2^24)
    d = Dims(hidden=1408, heads=16, head_dim=88, mlp=6144, layers=1, qkv_bias=True)
    sizes = [1408, 1408, 6144]
    gate_of_sorted = torch.tensor([1, 2, 0, 2, 2] + [0] * 1407 + [1] * 1407 + [2] * 6141)
    kept = kept_params_per_cut(d, "mlp", gate_of_sorted, sizes)
    assert kept.dtype == torch.float64 and kept.shape == (sum(sizes) + 1,)
    for p, (i, o, h) in {
        0: (1408, 1408, 6144),
        1: (1408, 1407, 6144),
        3: (1407, 1407, 6143),
        5: (1407, 1407, 6141),
        8960: (0, 0, 0),
    }.items():
        assert int(kept[p]) == i * h + h + h * o + o == mlp_linear_params(d, i, h, o)
    assert int(kept[1]) > 2**24 and int(kept[1]) % 2 == 1  # not a float32 number
    attn = kept_params_per_cut(
        d, "attn", torch.tensor([2, 0, 1] + [0] * 1407 + [1] * 1407 + [2] * 87), [1408, 1408, 88]
    )
    assert int(attn[0]) == attn_linear_params(d, 1408, 88, 1408) and int(attn[3]) == attn_linear_params(
        d, 1407, 87, 1407
    )


def _replica_block(
    d: Dims,
    kind: str,
    scores: list[list[float]],
    scales: list[float],
    keep: float,
    tau: float,
    exact: bool,
    tol: float,
    floor: float,
):
    """Pure-Python replica of docs/p3b.md §4-§5.2 for one block: per-gate ranks, stable concatenated order, the
    cut closest to the goal (ties: fewer pruned), exact_budget's ±1 head-dim element, soft masks, mirroring."""
    sizes = [len(s) for s in scores]
    normed = []
    for s, sc in zip(scores, scales):
        rank = {j: r + 1 for r, j in enumerate(sorted(range(len(s)), key=lambda j: (s[j], j)))}
        normed += [sc * rank[j] / len(s) for j in range(len(s))]
    gate = [g for g, n in enumerate(sizes) for _ in range(n)]
    order = sorted(range(len(normed)), key=lambda i: (normed[i], i))
    counts, c = [], list(sizes)
    for p in range(len(order) + 1):
        counts.append(tuple(c))
        if p < len(order):
            c[gate[order[p]]] -= 1
    fn = (
        (lambda c: attn_linear_params(d, c[0], c[2], c[1]))
        if kind == "attn"
        else (lambda c: mlp_linear_params(d, c[0], c[2], c[1]))
    )
    kept = [fn(c) for c in counts]
    goal = keep * kept[0]
    cut = min(range(len(kept)), key=lambda p: (abs(kept[p] - goal), p))
    best, delta = kept[cut], 0
    if exact and kind == "attn" and abs(best - goal) > tol * kept[0]:
        for dq in (-1, 1):
            alt = [fn((c[0], c[1], c[2] + dq)) if 0 <= c[2] + dq <= sizes[2] else math.inf for c in counts]
            p = min(range(len(alt)), key=lambda p: (abs(alt[p] - goal), p))
            if abs(alt[p] - goal) < abs(best - goal):
                cut, delta, best = p, dq, alt[p]
    n, k = len(order), math.log(0.9 / 0.1)
    flat = [0.0] * n
    for r, i in enumerate(order, start=1):
        v = 1.0 / (1.0 + math.exp(-k * (r - (cut + 1)) / (n * tau + 1e-8)))
        flat[i] = 0.0 if v < floor else v
    masks = [flat[sum(sizes[:g]) : sum(sizes[: g + 1])] for g in range(3)]
    q, ranks_q = masks[2], normed[sizes[0] + sizes[1] :]
    if delta > 0:  # keep the best pruned head-dim element: mirror its value across 0.5
        j = max((j for j in range(len(q)) if q[j] < 0.5), key=lambda j: (ranks_q[j], -j))
        q[j] = max(1.0 - q[j], 0.5)
    elif delta < 0:  # drop the worst kept one
        j = min((j for j in range(len(q)) if q[j] >= 0.5), key=lambda j: (ranks_q[j], j))
        v = min(1.0 - q[j], math.nextafter(0.5, 0.0))
        q[j] = 0.0 if v < floor else v
    return masks, cut, best, delta


def _block_case(seed: int, kind: str = "attn", ties: bool = False):
    g = torch.Generator().manual_seed(seed)
    names = BLOCK_GATES[kind]
    if ties:  # few distinct scores: many equal ranks within and equal Î across gates
        return [torch.randint(0, 3, (TINY_DIMS.gate_size(n),), generator=g).double() for n in names]
    return [torch.rand(TINY_DIMS.gate_size(n), generator=g, dtype=torch.float64) for n in names]


def _check_block(kind, scores, scales, keep, tau, exact, tol=0.0025, floor=1e-6):
    masks, cut, kept = block_masks(
        TINY_DIMS, kind, scores, scales, keep, tau, exact=exact, tol=tol, floor=floor
    )
    want_masks, want_cut, want_kept, delta = _replica_block(
        TINY_DIMS, kind, [s.tolist() for s in scores], scales, keep, tau, exact, tol, floor
    )
    assert (cut, kept) == (want_cut, want_kept), (kind, keep, tol)
    for m, w in zip(masks, want_masks):
        np.testing.assert_allclose(m.numpy(), w, rtol=1e-12, atol=0)
    return delta, kept


@pytest.mark.parametrize("kind", ["attn", "mlp"])
def test_block_masks_match_a_replica_with_ties_within_and_across_gates(kind):
    scales = [1.0, 1.5, 1.0] if kind == "attn" else [1.0, 1.5, 0.75]
    for seed in range(3):
        for keep in (0.15, 0.45, 0.8):
            _check_block(kind, _block_case(seed, kind, ties=True), scales, keep, 0.1, exact=False)


def test_exact_budget_takes_the_closest_of_the_threshold_and_one_head_dim_more_or_fewer():
    """``exact_budget`` against the replica over many goals: the head-dim gate moves by +1 and by -1 in
    some of them, a miss within the tolerance is left alone, and the tolerance is relative to the full block
    (a tolerance just above a miss, or exactly at it, keeps the pure threshold)."""
    scales = [1.0, 1.5, 1.0]
    deltas, at_tolerance = set(), 0
    for seed in range(4):
        scores = _block_case(seed)
        full = attn_linear_params(TINY_DIMS, 48, 12, 48)
        for keep in np.linspace(0.02, 0.99, 25):
            delta, _ = _check_block("attn", scores, scales, float(keep), 0.05, exact=True, tol=0.0025)
            deltas.add(delta)
            _, pure = _check_block("attn", scores, scales, float(keep), 0.05, exact=False)
            miss = abs(pure - float(keep) * full)
            if miss > 0:
                for tol in (miss / full * (1 + 1e-9), miss / full):
                    if tol * full >= miss:  # the pure threshold is within tolerance: nothing moves
                        at_tolerance += tol * full == miss
                        assert (
                            _check_block("attn", scores, scales, float(keep), 0.05, exact=True, tol=tol)[0]
                            == 0
                        )
    assert deltas == {-1, 0, 1} and at_tolerance > 0


def test_exact_budget_prefers_the_threshold_on_a_tie_and_never_leaves_the_gate_range():
    scales = [1.0, 1.5, 1.0]
    scores = _block_case(0)
    for keep in (0.004, 0.01, 0.999, 1.0):  # goals near an empty or a full head-dim gate
        _check_block("attn", scores, scales, keep, 0.05, exact=True, tol=0.0)
    # a goal of 18.8 parameters: best reached with the head-dim gate emptied by the -1 step (q = 0)
    masks, _, kept = block_masks(TINY_DIMS, "attn", scores, scales, 0.002, 0.05, exact=True, tol=0.0)
    assert _check_block("attn", scores, scales, 0.002, 0.05, exact=True, tol=0.0) == (-1, 19)
    assert int((masks[2] >= 0.5).sum()) == 0
    # goal 2995.5 lies exactly between the threshold's best count (3028) and the best count with one head dim
    # fewer (2963): the threshold stays
    full = attn_linear_params(TINY_DIMS, 48, 12, 48)
    keep = 2995.5 / full
    assert keep * full == 2995.5
    assert _check_block("attn", scores, scales, keep, 0.05, exact=True, tol=0.0) == (0, 3028)
    _, _, alt_kept, _ = _replica_block(
        TINY_DIMS, "attn", [s.tolist() for s in scores], scales, 2963 / full, 0.05, True, 0.0, 0.0
    )
    assert alt_kept == 2963


def test_mirrored_head_dim_element_respects_the_mask_floor():
    scales = [1.0, 1.5, 1.0]
    seen = 0
    for seed in range(6):
        for keep in np.linspace(0.1, 0.9, 9):
            masks, _, _ = block_masks(
                TINY_DIMS, "attn", _block_case(seed), scales, float(keep), 0.2, floor=0.45
            )
            values = torch.cat(masks)
            assert not bool(((values > 0) & (values < 0.45)).any())
            delta, _ = _check_block(
                "attn", _block_case(seed), scales, float(keep), 0.2, exact=True, floor=0.45
            )
            seen += delta == -1
    assert seen > 0


def test_shift_gate_mirrors_the_boundary_element():
    ranks = _f64(0.1, 0.6, 0.4, 0.9, 0.7)
    # +1: the best-ranked pruned element (M < 0.5; the threshold element at exactly 0.5 is kept) comes back
    m = _f64(0.2, 0.5, 0.45, 0.9, 0.7)
    _shift_gate(m, ranks, 1)
    assert m.tolist() == [0.2, 0.5, 0.55, 0.9, 0.7]
    # -1: the worst-ranked kept element goes, to just below 0.5 ...
    m = _f64(0.2, 0.5, 0.45, 0.9, 0.7)
    _shift_gate(m, ranks, -1)
    assert m.tolist() == [0.2, math.nextafter(0.5, 0.0), 0.45, 0.9, 0.7]
    # ... or to its mirror image when that is lower, and to 0 below the floor
    m = _f64(0.2, 0.7, 0.45, 0.9, 0.75)
    _shift_gate(m, ranks, -1)
    assert m.tolist() == pytest.approx([0.2, 0.3, 0.45, 0.9, 0.75], abs=1e-15)
    m = _f64(0.2, 0.7, 0.45, 0.9, 0.75)
    _shift_gate(m, ranks, -1, floor=0.35)
    assert m.tolist() == [0.2, 0.0, 0.45, 0.9, 0.75]
    m = _f64(0.2, 0.7, 0.45, 0.9, 0.75)
    _shift_gate(m, ranks, -1, floor=1.0 - 0.7)  # a mirrored value exactly at the floor stays
    assert m.tolist() == [0.2, 1.0 - 0.7, 0.45, 0.9, 0.75]


# ---------------------------------------------------------------------------------- pruner construction
def test_pruner_wires_the_config_into_gates_heads_and_estimators(tiny_vit, images):
    with torch.no_grad():
        dense = tiny_vit(pixel_values=images).logits
    cfg = P3BConfig(
        prune_ratio=0.4,
        gate_mode="hooks",
        bpi_mode="reference",
        bpi_frozen_bn=True,
        bpi_subbatch=0.5,
        bpi_every=3,
        bpi_shadows=["0.25:2", "1:1:7"],
    ).resolved()
    pr = P3BPruner(tiny_vit, cfg)
    lm = pruner_module.locate(tiny_vit).layers[0]
    assert "forward" not in lm.ln_before.__dict__ and lm.ln_before._forward_hooks  # hook gates, not fused
    assert type(pr.bpi) is BPIHeads and pr.bpi.frozen_bn and tiny_vit.p3b_bpi is pr.bpi
    driver = pr.estimators[0]
    assert (driver.name, driver.heads, driver.subbatch, driver.every, driver.state) == (
        "driver",
        pr.bpi,
        0.5,
        3,
        pr.state,
    )
    assert [(s.name, s.subbatch, s.every) for s in pr.shadows] == [("0.25:2", 0.25, 2), ("1:1:7", 1.0, 1)]
    assert [s.heads.output_key for s in pr.shadows] == ["p3b_shadow0", "p3b_shadow1"]  # one output per shadow
    assert list(tiny_vit.p3b_shadows) == [s.heads for s in pr.shadows]
    for s in pr.shadows:
        assert isinstance(s.heads, GroupedBPIHeads) and s.heads.frozen_bn and not s.heads.active
        assert s.state.taylor_sum.numel() == 0 and torch.equal(s.state.remaining, pr.full)
    # the unseeded shadow starts from the driver's weights (its own copy), the seeded one from others
    grouped = GroupedBPIHeads.from_heads(pr.bpi)
    for name, w in grouped.state_dict().items():
        assert torch.equal(pr.shadows[0].heads.state_dict()[name], w), name
    assert any(
        not torch.equal(pr.shadows[1].heads.state_dict()[n], w) for n, w in grouped.state_dict().items()
    )
    assert pr.state.taylor_sum.numel() == sum(m.numel() for _, _, m in pr.gates.named_masks())
    assert pr.non_block == float(non_block_params(tiny_vit))
    pr.schedule = Schedule(0, 10, 40, 1)
    tiny_vit._name_or_path = "org/tiny-vit"
    tiny_vit.config._name_or_path = "org/tiny-vit"
    assert pr.width_plan().meta == {
        "method": "p3b",
        "prune_ratio": 0.4,
        "base_model_name_or_path": "org/tiny-vit",
    }
    # detach removes every hook and attached module: the plain model computes what it did before
    pr.detach()
    assert pr.handles == [] and not any(n.startswith("p3b_") for n in tiny_vit._modules)
    assert not any(
        m._forward_hooks or m._forward_pre_hooks or "forward" in m.__dict__ for m in tiny_vit.modules()
    )
    with torch.no_grad():
        torch.testing.assert_close(tiny_vit(pixel_values=images).logits, dense, rtol=0, atol=0)


def test_pruner_fused_grouped_frozen_and_block_only_variants(tiny_vit, tiny_deit_teacher):
    pr = _pruner(tiny_vit, prune_ratio=0.0, block_param_only=True, bpi_shadows=["0.5:2"])
    assert "forward" in pruner_module.locate(tiny_vit).layers[0].ln_before.__dict__  # fused gates
    assert isinstance(pr.bpi, GroupedBPIHeads) and not pr.bpi.frozen_bn
    assert (pr.estimators[0].subbatch, pr.estimators[0].every) == (
        pr.config.bpi_subbatch,
        pr.config.bpi_every,
    )
    assert pr.non_block == 0.0 and pr.plan is None
    # a grouped driver's shadow gets its own copy of the driver's weights and buffers
    shadow = pr.shadows[0].heads
    for (name, a), b in zip(pr.bpi.state_dict().items(), shadow.state_dict().values()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr(), name
    pr.detach()
    assert not any(
        m._forward_hooks or m._forward_pre_hooks or "forward" in m.__dict__ for m in tiny_vit.modules()
    )
    frozen = _pruner(tiny_deit_teacher, frozen=True, reference=True)
    assert frozen.gates is None and frozen.state.taylor_sum.numel() == 0
    assert not any(
        p.requires_grad for n, p in tiny_deit_teacher.named_parameters() if not n.startswith("p3b_")
    )
    assert frozen.non_block == float(non_block_params(tiny_deit_teacher, reference=True))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(prune_ratio=1.0), "prune_ratio must be in [0, 1), got 1.0."),
        (dict(prune_ratio=-0.1), "prune_ratio must be in [0, 1), got -0.1."),
        (
            dict(handcrafted_keep=[0.5] * 5),
            "handcrafted_keep needs 6 values (attn0, mlp0, attn1, ...), got 5.",
        ),
    ],
)
def test_pruner_rejects_bad_ratios(tiny_vit, kwargs, message):
    with pytest.raises(P3BError) as e:
        P3BPruner(tiny_vit, P3BConfig(**kwargs).resolved())
    assert str(e.value) == message


def test_non_block_count_of_the_reference_leaves_out_distillation_token_and_head(
    tiny_vit, tiny_deit, tiny_deit_teacher
):
    c, k = 48, 7
    assert non_block_params(tiny_vit, reference=True) == non_block_params(tiny_vit)
    assert non_block_params(tiny_vit.config, reference=True) == non_block_params(tiny_vit.config)
    assert non_block_params(tiny_deit, reference=True) == non_block_params(tiny_deit) - c
    assert non_block_params(tiny_deit.config, reference=True) == non_block_params(tiny_deit.config) - c
    exact = non_block_params(tiny_deit_teacher)
    assert non_block_params(tiny_deit_teacher, reference=True) == exact - c - (c * k + k)
    assert non_block_params(tiny_deit_teacher) == non_block_params(tiny_deit_teacher, False)


def test_dims_and_counts_follow_qkv_bias():
    from transformers import ViTConfig

    with_bias = Dims.from_config(ViTConfig(hidden_size=48, num_attention_heads=4, intermediate_size=96))
    no_bias = Dims.from_config(
        ViTConfig(hidden_size=48, num_attention_heads=4, intermediate_size=96, qkv_bias=False)
    )
    assert with_bias.qkv_bias and not no_bias.qkv_bias
    assert attn_linear_params(with_bias, 48, 12, 48) - attn_linear_params(no_bias, 48, 12, 48) == 3 * 48
    assert attn_linear_params(no_bias, 48, 12, 48) == 48 * 3 * 48 + 48 * 48 + 48
    assert block_params(no_bias).dtype == torch.float64


def test_handcrafted_pruner_has_no_heads_and_checkpoints_its_gates(tiny_vit):
    import copy

    twin, third = copy.deepcopy(tiny_vit), copy.deepcopy(tiny_vit)
    pr = _pruner(tiny_vit, handcrafted_keep=[0.5] * 6)
    assert pr.bpi is None and pr.estimators == [] and not hasattr(tiny_vit, "p3b_bpi")
    with torch.no_grad():
        pr.gates.mask("attn_qkv", 1).fill_(0.25)
    saved = pr.state_tensors()
    assert saved and all(k.startswith("gates.") for k in saved)
    other = _pruner(twin, handcrafted_keep=[0.5] * 6)
    other.load_state_tensors(saved)
    assert float(other.gates.mask("attn_qkv", 1).detach().min()) == 0.25
    full = _pruner(third, prune_ratio=0.5)
    keys = full.state_tensors()
    assert any(k.startswith("bpi.") for k in keys) and any(k.startswith("gates.") for k in keys)


def test_hard_gates_keep_exactly_half_and_pass_the_straight_through_value(tiny_vit):
    pr = _pruner(tiny_vit, handcrafted_keep=[0.5] * 6)
    gates = pr.gates
    assert gates.hard is False and gates.keep_in_graph is False
    m = gates.mask("mlp_hid", 0)
    with torch.no_grad():
        m.fill_(0.3)
        m[:4] = torch.tensor([0.5, 0.49, 0.8, 0.0])
    gates.hard, gates.keep_in_graph = True, True
    eff = gates.effective("mlp_hid", 0)
    assert eff[:4].tolist() == [1.0, 0.0, 1.0, 0.0] and float(eff[4:].detach().sum()) == 0.0
    eff.sum().backward()
    assert torch.equal(m.grad, torch.ones_like(m))  # the gradient of the identity reaches the mask


# ---------------------------------------------------------------------------------- state: device, checkpoint
def test_state_lives_on_the_given_device_and_round_trips_a_checkpoint(tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # nothing may depend on files in the working directory
    meta = P3BState.fresh(4, 6, _f64(10.0, 20.0, 10.0, 20.0), device="meta")
    assert {
        t.device.type
        for t in (
            meta.dpsi_cls_sum,
            meta.dpsi_patch_sum,
            meta.dpsi_count,
            meta.dpsi_cls_count,
            meta.taylor_sum,
            meta.taylor_count,
            meta.remaining,
        )
    } == {"meta"}
    moved = _state_with_window(0).to("meta")
    assert {
        getattr(moved, n).device.type for n in ("dpsi_cls_sum", "taylor_sum", "remaining", "dpsi_cls_count")
    } == {"meta"} and moved.ema_cls is None
    st = _state_with_window(1)
    st.roll_window()
    st.ema_cls, st.kappa = _f64(1.0, 2.0, 3.0, 4.0), _f64(0.5, 0.6, 0.7, 0.8)
    st.num_updates, st.finalized, st.finalize_step, st.skipped_taylor_steps = 3, True, 12, 2
    st.last_taylor_step, st.train_forwards, st.history = 11, 40, [{"step": 4}]
    st.save(tmp_path, {"gates.x": torch.ones(2)}, {"extra": 1})
    tensors, meta_json = P3BState.read(tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "p3b_state.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
    assert meta_json["extra"] == 1 and torch.equal(tensors["gates.x"], torch.ones(2))
    back = P3BState.fresh(4, 6, _f64(1.0, 1.0, 1.0, 1.0))
    back.load(tensors, meta_json, "cpu")
    for name in (
        "prev_dpsi_cls_sum",
        "prev_dpsi_patch_sum",
        "prev_dpsi_count",
        "prev_dpsi_cls_count",
        "prev_taylor_sum",
        "prev_taylor_count",
        "ema_cls",
        "kappa",
        "remaining",
        "taylor_sum",
    ):
        torch.testing.assert_close(getattr(back, name), getattr(st, name), rtol=0, atol=0, msg=name)
    assert back.ema_patch is None
    assert (
        back.num_updates,
        back.finalized,
        back.finalize_step,
        back.skipped_taylor_steps,
        back.last_taylor_step,
        back.train_forwards,
        back.history,
    ) == (3, True, 12, 2, 11, 40, [{"step": 4}])
    # a checkpoint from before the class heads had their own count uses the patch count for both
    tensors.pop("state.dpsi_cls_count")
    tensors.pop("state.prev_dpsi_cls_count")
    meta_json.pop("train_forwards")
    back.load(tensors, meta_json, "cpu")
    torch.testing.assert_close(back.dpsi_cls_count, back.dpsi_count, rtol=0, atol=0)
    torch.testing.assert_close(back.prev_dpsi_cls_count, st.prev_dpsi_count, rtol=0, atol=0)
    assert back.train_forwards == 0
    on_meta = P3BState.fresh(4, 6, _f64(1.0, 1.0, 1.0, 1.0))
    on_meta.load(tensors, meta_json, "meta")
    assert on_meta.kappa.device.type == "meta"
    (tmp_path / "p3b_state.json").unlink()  # one of the two files missing is not a P3B checkpoint either
    with pytest.raises(P3BError) as e:
        P3BState.read(tmp_path)
    assert str(e.value) == (
        f"{tmp_path} has no p3b_state.safetensors/p3b_state.json: it was not written by "
        "P3BTrainer. Resume P3B runs only from their own checkpoints."
    )


# ---------------------------------------------------------------------------------- CLI -> P3BConfig
def _cli(argv: list[str]):
    """``p3b-hf prune --method p3b ARGV`` through the real parser -> (namespace, job)."""
    from p3b_hf.cli import build_parser
    from p3b_hf.commands.prune import job_from_args

    args = build_parser("prune").parse_args(
        ["prune", "--model", "m", "--dataset", "d", "--output-dir", "o", "--method", "p3b", *argv]
    )
    return args, job_from_args(args)


def _config(job) -> P3BConfig:
    return resolve_config(job.method_options, job.prune.prune_ratio)


def test_cli_flags_reach_the_config():
    _, job = _cli(
        [
            "--prune-ratio",
            "0.3",
            "--update-every",
            "7",
            "--prune-start-epoch",
            "1.5",
            "--prune-sparse-epoch",
            "4",
            "--prune-finalize-epoch",
            "9",
            "--bpi-lr",
            "0.001",
            "--mask-lr",
            "0.01",
            "--gate-scales",
            "attn_out:2, mlp_hid:0.5",
            "--pr-gamma",
            "0.3",
            "--pr-alpha",
            "0.6",
            "--tau-max",
            "0.2",
            "--tau-min",
            "0.01",
            "--mask-floor",
            "0.001",
            "--block-imp-scale",
            "8",
            "--block-param-only",
            "--reference",
            "--layernorm-mode",
            "full_stats",
            "--bpi-mode",
            "grouped",
            "--bpi-subbatch",
            "0.5",
            "--bpi-every",
            "2",
            "--gate-mode",
            "fused",
            "--bpi-shadow",
            "0.25:4",
            "1:1:3",
        ]
    )
    cfg = _config(job)
    got = {
        k: getattr(cfg, k)
        for k in (
            "prune_ratio",
            "update_every",
            "prune_start_epoch",
            "prune_sparse_epoch",
            "prune_finalize_epoch",
            "bpi_lr",
            "mask_lr",
            "train_masks",
            "pr_gamma",
            "pr_alpha",
            "tau_max",
            "tau_min",
            "mask_floor",
            "block_imp_scale",
            "block_param_only",
            "handcrafted_keep",
            "frozen",
            "reference",
            "layernorm_mode",
            "bpi_mode",
            "bpi_subbatch",
            "bpi_every",
            "gate_mode",
            "bpi_shadows",
            "save_dir",
        )
    }
    assert got == dict(
        prune_ratio=0.3,
        update_every=7,
        prune_start_epoch=1.5,
        prune_sparse_epoch=4.0,
        prune_finalize_epoch=9.0,
        bpi_lr=0.001,
        mask_lr=0.01,
        train_masks=True,
        pr_gamma=0.3,
        pr_alpha=0.6,
        tau_max=0.2,
        tau_min=0.01,
        mask_floor=0.001,
        block_imp_scale=8.0,
        block_param_only=True,
        handcrafted_keep=None,
        frozen=False,
        reference=True,
        layernorm_mode="full_stats",
        bpi_mode="grouped",
        bpi_subbatch=0.5,
        bpi_every=2,
        gate_mode="fused",
        bpi_shadows=["0.25:4", "1:1:3"],
        save_dir=None,
    )
    assert cfg.gate_scales == {**DEFAULT_GATE_SCALES, "attn_out": 2.0, "mlp_hid": 0.5}
    assert {type(v) for v in (cfg.bpi_lr, cfg.mask_lr, cfg.pr_gamma, cfg.tau_max, cfg.mask_floor)} == {float}


def test_cli_defaults_and_the_other_variants():
    _, job = _cli(["--prune-ratio", "0.5"])
    cfg = _config(job)
    assert (
        cfg.update_every,
        cfg.prune_start_epoch,
        cfg.bpi_lr,
        cfg.mask_lr,
        cfg.train_masks,
        cfg.pr_gamma,
        cfg.pr_alpha,
        cfg.tau_max,
        cfg.tau_min,
        cfg.mask_floor,
        cfg.block_imp_scale,
        cfg.block_param_only,
        cfg.reference,
        cfg.layernorm_mode,
        cfg.gate_scales,
        cfg.bpi_mode,
        cfg.bpi_subbatch,
        cfg.bpi_every,
        cfg.gate_mode,
        cfg.exact_budget,
    ) == (
        None,
        None,
        5e-4,
        None,
        False,
        0.2,
        0.5,
        0.1,
        0.0,
        MASK_FLOOR,
        10.0,
        False,
        False,
        "full_stats",
        DEFAULT_GATE_SCALES,
        "grouped",
        0.25,
        4,
        "fused",
        True,
    )
    assert (job.kd.kd_alpha, job.kd.kd_temperature, job.kd.kd_kind, job.kd.kd_reduction) == (
        0.5,
        1.0,
        "soft",
        None,
    )
    _, job = _cli(["--handcrafted-keep", "0.5,0.25,1"])
    cfg = _config(job)
    assert (cfg.handcrafted_keep, cfg.prune_ratio) == ([0.5, 0.25, 1.0], 0.0)
    _, job = _cli(["--frozen"])
    assert _config(job).frozen
    _, job = _cli(
        [
            "--layernorm-mode",
            "subset_stats",
            "--bpi-mode",
            "reference",
            "--gate-mode",
            "hooks",
            "--prune-ratio",
            "0.2",
        ]
    )
    cfg = _config(job)
    assert (cfg.layernorm_mode, cfg.bpi_mode, cfg.gate_mode) == ("subset_stats", "reference", "hooks")


def test_cli_without_a_budget_is_refused():
    _, job = _cli([])
    with pytest.raises(P3BError) as e:
        _config(job)
    assert str(e.value) == (
        "--method p3b needs --prune-ratio (fraction of whole-model parameters, e.g. 0.5), or "
        "--handcrafted-keep / --frozen."
    )


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["--handcrafted-keep", "0.5,x"],
            "--handcrafted-keep must be comma-separated floats: could not convert string to float: 'x'.",
        ),
        (
            ["--prune-ratio", "0.5", "--gate-scales", "attn_out=2"],
            "--gate-scales item 'attn_out=2' is not 'gate:value' "
            "with gate in ['attn_in', 'attn_out', 'attn_qkv', 'mlp_hid', 'mlp_in', 'mlp_out'].",
        ),
        (
            ["--prune-ratio", "0.5", "--gate-scales", "head:2"],
            "--gate-scales item 'head:2' is not 'gate:value' with gate "
            "in ['attn_in', 'attn_out', 'attn_qkv', 'mlp_hid', 'mlp_in', 'mlp_out'].",
        ),
    ],
)
def test_cli_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        _cli(argv)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--gate-mode", "x"],
        ["--bpi-mode", "x"],
        ["--layernorm-mode", "x"],
        ["--kd-kind", "x"],
        ["--kd-reduction", "x"],
    ],
)
def test_cli_rejects_unknown_choices(argv, capsys):
    with pytest.raises(SystemExit):
        _cli(argv)
    assert "invalid choice: 'x'" in capsys.readouterr().err


def test_gate_scales_parsing():
    assert parse_gate_scales(None) == DEFAULT_GATE_SCALES and parse_gate_scales("") == DEFAULT_GATE_SCALES
    assert parse_gate_scales(" attn_in:0.5,mlp_out:3") == {
        **DEFAULT_GATE_SCALES,
        "attn_in": 0.5,
        "mlp_out": 3.0,
    }


# ---------------------------------------------------------------------------------- training helpers
def test_logits_of_dicts_model_outputs_and_tuples():
    t = torch.randn(2, 3)
    assert logits_of({"logits": t}) is t
    assert logits_of(DeiTForImageClassificationWithTeacherOutput(logits=t)) is t
    assert logits_of((t, torch.zeros(1))) is t


def test_teacher_label_check(tiny_vit):
    from transformers import ViTConfig, ViTForImageClassification

    from p3b_hf.training import check_teacher_labels

    def model(k: int, names: list[str] | None = None) -> ViTForImageClassification:
        cfg = ViTConfig(
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=8,
            image_size=8,
            patch_size=4,
            num_labels=k,
        )
        if names is not None:
            cfg.id2label = dict(enumerate(names))
        return ViTForImageClassification(cfg)

    check_teacher_labels(model(3), model(3))  # generic LABEL_i names on both sides
    check_teacher_labels(model(3, ["a", "b", "c"]), model(3, ["a", "b", "c"]))
    with pytest.raises(P3BError) as e:
        check_teacher_labels(model(4), model(3))
    assert str(e.value) == (
        "The KD teacher predicts 4 classes but the model 3: the teacher must be fine-tuned on the "
        "same target data set (e.g. `p3b-hf finetune --new-head` on the dense model) before it "
        "can teach."
    )
    for teacher, student, diff in (
        (["a", "x", "c"], ["a", "b", "c"], "class 1: teacher 'x', model 'b'"),
        (None, ["a", "b", "c"], "class 0: teacher 'LABEL_0', model 'a'"),
    ):
        with pytest.raises(P3BError) as e:
            check_teacher_labels(model(3, teacher), model(3, student))
        assert str(e.value) == (
            f"The KD teacher's labels differ from the model's ({diff}); use a teacher fine-tuned "
            "on this data set with the same label order."
        )


def test_shadow_specs_parse():
    from p3b_hf.methods.p3b.estimator import parse_shadow_spec

    assert parse_shadow_spec("0.25") == (0.25, 1, None)
    assert parse_shadow_spec("0.25:") == (0.25, 1, None)
    assert parse_shadow_spec("0.5:3") == (0.5, 3, None)
    assert parse_shadow_spec("1:1:7") == (1.0, 1, 7)
    with pytest.raises(P3BError) as e:
        parse_shadow_spec("1:1:7:8")
    assert (
        str(e.value)
        == "BPI shadow '1:1:7:8' is not 'SUBBATCH:EVERY[:SEED]' (e.g. 0.0625:1, 0.25:4 or 1:1:1)."
    )


def test_fine_tune_trainer_sets_up_teacher_kd_and_step_timer(tmp_path, tiny_vit):
    from transformers import TrainerCallback, TrainingArguments, ViTConfig, ViTForImageClassification

    from p3b_hf.training import FineTuneTrainer, StepTimer

    assert StepTimer().summary() == {"steps": 0}
    teacher = ViTForImageClassification(
        ViTConfig(**{**tiny_vit.config.to_dict(), "num_hidden_layers": 1})
    ).train()
    mine = TrainerCallback()
    args = TrainingArguments(str(tmp_path), report_to=[], use_cpu=True)
    tr = FineTuneTrainer(tiny_vit, args, teacher=teacher, callbacks=[mine])
    assert (
        tr.args is args
        and tr.kd == KDConfig(reduction="deit")
        and tr.teacher is teacher
        and not teacher.training
    )
    assert not any(p.requires_grad for p in teacher.parameters())
    assert tr._nonfinite_losses == 0 and tr.model_accepts_loss_kwargs is False
    handlers = tr.callback_handler.callbacks
    assert (
        tr.step_timer in handlers
        and mine in handlers
        and handlers.index(tr.step_timer) < handlers.index(mine)
    )
    plain = FineTuneTrainer(tiny_vit, args)
    assert plain.kd is None and plain.teacher is None
    own = FineTuneTrainer(tiny_vit, args, teacher=teacher, kd=KDConfig(alpha=0.9))
    assert own.kd.alpha == 0.9


def test_step_timer_summary_of_a_run(monkeypatch):
    from p3b_hf import training

    clock = iter(float(x) for x in range(1000))
    monkeypatch.setattr(training.time, "perf_counter", lambda: next(clock))
    rss = iter(range(100, 200))
    monkeypatch.setattr(training, "_rss_mb", lambda: float(next(rss)))
    timer = training.StepTimer()
    timer.on_step_end(None, None, None)  # no step begun: nothing recorded
    assert timer.times == [] and timer.rss == []
    for _ in range(15):
        timer.on_step_begin(None, None, None)
        timer.on_step_end(None, None, None)
    assert timer.times == [1.0] * 15 and timer._t0 is None
    timer.times = [float(j + 1) for j in range(15)]  # step j took j + 1 seconds
    s = timer.summary()
    assert s == {
        "steps": 15,
        "first_10pct_s": 1.0,
        "last_10pct_s": 15.0,
        "last_vs_first": 15.0,
        "tenths_mean_s": [1.0, 2.5, 4.0, 5.5, 7.0, 8.5, 10.0, 11.5, 13.0, 14.5],
        "rss_mib_tenths": [100.0, 102.0, 103.0, 105.0, 106.0, 108.0, 109.0, 111.0, 112.0, 114.0],
    }
    timer.times = [float(j + 1) for j in range(20)]
    timer.rss = [float(j) for j in range(20)]
    s = timer.summary()
    assert (s["first_10pct_s"], s["last_10pct_s"], s["last_vs_first"]) == (1.5, 19.5, 13.0)
    assert s["tenths_mean_s"] == [1.5 + 2 * i for i in range(10)] and s["rss_mib_tenths"] == [
        float(2 * i + 1) for i in range(10)
    ]
    timer.times = [0.0] * 20
    assert timer.summary()["last_vs_first"] is None


def test_block_masks_report_what_their_hard_masks_keep():
    """Over many goals, including ones that only a head-dim gate emptied beyond its range would reach: the
    returned kept count is the parameter count of the hard masks (> 0.5, or exactly 0.5 at the threshold), and
    every gate keeps between 0 and all of its elements (the exact-budget search never leaves the gate range)."""
    from p3b_hf.methods.p3b.local import _kept

    scales = [1.0, 1.5, 1.0]
    for seed in range(6):
        scores = _block_case(seed)
        # scores that put every head-dim element first in the pruning order: its gate empties early
        low_qkv = [scores[0] + 1.0, scores[1] + 1.0, scores[2] * 1e-3]
        for case in (scores, low_qkv):
            for keep in [*np.linspace(0.0005, 0.05, 25), *np.linspace(0.9, 1.0, 11)]:
                masks, _, kept = block_masks(
                    TINY_DIMS, "attn", case, scales, float(keep), 0.05, exact=True, tol=0.0
                )
                counts = [int((m >= 0.5).sum()) for m in masks]
                assert all(0 <= c <= m.numel() for c, m in zip(counts, masks))
                want = _kept(TINY_DIMS, "attn", [torch.tensor(float(c), dtype=torch.float64) for c in counts])
                assert kept == float(want), (seed, keep, counts)


# ---------------------------------------------------------------------------------- issue 24 §3: three survivors
def _scored_pruner(model: torch.nn.Module, **kw) -> P3BPruner:
    """A handcrafted-keep pruner (no heads) with one Taylor window of random scores."""
    pr = _pruner(model, handcrafted_keep=[0.5, 0.3, 0.7, 0.4, 0.6, 0.5], **kw)
    _taylor_window(pr, _random_scores(pr, 4))
    return pr


def test_scheduled_updates_use_the_schedules_tau_not_tau_max(tiny_vit):
    """An update without explicit τ takes τ from the schedule: τ_max while sparsifying, then linearly down to
    τ_min at S2 (docs/p3b.md §5.3). With τ_max everywhere (a surviving mutant) masks stay soft at S2 and the
    logits jump at finalisation."""
    pr = _scored_pruner(tiny_vit)
    pr.schedule = Schedule(0, 4, 12, 1, tau_max=0.1, tau_min=0.0)
    scores = pr.state.taylor_sum.clone()
    entry = pr.update(8)  # halfway through sharpening: τ = 0.05, ρ = 1
    assert entry["tau"] == pytest.approx(0.05, abs=1e-15) and entry["rho"] == 1.0
    want = _expected_masks(pr, scores, [float(k) for k in entry["keep_applied"]], 0.05)
    soft_max = _expected_masks(pr, scores, [float(k) for k in entry["keep_applied"]], 0.1)
    assert any(not torch.equal(a, b) for a, b in zip(want, soft_max))  # τ matters on these scores
    for (g, layer, m), w in zip(pr.gates.named_masks(), want):
        torch.testing.assert_close(m.detach(), w.float(), rtol=0, atol=0, msg=f"{g} {layer}")
    _taylor_window(pr, scores)
    last = pr.update(12)  # S2: τ = τ_min = 0 -> a step function: 0 / 1, the element at the cut 0.5
    assert last["tau"] == 0.0
    values = torch.cat([m.detach().reshape(-1) for _, _, m in pr.gates.named_masks()])
    assert bool(((values == 0) | (values == 1) | (values == 0.5)).all()), "soft masks left at S2"


def test_harden_keeps_a_mask_of_exactly_one_half(tiny_vit):
    """``harden`` uses the same ``m >= 0.5`` as the hard forward, the kept widths and the plan: the element
    at the threshold (exactly 0.5, the sigmoid at the cut) is kept. ``>`` dropped one element per block."""
    pr = _scored_pruner(tiny_vit)
    gates = pr.gates
    m = gates.mask("mlp_hid", 1)
    with torch.no_grad():
        m.fill_(0.2)
        m[:5] = torch.tensor([0.5, 0.4999, 0.75, 1.0, 0.0])
    widths = gates.kept_widths()
    assert widths[1]["mlp_hid"] == 3 and gates.kept_indices("mlp_hid", 1) == [0, 2, 3]
    gates.harden()
    assert m.detach()[:5].tolist() == [1.0, 0.0, 1.0, 1.0, 0.0] and float(m.detach()[5:].sum()) == 0.0
    assert gates.kept_widths() == widths
    # and on masks an update really makes: hardening changes no kept width
    pr.schedule = Schedule(0, 4, 12, 1)
    pr.update(8)
    before = gates.kept_widths()
    at_half = sum(int((m.detach() == 0.5).sum()) for _, _, m in gates.named_masks())
    assert at_half > 0  # the threshold element sits at exactly 0.5
    gates.harden()
    assert gates.kept_widths() == before


def test_frozen_masks_under_ddp_drop_their_gradients_before_every_step(tiny_vit, tmp_path, monkeypatch):
    """After finalisation under DDP the frozen masks stay in the graph (``keep_in_graph``), so a backward gives
    them gradients; the trainer's per-step hook must drop them, or an optimizer holding the masks
    (``train_masks``) moves the hard masks after S2."""
    from p3b_tiny_run import synthetic_dataset, training_args

    from p3b_hf.trainer import P3BTrainer

    monkeypatch.setattr(pruner_module, "world_size", lambda: 2)  # finalize as on 2 ranks (no process group)
    trainer = P3BTrainer(
        model=tiny_vit,
        args=training_args(str(tmp_path), per_device_train_batch_size=4),
        train_dataset=synthetic_dataset(8),
        p3b=P3BConfig(prune_ratio=0.5, train_masks=True, mask_lr=0.1, save_dir=None),
    )
    pr = trainer.pruner
    with torch.no_grad():
        for _, _, m in pr.gates.named_masks():
            m.copy_(torch.rand(m.shape, generator=torch.Generator().manual_seed(m.numel())))
    pr.finalize(5)
    assert pr.gates.keep_in_graph and pr.gates.hard
    hard = [m.detach().clone() for _, _, m in pr.gates.named_masks()]
    opt = trainer.create_optimizer()
    assert any(g["p3b_group"] == "masks" for g in opt.param_groups)
    tiny_vit.train()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tiny_vit(pixel_values=x).logits.square().mean().backward()
    assert all(m.grad is not None for _, _, m in pr.gates.named_masks())  # in the graph, as DDP needs
    trainer.before_clip()
    assert all(m.grad is None for _, _, m in pr.gates.named_masks())
    opt.step()
    for (g, layer, m), h in zip(pr.gates.named_masks(), hard):
        assert torch.equal(m.detach(), h), f"{g} {layer} moved after finalisation"


def test_per_step_hook_averages_head_grads_once_then_reads_taylor(tiny_vit, tmp_path, monkeypatch):
    """The trainer's once-per-optimizer-step hook (before clipping): average the BPI heads' gradients over the
    ranks exactly once per step (DDP's reducer ignores the heads), then sync their BN buffers, then add the
    step's Taylor scores; after finalisation neither the heads nor the window are touched."""
    from p3b_tiny_run import synthetic_dataset, training_args

    from p3b_hf.methods.p3b import trainer as trainer_module
    from p3b_hf.trainer import P3BTrainer

    trainer = P3BTrainer(
        model=tiny_vit,
        args=training_args(str(tmp_path), per_device_train_batch_size=4),
        train_dataset=synthetic_dataset(8),
        p3b=P3BConfig(prune_ratio=0.5, save_dir=None),
    )
    pr = trainer.pruner
    pr.schedule = Schedule(1, 4, 8, 1)
    reduced, synced = [], []
    monkeypatch.setattr(trainer_module, "all_reduce_grads_", lambda ps: reduced.append(list(ps)) or len(ps))
    monkeypatch.setattr(pr, "sync_heads", lambda buffers_only=False: synced.append(buffers_only))
    tiny_vit.train()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tiny_vit(pixel_values=x).logits.square().mean().backward()
    grads = torch.cat([m.grad.reshape(-1) for _, _, m in pr.gates.named_masks()]).double()
    masks = torch.cat([m.detach().reshape(-1) for _, _, m in pr.gates.named_masks()]).double()
    trainer.state.global_step = 0  # before S0: heads averaged, no Taylor score
    trainer.before_clip()
    trainer.before_clip()  # the same step again (on_pre_optimizer_step): nothing twice
    assert len(reduced) == 1 and synced == [True]
    assert [id(p) for p in reduced[0]] == [id(p) for p in pr.head_parameters()] and reduced[0]
    assert int(pr.state.taylor_count.item()) == 0
    trainer.state.global_step = 1  # accumulating, no loss scale
    trainer.before_clip()
    assert int(pr.state.taylor_count.item()) == 1 and pr.state.last_taylor_step == 1
    torch.testing.assert_close(pr.state.taylor_sum, (masks * grads) ** 2, rtol=1e-12, atol=0)
    trainer.state.global_step = 2  # accumulating, under an fp16 loss scale of 4 (divided out)

    class Scaler:
        def get_scale(self) -> float:
            return 4.0

        def is_enabled(self) -> bool:
            return True

    monkeypatch.setattr(trainer.accelerator, "scaler", Scaler(), raising=False)
    trainer.before_clip()
    trainer.before_clip()
    assert len(reduced) == 3 and synced == [True] * 3
    assert int(pr.state.taylor_count.item()) == 2 and pr.state.last_taylor_step == 2
    want = (masks * grads) ** 2 + (masks * grads / 4) ** 2
    torch.testing.assert_close(pr.state.taylor_sum, want, rtol=1e-12, atol=0)
    pr.finalize(3)
    trainer.state.global_step = 3
    trainer.before_clip()
    assert len(reduced) == 3 and int(pr.state.taylor_count.item()) == 2


def test_bpi_logits_errors_name_the_cause(tiny_vit):
    """Asking for logits no active forward produced, or a forward that tapped the residual stream the wrong
    number of times, fail with a message that says so (not with a shape error later)."""
    pr = _pruner(tiny_vit, prune_ratio=0.5)
    with pytest.raises(
        RuntimeError, match=r"^No BPI logits: the heads were not active during the last forward"
    ):
        pr.bpi.pop_logits()
    pr.bpi.active = True
    pr.bpi._taps = [torch.zeros(2, 17, 64)] * 3
    with pytest.raises(
        RuntimeError, match=r"^BPI expected 7 residual taps, got 3; was the model called twice"
    ):
        pr.bpi._attach(tiny_vit, (), {})


def test_bpi_heads_are_named_for_ddp_to_ignore_and_released_by_detach(tiny_vit):
    """Every BPI (and shadow) head parameter and buffer -- and nothing else -- is in the model's
    ``_ddp_params_and_buffers_to_ignore`` (what ``DistributedDataParallel`` reads when the Trainer wraps the
    model), after names the user put there; ``detach`` leaves only the user's."""
    tiny_vit._ddp_params_and_buffers_to_ignore = ["classifier.bias"]
    pr = _pruner(tiny_vit, prune_ratio=0.5, bpi_shadows=["1:1"])
    heads = [
        n
        for n, _ in [*tiny_vit.named_parameters(), *tiny_vit.named_buffers()]
        if n.startswith(("p3b_bpi.", "p3b_shadows."))
    ]
    assert any(n.startswith("p3b_shadows.") for n in heads) and any("running_mean" in n for n in heads)
    assert tiny_vit._ddp_params_and_buffers_to_ignore == ["classifier.bias", *heads]
    assert len(pr.head_parameters()) == sum(1 for e in pr.estimators for _ in e.heads.parameters())
    pr._keep_heads_out_of_ddp()  # attaching again does not duplicate names
    assert tiny_vit._ddp_params_and_buffers_to_ignore == ["classifier.bias", *heads]
    pr.detach()
    assert tiny_vit._ddp_params_and_buffers_to_ignore == ["classifier.bias"]
