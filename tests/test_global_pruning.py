"""Grouped global pruning: statistics, structure scores, channel-ratio / param-matched / round-to selection."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from p3b_hf import BudgetError, apply_width_plan
from p3b_hf.cost import count_cost
from p3b_hf.methods.global_pruning import global_plan
from p3b_hf.methods.importance import CRITERIA, compute_structure_scores, element_score_fn, structure_scores
from p3b_hf.methods.selectors import global_channel_plan, param_matched_plan, plan_cost
from p3b_hf.methods.statistics import accumulate_gradients, mean_squared_per_sample_gradients
from p3b_hf.models.locator import locate


def _batches(n: int = 2, bs: int = 4) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    return [
        {
            "pixel_values": torch.randn(bs, 3, 32, 32, generator=g),
            "labels": torch.randint(0, 7, (bs,), generator=g),
        }
        for _ in range(n)
    ]


def _per_sample_grads(model, batches):
    out = []
    for b in batches:
        for x, y in zip(b["pixel_values"], b["labels"]):
            model.zero_grad()
            F.cross_entropy(model(pixel_values=x[None]).logits, y[None]).backward()
            out.append({n: p.grad.detach().clone() for n, p in model.named_parameters()})
    model.zero_grad(set_to_none=True)
    return out


def test_hessian_statistic_is_the_mean_of_per_sample_squared_gradients(tiny_vit):
    batches = _batches(2, 3)
    ref = _per_sample_grads(tiny_vit, batches)
    name = "vit.layers.1.mlp.fc1.weight"
    expect = torch.stack([r[name] ** 2 for r in ref[:5]]).mean(0)
    for use_vmap in (True, False):
        got = mean_squared_per_sample_gradients(tiny_vit, batches, max_samples=5, chunk=2, use_vmap=use_vmap)
        torch.testing.assert_close(got[name], expect, rtol=1e-4, atol=1e-10)
        assert set(got) == {n for n, _ in tiny_vit.named_parameters()}
    # ... and not what Torch-Pruning 1.6.1's accumulate_grad keeps (the last sample only)
    assert (got[name] - ref[4][name] ** 2).abs().max() > 1e-3 * expect.abs().max()


def test_taylor_gradients_are_summed_batch_means(tiny_vit):
    batches = _batches(3, 2)
    got = accumulate_gradients(tiny_vit, batches, max_batches=2)
    tiny_vit.zero_grad()
    for b in batches[:2]:
        F.cross_entropy(tiny_vit(pixel_values=b["pixel_values"]).logits, b["labels"]).backward()
    name = "vit.layers.0.attention.q_proj.weight"
    torch.testing.assert_close(got[name], tiny_vit.vit.layers[0].attention.q_proj.weight.grad)
    tiny_vit.zero_grad(set_to_none=True)


def test_structure_scores_follow_group_mean_and_mean_normaliser(tiny_vit):
    s = structure_scores(tiny_vit, element_score_fn("l2"))
    lm = locate(tiny_vit).layers[2]
    raw = (lm.fc1.weight.pow(2).sum(1) + lm.fc2.weight.pow(2).sum(0)).detach() / 2
    torch.testing.assert_close(s.mlp[2], raw / raw.mean())
    inner = (
        lm.q.weight.pow(2).sum(1)
        + lm.k.weight.pow(2).sum(1)
        + lm.v.weight.pow(2).sum(1)
        + lm.o.weight.pow(2).sum(0)
    ).detach() / 4
    torch.testing.assert_close(s.head_dims[2], (inner / inner.mean()).view(4, 12).mean(0))
    assert s.embed.shape == (48,) and math.isclose(float(s.embed.mean()), 1.0, rel_tol=1e-5)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_criterion_gives_valid_plans_at_50_75_95(tiny_vit, criterion, images):
    batches = _batches()
    scores = compute_structure_scores(tiny_vit, criterion, batches, taylor_batches=2, hessian_samples=4)
    n_total = 48 + 3 * (12 + 96)
    dense = count_cost(tiny_vit)["params"]
    previous = dense
    for ratio in (0.5, 0.75, 0.95):
        plan = global_channel_plan(tiny_vit, scores, ratio)
        plan.validate()
        kept = 48 if plan.embed is None else len(plan.embed)
        kept += sum(plan.kept(i)["head_dim"] + plan.kept(i)["mlp"] for i in range(3))
        n_pruned = n_total - int(n_total * (1 - ratio))
        # TP count, up to the channels that the keep-one-per-group (embed: keep >= heads) floor restores
        assert n_total - n_pruned <= kept <= n_total - n_pruned + 7
        pruned = apply_width_plan(tiny_vit, plan)
        with torch.no_grad():
            logits = pruned(pixel_values=images).logits
        assert logits.shape == (3, 7) and torch.isfinite(logits).all()
        params = sum(p.numel() for p in pruned.parameters())
        assert params == plan_cost(tiny_vit, plan)["params"] < previous
        previous = params


@pytest.mark.parametrize("criterion", ["hessian", "taylor", "l1", "random"])
@pytest.mark.parametrize("prune_ratio", [0.5, 0.75])
def test_param_matched_mode_lands_within_one_percent(tiny_vit, criterion, prune_ratio):
    scores = compute_structure_scores(tiny_vit, criterion, _batches(), taylor_batches=2, hessian_samples=4)
    target = round((1 - prune_ratio) * count_cost(tiny_vit)["params"])
    plan = param_matched_plan(tiny_vit, scores, target)
    got = sum(p.numel() for p in apply_width_plan(tiny_vit, plan).parameters())
    assert abs(got - target) <= 0.01 * target
    assert got <= target
    assert plan.meta["selector"] == "param_matched"


def test_round_to_8_gives_multiples_of_8(tiny_vit):
    for kwargs in ({"ratio": 0.5}, {"prune_ratio": 0.6}):
        plan = global_plan(tiny_vit, None, "l1", round_to=8, **kwargs)
        widths = [len(plan.embed)] + [plan.kept(i)[k] for i in range(3) for k in ("head_dim", "mlp")]
        assert all(w % 8 == 0 and w > 0 for w in widths), widths
        pruned = apply_width_plan(tiny_vit, plan)
        assert pruned.config.hidden_size % 8 == 0


def test_distilled_deit_two_heads_are_in_the_embedding_group(tiny_deit_teacher, images):
    plan = global_plan(tiny_deit_teacher, _batches(), "taylor", prune_ratio=0.5, taylor_batches=1)
    pruned = apply_width_plan(tiny_deit_teacher, plan)
    assert pruned.cls_classifier.in_features == pruned.distillation_classifier.in_features == len(plan.embed)
    with torch.no_grad():
        assert torch.isfinite(pruned(pixel_values=images).logits).all()


def test_bad_budgets_fail_clearly(tiny_vit):
    with pytest.raises(BudgetError, match="channels to remove"):
        global_plan(tiny_vit, None, "l1", ratio=1.2)
    with pytest.raises(BudgetError, match="unreachable"):
        global_plan(tiny_vit, None, "l1", target_params=100)
    with pytest.raises(ValueError, match="exactly one budget"):
        global_plan(tiny_vit, None, "l1", ratio=0.5, prune_ratio=0.5)
    with pytest.raises(ValueError, match="needs calibration batches"):
        global_plan(tiny_vit, None, "taylor", ratio=0.5)


def test_run_cli_end_to_end(tiny_vit, tmp_path):
    from test_vbp import _cli_context

    from p3b_hf.methods import global_pruning

    ctx, opts = _cli_context(
        tiny_vit,
        tmp_path,
        [
            "--method",
            "global",
            "--importance",
            "taylor",
            "--prune-ratio",
            "0.5",
            "--epochs",
            "1",
            "--taylor-batches",
            "2",
            "--calib-batch-size",
            "4",
        ],
    )
    result = global_pruning.run(ctx, opts)
    h = result.history
    assert h["criterion"] == "taylor" and h["selector"] == "param_matched" and h["finetune"]["epochs"] == 1
    params = sum(p.numel() for p in result.pruned_model.parameters())
    assert params == h["params_after_pruning"]
    assert abs(params - 0.5 * count_cost(tiny_vit)["params"]) < 0.01 * params
    assert set(h["kept"]) == {"embed", "head_dims", "mlp"} and "accuracy" in result.eval_metrics


def test_run_refuses_a_teacher_it_would_not_use(tiny_vit, tmp_path):
    """Global pruning's fine-tune does not distil (Torch-Pruning / arXiv 2504.04196): a teacher given through
    the Python API is refused in one line before any scoring, as ``--method global --teacher`` is on the CLI."""
    import dataclasses

    from test_vbp import _cli_context

    from p3b_hf.errors import OptionsError
    from p3b_hf.methods import global_pruning

    ctx, opts = _cli_context(tiny_vit, tmp_path, ["--method", "global", "--prune-ratio", "0.5"])
    ctx.kd = dataclasses.replace(ctx.kd, teacher="dense")
    with pytest.raises(OptionsError) as e:
        global_pruning.run(ctx, opts)
    assert str(e.value).startswith("--teacher is not used by --method global: its fine-tune does not distil")
    assert "`p3b-hf finetune --model OUT --teacher DIR`" in str(e.value)
    assert not (tmp_path / "work").exists()  # refused before the plan cache or any scoring
