"""Gated MLPs in the latency model (docs/latency.md): a SwiGLU block (DINOv2 ``use_swiglu_ffn``) gets its own
curve and its own probe (gate + up + down), so its predicted time is that of the gated module, not of a plain
MLP of the same hidden width (which has 2/3 of its MACs)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import TINY_DINOV2, TINY_DINOV2_SWIGLU
from torch import nn
from transformers import Dinov2Config

from p3b_hf.latency import Probe, calibrate, structures
from p3b_hf.latency.model import cache_key

#: ms per multiply-accumulate of a Linear weight on the fake device (and nothing else costs)
MS_PER_MAC = 1e-6
REST_MS = 0.3


def linear_macs(module: nn.Module, tokens: int) -> int:
    """Multiply-accumulates of every Linear in ``module`` over ``tokens`` tokens (weights only)."""
    return tokens * sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


class MacClock:
    """A fake device that charges each real module's Linear MACs: probes by the module the real clock would
    run (:func:`p3b_hf.latency.timing.probe_module`), whole models by the deployed model's own Linears (so the
    truth does not come from the latency model's structures)."""

    def time_probes(self, probes: list[Probe]) -> list[float]:
        from p3b_hf.latency.timing import probe_module

        return [MS_PER_MAC * linear_macs(probe_module(p), p.tokens * p.groups) for p in probes]

    def time_model(self, model: nn.Module) -> float:
        cfg = model.config
        tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1  # patches + CLS
        return REST_MS + MS_PER_MAC * linear_macs(model, tokens)


def _key(model):
    return cache_key(model.config, device="cpu", backend="torch", threads=1, batch=1, image_size=None)


def test_gated_mlp_blocks_have_their_own_curve():
    """A SwiGLU DINOv2's MLP blocks are gated and name a ``gmlp`` curve (never a plain MLP's, so a cached
    plain curve is not reused); a pruned gated config's blocks name the dense gated curve."""
    from p3b_hf.plan import WidthPlan
    from p3b_hf.slicing import pruned_config

    gated_cfg, plain_cfg = Dinov2Config(**TINY_DINOV2_SWIGLU), Dinov2Config(**TINY_DINOV2)
    gated, plain = structures(gated_cfg), structures(plain_cfg)
    assert [s.kind for s in gated] == ["attn", "mlp"] * 3
    assert [s.gated for s in gated] == [False, True] * 3
    assert not any(s.gated for s in plain)
    mlp = [s for s in gated if s.kind == "mlp"]
    assert {s.full for s in mlp} == {64}  # (int(48 * 2 * 2/3) + 7) // 8 * 8
    assert {s.curve for s in mlp} == {"gmlp:c48:n17:g1:w64"}
    assert replace(mlp[0], gated=False).curve == "mlp:c48:n17:g1:w64"  # the plain MLP of that width
    assert {s.curve for s in plain if s.kind == "mlp"} == {"mlp:c48:n17:g1:w96"}
    # attention is unchanged by the MLP's gating
    assert [s.curve for s in gated if s.kind == "attn"] == [s.curve for s in plain if s.kind == "attn"]
    key = cache_key(gated_cfg, device="cpu", backend="torch", threads=1, batch=1, image_size=None)
    assert "gmlp:c48:n17:g1:w64" in key["curves"]  # a calibration of the plain MLP never answers this key

    plan = WidthPlan.full(gated_cfg)
    for i, layer in enumerate(plan.layers):
        layer.mlp = list(range(40 - 8 * i))
    pruned = pruned_config(gated_cfg, plan)
    ps = [s for s in structures(pruned, dense_config=gated_cfg) if s.kind == "mlp"]
    assert [s.width for s in ps] == [40, 32, 24]
    assert all(s.gated and s.curve == "gmlp:c48:n17:g1:w64" for s in ps)


def test_gated_probe_has_1_5x_the_macs_of_a_plain_one():
    from p3b_hf.latency.timing import GatedMlpProbe, MlpProbe, probe_module

    assert isinstance(probe_module(Probe("mlp", 64, 0, 48, 17, 1, True)), GatedMlpProbe)
    assert isinstance(probe_module(Probe("mlp", 64, 0, 48, 17, 1)), MlpProbe)
    assert linear_macs(GatedMlpProbe(48, 64), 1) == 3 * 48 * 64
    assert linear_macs(GatedMlpProbe(48, 64), 1) == 1.5 * linear_macs(MlpProbe(48, 64), 1)


def test_calibration_times_gated_mlps_as_gated(tiny_dinov2_swiglu, tiny_dinov2, tmp_path):
    """On a device that charges real Linear MACs, the gated model's MLP curve predicts 1.5x the plain MLP
    curve at the same hidden width, and the whole-model prediction is the device's own time (scale 1): the
    probes and the deployed model agree on what a gated MLP costs."""
    clock = MacClock()
    gated = calibrate(tiny_dinov2_swiglu, clock, _key(tiny_dinov2_swiglu), directory=tmp_path)
    plain = calibrate(tiny_dinov2, clock, _key(tiny_dinov2), directory=tmp_path)
    g_curve, p_curve = gated.curves["gmlp:c48:n17:g1:w64"], plain.curves["mlp:c48:n17:g1:w96"]
    tokens, c, h = 17, 48, 64
    assert g_curve.ms(h) == pytest.approx(MS_PER_MAC * tokens * 3 * c * h, rel=1e-6)
    assert p_curve.ms(h) == pytest.approx(MS_PER_MAC * tokens * 2 * c * h, rel=1e-6)
    assert g_curve.ms(h) / p_curve.ms(h) == pytest.approx(1.5, rel=1e-6)
    assert g_curve.ms(h, 24) / p_curve.ms(h, 24) == pytest.approx(1.5, rel=1e-6)  # at half the residual too
    # the whole-model anchors need no correction: the probes charge what the deployed gated MLP costs
    assert gated.scales == pytest.approx({"attn": 1.0, "mlp": 1.0}, rel=1e-6)
    assert gated.fit_error["anchor_max_rel"] < 1e-6
    dense_ms = clock.time_model(tiny_dinov2_swiglu)
    assert gated.predict(tiny_dinov2_swiglu.config, tiny_dinov2_swiglu.config) == pytest.approx(dense_ms)
    structs = structures(tiny_dinov2_swiglu.config)
    mlp_ms = [ms for s, ms in zip(structs, gated.block_ms(structs)) if s.kind == "mlp"]
    assert mlp_ms == pytest.approx([MS_PER_MAC * tokens * 3 * c * h] * 3, rel=1e-6)


def test_real_clock_runs_a_gated_probe(one_thread):
    """The torch backend times a GatedMlpProbe, which computes the deployed SwiGLU block plus the residual."""
    from p3b_hf.latency.timing import BackendClock, GatedMlpProbe
    from p3b_hf.models.modeling_p3b_layers import P3BGatedMLP

    torch.manual_seed(0)
    probe, block = GatedMlpProbe(16, 24).eval(), P3BGatedMLP(16, 24, 16, act="silu").eval()
    block.load_state_dict(probe.state_dict())
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(probe(x), x + block(x))
    clock = BackendClock("torch", "cpu", 1, 1, repeats=1, warmup=1, min_repeat_s=0.001)
    try:
        ms = clock.time_probes([Probe("mlp", 24, 0, 16, 5, 1, True), Probe("mlp", 24, 0, 16, 5, 1)])
        assert len(ms) == 2 and all(m > 0 for m in ms)
    finally:
        clock.close()
