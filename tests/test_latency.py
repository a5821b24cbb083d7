"""Latency budgets (docs/latency.md): the latency model (fit, steps, cache) under a fake clock, each method's
latency budget step on hand-computed cost tables, and the report's target / predicted / achieved."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification

from p3b_hf.latency import LatencyBudget, LatencyOptions, Probe, calibrate, fit_curve, structures
from p3b_hf.latency.model import cache_key, round_up

CFG = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    image_size=32,
    patch_size=8,
    num_labels=5,
)


def truth(kind: str, width: int, c: int, c_full: int) -> float:
    """The fake device: attention steps at 16 head dims, MLPs at 32 neurons (after the deploy padding to 8)."""
    if width <= 0:
        return 0.0
    cc = c / c_full
    if kind == "attn":
        return 0.05 + 0.01 * round_up(width, 16) * cc
    return 0.02 + 0.002 * round_up(width, 32) * cc + 0.01 * cc


class FakeClock:
    """Deterministic 'timings': blocks by :func:`truth`, whole models = 0.5 ms rest + their blocks."""

    def __init__(self) -> None:
        self.probes = 0
        self.models = 0

    def time_probes(self, probes: list[Probe]) -> list[float]:
        self.probes += len(probes)
        return [truth(p.kind, p.width, p.c, 64) for p in probes]

    def time_model(self, model) -> float:
        self.models += 1
        return 0.5 + sum(truth(s.kind, s.width, s.c, s.c_full) for s in structures(model.config))


class NoClock:
    def time_probes(self, probes):
        raise AssertionError("the cached model should have been used")

    def time_model(self, model):
        raise AssertionError("the cached model should have been used")


@pytest.fixture
def small_vit() -> ViTForImageClassification:
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(**CFG)).eval()


def _key(model, threads=1):
    return cache_key(
        model.config, device="cpu", backend="onnxruntime", threads=threads, batch=1, image_size=None
    )


def test_fit_finds_the_kernel_step():
    pts = [
        (w, 64, 0.1 + 0.01 * round_up(w, 16)) for w in (8, 9, 16, 17, 24, 25, 32, 33, 40, 41, 48, 56, 57, 64)
    ]
    curve = fit_curve(pts, 64)
    assert curve.step == 16
    assert curve.rel_rms < 1e-9
    assert curve.ms(17) == pytest.approx(0.1 + 0.01 * 32)
    assert curve.ms(0) == 0.0


def test_latency_model_is_fitted_cached_and_plotted(small_vit, tmp_path):
    clock = FakeClock()
    model = calibrate(small_vit, clock, _key(small_vit), directory=tmp_path)
    steps = {name.split(":")[0]: max(c.step, c.deploy_round) for name, c in model.curves.items()}
    assert steps == {"attn": 16, "mlp": 32}
    assert model.scale == pytest.approx(1.0)
    assert model.rest_ms == pytest.approx(0.5)
    assert model.fit_error["rel_rms"] < 1e-9 and model.fit_error["anchor_max_rel"] < 1e-9
    dense = clock.time_model(small_vit)
    assert model.dense_ms == pytest.approx(dense)
    # a pruned architecture: head dim 32 -> 17 (pays 32 after the step), MLP 128 -> 40 (pays 64)
    pruned = ViTConfig(**CFG)
    from p3b_hf.plan import LayerPlan, WidthPlan, pruned_config

    plan = WidthPlan.full(pruned)
    plan.layers = [LayerPlan(head_dims=list(range(17)), mlp=list(range(40))) for _ in range(2)]
    cfg = pruned_config(pruned, plan)
    expected = 0.5 + 2 * (0.05 + 0.01 * 32) + 2 * (0.02 + 0.002 * 64 + 0.01)
    # attention: 2 heads x 17 dims -> per-head 17 -> step 32
    assert model.predict(cfg, small_vit.config) == pytest.approx(expected)
    files = list(tmp_path.glob("latency_onnxruntime_cpu_*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["key"]["threads"] == 1 and data["key"]["dtype"] == "fp32" and "fit_error" in data
    # the cache answers the same key without timing anything; another thread count is another model
    again = calibrate(small_vit, NoClock(), _key(small_vit), directory=tmp_path)
    assert again.predict(cfg, small_vit.config) == pytest.approx(expected)
    calibrate(small_vit, FakeClock(), _key(small_vit, threads=2), directory=tmp_path)
    assert len(list(tmp_path.glob("latency_*.json"))) == 2
    from p3b_hf.latency.plot import plot_latency_model

    png = plot_latency_model(model, tmp_path / "latency_model.png")
    assert png.stat().st_size > 1000


def test_budget_target_and_unreachable(small_vit, tmp_path):
    from p3b_hf.errors import BudgetError

    model = calibrate(small_vit, FakeClock(), _key(small_vit), directory=tmp_path)
    b = LatencyBudget.of(model, small_vit.config, target_speedup=2.0)
    assert b.target_ms == pytest.approx(model.dense_ms / 2)
    with pytest.raises(BudgetError, match="unreachable"):
        LatencyBudget.of(model, small_vit.config, target_speedup=math.ceil(model.dense_ms / 0.5) + 1)
    with pytest.raises(BudgetError, match="not both"):
        LatencyOptions(target_speedup=2, target_latency_ms=1).check()
    with pytest.raises(BudgetError, match="> 1"):
        LatencyOptions(target_speedup=0.8).check()
