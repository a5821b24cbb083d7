"""Latency budgets (docs/latency.md): the latency model (fit, steps, cache) under a fake clock, each method's
latency budget step on hand-computed cost tables, and the report's target / predicted / achieved."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

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
        dense = ViTConfig(**CFG)  # widths and the residual stream relative to the dense model
        return 0.5 + sum(
            truth(s.kind, s.width, s.c, s.c_full) for s in structures(model.config, dense_config=dense)
        )


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
    from p3b_hf.plan import LayerPlan, WidthPlan
    from p3b_hf.slicing import pruned_config

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


# ---------------------------------------------------------------------------------- the methods' budget steps
# The fake device's dense model: rest 0.5 ms, attention 0.05 + 0.01 * ceil16(d) = 0.37 ms per layer, MLP
# 0.02 + 0.002 * ceil32(f) + 0.01 = 0.286 ms per layer: 0.5 + 2 * 0.37 + 2 * 0.286 = 1.812 ms.
@pytest.fixture
def budget_of(small_vit, tmp_path):
    model = calibrate(small_vit, FakeClock(), _key(small_vit), directory=tmp_path)
    assert model.dense_ms == pytest.approx(1.812)

    def make(speedup: float) -> LatencyBudget:
        return LatencyBudget.of(model, small_vit.config, target_speedup=speedup)

    return make


def test_p3b_budget_step_spends_latency(small_vit, budget_of):
    from p3b_hf.methods.latency_budget import P3BLatencyCost
    from p3b_hf.methods.p3b import P3BConfig, P3BPruner, block_importance, solve_keep_ratios
    from p3b_hf.methods.p3b.gates import Dims

    cost = P3BLatencyCost(budget_of(1.4), Dims.from_config(small_vit.config))
    assert cost.full.tolist() == pytest.approx([0.37, 0.286, 0.37, 0.286])
    assert cost.non_block == pytest.approx(0.5) and cost.keep == pytest.approx(1 / 1.4)
    # equal importance: the blocks keep (1.812 / 1.4 - 0.5) / 1.312 = 0.6054 of their latency each
    kappa = solve_keep_ratios(torch.ones(4, dtype=torch.float64), cost.full, cost.non_block, cost.keep)
    assert kappa.tolist() == pytest.approx([0.60540] * 4, abs=1e-5)
    # attention 0.224 ms -> head dim 16 (0.21 ms; 17..32 cost 0.37); MLP 0.1731 ms -> 64 neurons (0.158 ms)
    assert cost.widths(kappa) == [16, 64, 16, 64]
    # as P3B parameter keep ratios (reads / writes full): attn 8,480 / 16,768, MLP 8,448 / 16,704
    assert cost.param_keep(kappa).tolist() == pytest.approx([8480 / 16768, 8448 / 16704] * 2)
    assert cost.remaining([{"attn_qkv": 16, "mlp_hid": 64}] * 2).tolist() == pytest.approx([0.21, 0.158] * 2)
    # closed loop: a block whose masks kept twice the latency per parameter is asked for half the parameters
    corrected = cost.param_keep(kappa, torch.tensor([2.0, 1.0, 0.5, 1.0], dtype=torch.float64))
    assert corrected.tolist() == pytest.approx([8480 / 16768 / 2, 8448 / 16704, 1.0, 8448 / 16704])

    # the pruner's budget step: ΔΨ = 1 everywhere -> importance per remaining *ms* -> every block gets the same
    # 0.79429 / 4 = 0.19857 ms: attention can not stay under it (16 dims cost 0.21) and goes, MLPs keep 64
    pr = P3BPruner(small_vit, P3BConfig(prune_ratio=0.3).resolved())
    pr.latency = cost
    st = pr.state
    st.dpsi_cls_sum = torch.ones(4, dtype=torch.float64)
    st.dpsi_cls_count = torch.tensor(1.0)
    st.dpsi_count = torch.tensor(0.0)
    keep, _, _ = pr._keep_from_window(st, st.remaining)
    assert keep.tolist() == pytest.approx([0.0, 8448 / 16704, 0.0, 8448 / 16704])
    pr.latency = None  # the parameter budget is untouched: keep ratios of a 0.3 parameter cut
    st.ema_cls = None
    keep_params, _, _ = pr._keep_from_window(st, st.remaining)
    total = float(pr.full.sum()) + pr.non_block
    assert float((keep_params * pr.full).sum()) + pr.non_block == pytest.approx(0.7 * total)
    imp = block_importance(torch.ones(4, dtype=torch.float64), st.remaining)  # bit for bit the params path
    assert torch.equal(keep_params, solve_keep_ratios(imp, pr.full, pr.non_block, 0.7))
    pr.detach()


def test_global_ranks_importance_per_latency(small_vit, budget_of):
    from p3b_hf.methods.importance import StructureScores
    from p3b_hf.methods.latency_budget import channel_costs, latency_matched_plan

    j = torch.arange(128, dtype=torch.float32)
    scores = StructureScores(
        embed=torch.full((64,), 100.0),
        head_dims=[torch.ones(32), torch.ones(32)],
        mlp=[0.1005 + 0.001 * j, torch.full((128,), 0.5)],
    )
    budget = budget_of(1.4)  # 1.29429 ms
    # ms per channel: head dim 0.01, MLP neuron 0.002, embedding (2 * 0.32 + 2 * 0.266) / 64
    assert channel_costs(budget, [64, 32, 32, 128, 128]) == pytest.approx(
        [(2 * 0.32 + 2 * 0.266) / 64, 0.01, 0.01, 0.002, 0.002]
    )
    plan = latency_matched_plan(small_vit, scores, budget)
    # per ms: MLP0 50.25..113.75, head dims 100, MLP1 250. The shortest prefix meeting 1.29429 ms ends with
    # 32 MLP1 neurons (1.30 -> 1.236 ms); head dims and MLP0 were cut past their last step, so each gets
    # back its best channels up to the step for free: 16 head dims, MLP0's top 32.
    assert [lp.head_dims for lp in plan.layers] == [list(range(16))] * 2
    assert plan.layers[0].mlp == list(range(96, 128))
    assert plan.layers[1].mlp == list(range(32, 128))
    assert plan.embed is None
    assert plan.meta["residual_floor"] == 16  # never below the smallest residual width timed (64 / 4)
    assert plan.meta["predicted_ms"] == pytest.approx(0.5 + 2 * 0.21 + 0.094 + 0.222)
    assert plan.meta["predicted_ms"] <= budget.target_ms


def test_vbp_ranks_variance_under_the_latency_budget(small_vit, budget_of):
    from p3b_hf.methods.statistics import RunningMoments
    from p3b_hf.methods.vbp import vbp_plan_from_stats

    j = torch.arange(128, dtype=torch.float64)
    stats = [
        RunningMoments(2.0, torch.zeros(128, dtype=torch.float64), v)
        for v in (0.1 + 1e-3 * j, 1.0 + 1e-3 * j)
    ]
    budget = budget_of(1.2)  # 1.51 ms
    plan = vbp_plan_from_stats(small_vit, stats, latency=budget)
    # lowest variance first: all of block 0 (one stays) saves 0.192 ms -> 1.62; block 1 to 64 neurons -> 1.492.
    # Block 0 then gets back its 31 highest-variance neurons (32 = its step, free).
    assert plan.layers[0].mlp == list(range(96, 128))
    assert plan.layers[1].mlp == list(range(64, 128))
    assert budget.predict(pruned_config_of(small_vit, plan)) == pytest.approx(0.5 + 0.74 + 0.094 + 0.158)
    assert plan.meta["removed_neurons"] == 96 + 64


def pruned_config_of(model, plan):
    from p3b_hf.slicing import pruned_config

    return pruned_config(model.config, plan)


# ---------------------------------------------------------------------------------- verification and reports
class _ClosingFake(FakeClock):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__()

    def close(self) -> None:
        pass


def _fake_measure(opts, dense, pruned, clock=None):
    fake = FakeClock()
    return {"dense_ms": fake.time_model(dense), "pruned_ms": fake.time_model(pruned)}


def test_prune_reports_target_predicted_and_achieved(tmp_path, monkeypatch, one_thread):
    """A real global-pruning run with --target-speedup 1.4 on the fake device: the report, the summary and the
    model card carry target, prediction and the measured speed-up; the latency model's plot is saved."""
    from transformers import ViTImageProcessorPil

    import p3b_hf.latency.timing as timing
    import p3b_hf.latency.verify as verify_mod
    from p3b_hf.demo_data import domain_glyph_dataset
    from p3b_hf.hub import build_model_card
    from p3b_hf.methods.global_pruning import GlobalOptions
    from p3b_hf.options import DataOptions, OutputOptions, PruneOptions, TrainOptions
    from p3b_hf.report import summarize
    from p3b_hf.runner import PruneJob, prune

    monkeypatch.setattr(timing, "BackendClock", _ClosingFake)
    monkeypatch.setattr(verify_mod, "measure", _fake_measure)
    domain_glyph_dataset(classes="αβγδ", renders_per_font=1, domains=["ink", "outline"]).save_to_disk(
        str(tmp_path / "glyphs")
    )
    labels = list("αβγδ")
    torch.manual_seed(0)
    cfg = ViTConfig(
        **{**CFG, "num_labels": 4},
        id2label=dict(enumerate(labels)),
        label2id={c: i for i, c in enumerate(labels)},
    )
    ViTForImageClassification(cfg).save_pretrained(tmp_path / "m")
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "m")
    job = PruneJob(
        prune=PruneOptions(model=str(tmp_path / "m"), method="global"),
        data=DataOptions(
            dataset=str(tmp_path / "glyphs"), augment="none", mixup=0.0, cutmix=0.0, label_smoothing=0.0
        ),
        output=OutputOptions(output_dir=str(tmp_path / "out")),
        train=TrainOptions(epochs=1, batch_size=16, device="cpu"),
        method_options=GlobalOptions(importance="l1"),
        latency=LatencyOptions(target_speedup=1.4, threads=1, latency_cache=str(tmp_path / "cache")),
    )
    res = prune(job)
    lat = json.loads((tmp_path / "out" / "pruning_report.json").read_text())["latency"]
    assert lat["target_speedup"] == pytest.approx(1.4)
    assert lat["predicted_speedup"] >= 1.4  # the selector meets the target by the model
    assert lat["achieved_speedup"] == pytest.approx(lat["predicted_speedup"])  # the fake device is the model
    assert lat["met"] and "warning" not in lat
    assert lat["backend"] == "onnxruntime" and lat["device"] == "cpu" and lat["batch_size"] == 1
    assert lat["latency_model"]["steps"] == {
        "attn:c64:n17:g1:h2:w32": 16,
        "mlp:c64:n17:g1:w128": 32,
    }
    assert (tmp_path / "out" / "plots" / "latency_model.png").stat().st_size > 1000
    assert "speed-up          target 1.40×, predicted" in summarize(res.report)
    card = build_model_card(tmp_path / "out", "me/pruned")
    assert "| latency budget | 1.40× speed-up on onnxruntime fp32, cpu, batch 1, 1 threads |" in card
    assert (
        f"| speed-up measured (deployed artefact vs dense, same run) | {lat['achieved_speedup']:.2f}× |"
        in card
    )

    # one budget only
    from p3b_hf.errors import BudgetError

    job.prune = PruneOptions(model=str(tmp_path / "m"), method="global", prune_ratio=0.5)
    job.output = OutputOptions(output_dir=str(tmp_path / "out2"))
    with pytest.raises(BudgetError, match="one budget"):
        prune(job)


def test_a_missed_target_is_reported_loudly(small_vit, budget_of):
    from p3b_hf.latency.report import card_lines, summary_lines
    from p3b_hf.latency.verify import verify
    from p3b_hf.plan import LayerPlan, WidthPlan
    from p3b_hf.slicing import apply_width_plan

    class SlowPruned(FakeClock):
        def time_model(self, model):
            return 1.812 if model is small_vit else 1.7  # the deployed pruned model barely gains

    plan = WidthPlan.full(small_vit.config)
    plan.layers = [LayerPlan(head_dims=list(range(16)), mlp=list(range(64))) for _ in range(2)]
    pruned = apply_width_plan(small_vit, plan)
    warned = []
    section = verify(
        budget_of(1.4),
        LatencyOptions(target_speedup=1.4, threads=1),
        small_vit,
        pruned,
        clock=SlowPruned(),
        warn=warned.append,
    )
    assert section["predicted_speedup"] == pytest.approx(1.812 / (0.5 + 2 * 0.21 + 2 * 0.158))
    assert section["achieved_speedup"] == pytest.approx(1.812 / 1.7)
    assert not section["met"] and warned and "LATENCY TARGET MISSED" in warned[0]
    assert any(line.startswith("WARNING") for line in summary_lines(section))
    assert "| latency target met | **no** (achieved < 0.9 × target) |" in card_lines(section)


def test_cli_flags_and_compare_latency_budget(tmp_path, monkeypatch, one_thread):
    """``prune`` / ``compare`` parse the latency flags; ``compare --budget latency`` runs a cell per speed-up
    target and its table shows target, predicted and achieved."""
    from transformers import ViTImageProcessorPil

    import p3b_hf.latency.timing as timing
    import p3b_hf.latency.verify as verify_mod
    from p3b_hf.cli import build_parser
    from p3b_hf.commands.prune import job_from_args
    from p3b_hf.compare import CompareJob, CompareOptions, markdown_table, run_compare
    from p3b_hf.demo_data import domain_glyph_dataset
    from p3b_hf.methods.global_pruning import GlobalOptions
    from p3b_hf.options import DataOptions, OutputOptions, TrainOptions

    args = build_parser("prune").parse_args(
        "prune --model m --dataset d --output-dir o --method vbp --target-speedup 2 --speed-backend torch "
        "--speed-batch-size 4 --threads 1".split()
    )
    job = job_from_args(args)
    assert job.latency == LatencyOptions(
        target_speedup=2.0, speed_backend="torch", speed_batch_size=4, threads=1
    )
    assert job.prune.prune_ratio is None
    args = build_parser("compare").parse_args(
        "compare --model m --dataset d --output-dir o --budget latency --target-speedups 2,3".split()
    )
    assert args.budget == "latency" and args.target_speedups == "2,3" and args.speed_backend == "onnxruntime"

    monkeypatch.setattr(timing, "BackendClock", _ClosingFake)
    monkeypatch.setattr(verify_mod, "measure", _fake_measure)
    domain_glyph_dataset(classes="αβγδ", renders_per_font=1, domains=["ink"]).save_to_disk(
        str(tmp_path / "g")
    )
    labels = list("αβγδ")
    torch.manual_seed(0)
    cfg = ViTConfig(
        **{**CFG, "num_labels": 4},
        id2label=dict(enumerate(labels)),
        label2id={c: i for i, c in enumerate(labels)},
    )
    ViTForImageClassification(cfg).save_pretrained(tmp_path / "m")
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "m")
    rows = run_compare(
        CompareJob(
            compare=CompareOptions(
                model=str(tmp_path / "m"),
                methods="global-l1",
                budget="latency",
                target_speedups="1.4",
                no_bench=True,
            ),
            data=DataOptions(
                dataset=str(tmp_path / "g"), augment="none", mixup=0.0, cutmix=0.0, label_smoothing=0.0
            ),
            output=OutputOptions(output_dir=str(tmp_path / "cmp")),
            train=TrainOptions(epochs=1, batch_size=16, device="cpu"),
            method_options={"global": GlobalOptions(importance="l1")},
            latency=LatencyOptions(threads=1, latency_cache=str(tmp_path / "cache")),
        )
    )
    (row,) = rows
    assert row["status"] == "ok" and row["target_speedup"] == 1.4 and row["prune_ratio"] is None
    assert row["achieved_speedup"] == pytest.approx(row["predicted_speedup"]) and row["latency_met"]
    assert (tmp_path / "cmp" / "global-l1-x1.4" / "pruning_report.json").exists()
    table = markdown_table(rows)
    assert "| target speed-up | predicted | achieved (deployed, measured) |" in table
    assert f"| 1.40× | {row['predicted_speedup']:.2f}× | {row['achieved_speedup']:.2f}× |" in table


def test_onnxruntime_on_cuda_is_refused():
    from p3b_hf.errors import P3BError

    with pytest.raises(P3BError, match="CPU execution provider only"):
        LatencyOptions(target_speedup=2, speed_backend="onnxruntime", speed_device="cuda").check()


def test_real_clock_times_probes_and_deployed_models(small_vit, one_thread):
    """The real clock on the PyTorch backend (fast settings): positive times for probes and whole models."""
    from p3b_hf.latency.model import anchor_model
    from p3b_hf.latency.timing import BackendClock

    clock = BackendClock("torch", "cpu", 1, 1, repeats=1, warmup=1, min_repeat_s=0.001)
    try:
        ms = clock.time_probes([Probe("attn", 8, 2, 64, 17, 1), Probe("mlp", 40, 0, 64, 17, 1)])
        assert len(ms) == 2 and all(m > 0 for m in ms)
        timed = clock.time_models(
            {"x1": small_vit, "x0.5": anchor_model(small_vit, 0.5)}, small_vit.config, repeats=1
        )
        assert set(timed) == {"x1", "x0.5"} and all(m > 0 for m in timed.values())
    finally:
        clock.close()


class StageClock:
    """A fake device for any family: every block linear in its width (+ step 8), rest 0.2 ms."""

    def time_probes(self, probes):
        return [0.01 + 1e-4 * round_up(p.width, 8) * p.c * p.tokens * p.groups / 64 for p in probes]

    def time_model(self, model):
        return 0.2 + sum(
            0.01 + 1e-4 * round_up(s.width, 8) * s.c * s.tokens * s.groups / 64 if s.width else 0.0
            for s in structures(model.config)
        )


@pytest.mark.parametrize("family", ["swin", "convnext"])
def test_stage_families_spend_a_latency_budget(family, tmp_path):
    """Swin / ConvNeXt: per-stage curves (windows for Swin attention), VBP and global meet the target by the
    model, and the pruned architecture's prediction matches the fake device."""
    from transformers import (
        ConvNextConfig,
        ConvNextForImageClassification,
        SwinConfig,
        SwinForImageClassification,
    )

    from p3b_hf.methods.importance import compute_structure_scores
    from p3b_hf.methods.latency_budget import latency_matched_plan
    from p3b_hf.methods.statistics import RunningMoments
    from p3b_hf.methods.vbp import vbp_plan_from_stats
    from p3b_hf.slicing import pruned_config

    torch.manual_seed(0)
    if family == "swin":
        model = SwinForImageClassification(
            SwinConfig(
                image_size=32,
                patch_size=2,
                embed_dim=16,
                depths=[2, 2],
                num_heads=[2, 4],
                window_size=4,
                num_labels=3,
            )
        ).eval()
    else:
        model = ConvNextForImageClassification(
            ConvNextConfig(hidden_sizes=[8, 16], depths=[2, 2], num_stages=2, image_size=32, num_labels=3)
        ).eval()
    structs = structures(model.config)
    kinds = [s.kind for s in structs]
    assert kinds == (["attn", "mlp"] * 4 if family == "swin" else ["mlp"] * 4)
    if family == "swin":
        assert structs[0].tokens == 16 and structs[0].groups == 16  # 4x4 windows of a 16x16 grid
    lat = calibrate(model, StageClock(), _key(model), directory=tmp_path)
    assert lat.dense_ms == pytest.approx(StageClock().time_model(model))
    budget = LatencyBudget.of(lat, model.config, target_speedup=1.25)
    widths = [f for f in (s.full for s in structs if s.kind == "mlp")]
    stats = [
        RunningMoments(2.0, torch.zeros(f, dtype=torch.float64), torch.rand(f, dtype=torch.float64))
        for f in widths
    ]
    plan = vbp_plan_from_stats(model, stats, latency=budget)
    cfg = pruned_config(model.config, plan)
    assert budget.predict(cfg) <= budget.target_ms
    assert budget.predict(cfg) == pytest.approx(StageClock().time_model(SimpleNamespace(config=cfg)))
    scores = compute_structure_scores(model, "l1", None)
    gplan = latency_matched_plan(model, scores, budget)
    assert gplan.meta["predicted_ms"] <= budget.target_ms
