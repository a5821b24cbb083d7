"""The latency model's anchor fit (per-kind scales, a residual-dependent rest, a negative rest refitted), speed-ups
relative to the model's own dense prediction, the measured closed loop of global / VBP, and latency flags that
are refused where nothing would read them."""

from __future__ import annotations

import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification

from p3b_hf.latency import LatencyBudget, calibrate, structures
from tests.test_latency import CFG, FakeClock, _key, truth


@pytest.fixture
def small_vit() -> ViTForImageClassification:
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(**CFG)).eval()


class GraphClock(FakeClock):
    """Probes as :class:`FakeClock`; whole deployed models ``rest + rest_c * c/C + a * attention + m * MLPs``:
    blocks inside the graph cost another multiple of their probe time per kind, and the rest shrinks with the
    residual stream."""

    def __init__(self, rest: float, rest_c: float, a: float, m: float) -> None:
        super().__init__()
        self.rest, self.rest_c, self.a, self.m = rest, rest_c, a, m

    def time_model(self, model) -> float:
        dense = ViTConfig(**CFG)
        st = structures(model.config, dense_config=dense)
        blocks = sum(
            (self.a if s.kind == "attn" else self.m) * truth(s.kind, s.width, s.c, s.c_full) for s in st
        )
        return self.rest + self.rest_c * st[0].c / st[0].c_full + blocks


def test_anchor_fit_separates_attention_mlp_and_the_residual_rest(small_vit, tmp_path):
    model = calibrate(small_vit, GraphClock(0.3, 0.2, 1.5, 1.0), _key(small_vit), directory=tmp_path)
    assert model.scales == pytest.approx({"attn": 1.5, "mlp": 1.0})
    assert model.rest_ms == pytest.approx(0.3) and model.rest_residual_ms == pytest.approx(0.2)
    assert not model.rest_clamped
    names = [a[0] for a in model.anchors]
    assert names == ["x1", "x0.5", "x0.25", "attn0.25", "mlp0.25", "residual0.5"]
    assert model.fit_error["anchor_max_rel"] < 1e-9
    # a model the anchors never saw: head dims 17 (step 32), MLP 40 (step 64), residual 32 of 64
    from p3b_hf.plan import LayerPlan, WidthPlan
    from p3b_hf.slicing import apply_width_plan

    plan = WidthPlan.full(small_vit.config)
    plan.layers = [LayerPlan(head_dims=list(range(17)), mlp=list(range(40))) for _ in range(2)]
    plan.embed = list(range(32))
    pruned = apply_width_plan(small_vit, plan)
    clock = GraphClock(0.3, 0.2, 1.5, 1.0)
    assert model.predict(pruned.config, small_vit.config) == pytest.approx(clock.time_model(pruned))


def test_a_negative_rest_is_refitted_not_clamped(small_vit, tmp_path):
    """In-graph blocks 1.2x their probes but 0.2 ms less overall (a negative 'rest'): the fit refits the scales
    with rest 0. Clamping the rest alone would leave every anchor over-predicted (scale 1.2, rest 0)."""
    model = calibrate(small_vit, GraphClock(-0.2, 0.0, 1.2, 1.2), _key(small_vit), directory=tmp_path)
    assert model.rest_clamped and model.rest_ms == 0.0 and model.rest_residual_ms == 0.0
    errors = [pred / meas - 1 for _, meas, pred in model.anchors]
    assert min(errors) < 0 < max(errors)  # the refitted scales balance the anchors
    assert all(s < 1.2 for s in model.scales.values())


def test_speedups_are_relative_to_the_models_own_dense_prediction(small_vit, tmp_path):
    model = calibrate(small_vit, GraphClock(-0.2, 0.0, 1.2, 1.2), _key(small_vit), directory=tmp_path)
    budget = LatencyBudget.of(model, small_vit.config, target_speedup=2.0)
    dense_pred = model.predict(small_vit.config, small_vit.config)
    assert dense_pred != pytest.approx(model.dense_ms)  # the fit is not exact at the dense anchor here
    assert budget.dense_ms == pytest.approx(dense_pred)
    assert budget.predicted_speedup(small_vit.config) == pytest.approx(1.0)
    assert budget.target_ms == pytest.approx(dense_pred / 2)
    # --target-latency-ms T asks for the measured dense time / T
    by_ms = LatencyBudget.of(model, small_vit.config, target_latency_ms=model.dense_ms / 1.6)
    assert by_ms.target_speedup == pytest.approx(1.6) and by_ms.target_ms == pytest.approx(dense_pred / 1.6)


def _scores():
    from p3b_hf.methods.importance import StructureScores

    j = torch.arange(128, dtype=torch.float32)
    return StructureScores(
        embed=torch.full((64,), 100.0),
        head_dims=[torch.ones(32), torch.ones(32)],
        mlp=[0.1005 + 0.001 * j, torch.full((128,), 0.5)],
    )


def test_measured_loop_corrects_the_models_error_on_the_deployed_plan(small_vit, tmp_path):
    """Global pruning on a device whose deployed MLPs cost 1.6x what the latency model says: the open-loop plan
    overshoots the 1.4x target by more than 5 %; the loop re-plans with a corrected ask and lands within 5 %."""
    from p3b_hf.methods.latency_budget import LOOP_TOLERANCE, latency_matched_plan, measured_loop
    from p3b_hf.slicing import apply_width_plan

    model = calibrate(small_vit, FakeClock(), _key(small_vit), directory=tmp_path)
    device = GraphClock(0.5, 0.0, 1.0, 1.6)

    def meter(pruned):
        return device.time_model(small_vit) / device.time_model(pruned)

    budget = LatencyBudget.of(model, small_vit.config, target_speedup=1.4)
    open_loop = latency_matched_plan(small_vit, _scores(), budget)
    missed = meter(apply_width_plan(small_vit, open_loop))
    assert abs(missed / 1.4 - 1) > LOOP_TOLERANCE
    budget.meter = meter
    plan, rounds = measured_loop(
        budget,
        lambda b: latency_matched_plan(small_vit, _scores(), b),
        lambda p: apply_width_plan(small_vit, p),
    )
    assert rounds[0]["achieved"] == pytest.approx(missed) and rounds[0]["asked"] == pytest.approx(1.4)
    # the deployed MLP cuts saved more than the model said: the plan overshot, so the model is asked for less
    assert missed > 1.4 and len(rounds) >= 2 and rounds[1]["asked"] < 1.4
    achieved = meter(apply_width_plan(small_vit, plan))
    assert abs(achieved / 1.4 - 1) <= LOOP_TOLERANCE
    assert achieved == pytest.approx(rounds[-1]["achieved"])


def test_vbp_closes_the_loop_and_keeps_its_fold(small_vit, tmp_path):
    from p3b_hf.methods.statistics import RunningMoments
    from p3b_hf.methods.vbp import vbp_plan_from_stats

    j = torch.arange(128, dtype=torch.float64)
    stats = [
        RunningMoments(2.0, torch.full((128,), 0.1, dtype=torch.float64), v)
        for v in (0.1 + 1e-3 * j, 1.0 + 1e-3 * j)
    ]
    model = calibrate(small_vit, FakeClock(), _key(small_vit), directory=tmp_path)
    device = GraphClock(0.5, 0.0, 1.0, 1.6)
    budget = LatencyBudget.of(model, small_vit.config, target_speedup=1.2)
    open_plan = vbp_plan_from_stats(small_vit, stats, latency=budget)
    budget.meter = lambda p: device.time_model(small_vit) / device.time_model(p)
    plan = vbp_plan_from_stats(small_vit, stats, latency=budget)
    loop = plan.meta["latency_loop"]
    assert len(loop) >= 2 and abs(loop[-1]["achieved"] / 1.2 - 1) < abs(loop[0]["achieved"] / 1.2 - 1)
    kept = [len(lp.mlp) if lp.mlp is not None else 128 for lp in plan.layers]
    open_kept = [len(lp.mlp) if lp.mlp is not None else 128 for lp in open_plan.layers]
    assert kept != open_kept
    # the mean-shift fold is computed for exactly the removed neurons of the final plan
    from p3b_hf.models.locator import locate_mlps

    for lp, blk in zip(plan.layers, locate_mlps(small_vit).blocks):
        gone = sorted(set(range(128)) - set(lp.mlp or range(128)))
        expect = blk.fc2.weight.detach().double()[:, gone] @ torch.full((len(gone),), 0.1).double()
        assert lp.mlp_bias_delta == (pytest.approx(expect.tolist()) if gone else None)


@pytest.mark.parametrize(
    "argv, message",
    [
        ("prune --method global --prune-ratio 0.5 --speed-backend torch", "--speed-backend only applies"),
        ("prune --method vbp --prune-ratio 0.5 --no-measured-loop", "--measured-loop only applies"),
        ("prune --method p3b --target-speedup 2 --no-measured-loop", "not used by --method p3b"),
        ("compare --methods vbp --threads 1", "add --budget latency"),
    ],
)
def test_latency_flags_nothing_reads_are_refused(argv, message, capsys):
    from p3b_hf.cli import main

    command, *rest = argv.split()
    code = main([command, "--model", "m", "--dataset", "d", "--output-dir", "o", *rest])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
