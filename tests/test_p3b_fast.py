"""The fast P3B step: grouped BPI heads == separate heads, fused gates == hook gates, sub-batch / every-k
ΔΨ accounting, and a tiny run in the fast mode that reaches its ratio."""

from __future__ import annotations

import math

import pytest
import torch
from p3b_tiny_run import synthetic_dataset, tiny_model, training_args
from safetensors.torch import load_file

from p3b_hf.errors import CheckpointError, P3BError
from p3b_hf.methods.p3b.bpi import BPIHeads, per_head_ce
from p3b_hf.methods.p3b.estimator import make_shadow
from p3b_hf.methods.p3b.fused_gates import ForwardOverride, install_fused_gates
from p3b_hf.methods.p3b.gates import Dims, GateSet, install_gates
from p3b_hf.methods.p3b.grouped_bpi import GroupedBPIHeads
from p3b_hf.models.locator import locate
from p3b_hf.options import add_options, options_from_namespace
from p3b_hf.trainer import FAST_BPI_EVERY, FAST_BPI_SUBBATCH, P3BConfig, P3BTrainer

pytestmark = pytest.mark.usefixtures("one_thread")


def _taps(n_blocks: int, batch: int, tokens: int, hidden: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, tokens, hidden, generator=g) * (1 + i / 4) for i in range(n_blocks + 1)]


@pytest.mark.parametrize("frozen_bn,conv_impl", [(False, "grouped"), (True, "grouped"), (False, "per_head")])
def test_grouped_heads_equal_separate_heads(frozen_bn, conv_impl):
    torch.manual_seed(0)
    ref = BPIHeads(hidden=12, num_labels=5, num_blocks=4, grid=3, special_tokens=2, frozen_bn=frozen_bn)
    fast = GroupedBPIHeads.from_heads(ref)
    fast.conv_impl = conv_impl
    with torch.no_grad():  # non-trivial BN affine so a wrong channel order would show
        for i in (1, 2):
            getattr(fast, f"bn{i}_weight").uniform_(0.5, 1.5)
            getattr(fast, f"bn{i}_bias").normal_()
            for b, h in enumerate(ref.patch_heads):
                bn = h.body[1 if i == 1 else 4]
                bn.weight.copy_(getattr(fast, f"bn{i}_weight")[b * 12 : (b + 1) * 12])
                bn.bias.copy_(getattr(fast, f"bn{i}_bias")[b * 12 : (b + 1) * 12])
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    for step in range(2):  # second step: running stats from the first must agree too (eval below)
        ref.train()
        fast.train()
        taps = _taps(4, 6, 2 + 9, 12, seed=step)
        (c1, p1), (c2, p2) = ref.evaluate(taps), fast.evaluate(taps)
        assert c1.shape == c2.shape == p1.shape == p2.shape == (4, 2, 6, 5)
        torch.testing.assert_close(c2, c1, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(p2, p1, rtol=1e-5, atol=1e-5)
        ref.zero_grad()
        fast.zero_grad()
        (per_head_ce(c1, labels).sum() + per_head_ce(p1, labels).sum()).backward()
        (per_head_ce(c2, labels).sum() + per_head_ce(p2, labels).sum()).backward()
        torch.testing.assert_close(
            fast.conv1_weight.grad,
            torch.cat([h.body[0].weight.grad for h in ref.patch_heads]),
            rtol=1e-4,
            atol=1e-6,
        )
        torch.testing.assert_close(fast.cls_weight.grad, torch.stack([h.weight.grad for h in ref.cls_heads]))
        torch.testing.assert_close(
            fast.bn2_bias.grad,
            torch.cat([h.body[4].bias.grad for h in ref.patch_heads]),
            rtol=1e-4,
            atol=1e-6,
        )
    for name, idx in (("bn1", 1), ("bn2", 4)):
        for stat in ("running_mean", "running_var"):
            torch.testing.assert_close(
                getattr(fast, f"{name}_{stat}"),
                torch.cat([getattr(h.body[idx], stat) for h in ref.patch_heads]),
            )
    if not frozen_bn:  # the running stats moved: two momentum updates per step, as the reference
        assert not torch.allclose(fast.bn1_running_var, torch.ones_like(fast.bn1_running_var))
        assert int(fast.bn1_num_batches_tracked) == int(ref.patch_heads[0].body[1].num_batches_tracked) == 4
    ref.eval()
    fast.eval()
    taps = _taps(4, 3, 11, 12, seed=7)
    torch.testing.assert_close(fast.evaluate(taps)[1], ref.evaluate(taps)[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conv_impl", ["grouped", "per_head"])
def test_patch_rows_subbatch_and_skip(conv_impl):
    """patch_rows=R: patch logits of the first R samples, equal to the reference heads'; patch_rows=0: no patch
    logits at all; the class heads score every sample either way."""
    torch.manual_seed(1)
    ref = BPIHeads(hidden=12, num_labels=5, num_blocks=4, grid=3, special_tokens=1)
    fast = GroupedBPIHeads.from_heads(ref)
    fast.conv_impl = conv_impl
    taps = _taps(4, 6, 1 + 9, 12, seed=3)
    for rows in (4, 0):
        ref.patch_rows = fast.patch_rows = rows
        (c1, p1), (c2, p2) = ref.evaluate(taps), fast.evaluate(taps)
        assert c1.shape == c2.shape == (4, 2, 6, 5)
        torch.testing.assert_close(c2, c1, rtol=1e-5, atol=1e-5)
        if rows:
            assert p1.shape == p2.shape == (4, 2, rows, 5)
            torch.testing.assert_close(p2, p1, rtol=1e-5, atol=1e-5)
        else:
            assert p1 is None and p2 is None
    torch.testing.assert_close(
        fast.bn1_running_mean, torch.cat([h.body[1].running_mean for h in ref.patch_heads])
    )


def test_grouped_heads_installed_give_same_logits_and_init(tiny_deit_teacher, images):
    mods = locate(tiny_deit_teacher)
    torch.manual_seed(3)
    ref = BPIHeads.for_model(mods, 7)
    torch.manual_seed(3)
    fast = GroupedBPIHeads.for_model(mods, 7)  # same RNG draws -> same initial heads
    torch.testing.assert_close(fast.conv2_weight, torch.cat([h.body[3].weight for h in ref.patch_heads]))
    outs = []
    for heads in (ref, fast):
        handles = heads.install(tiny_deit_teacher, mods)
        heads.active, heads.patch_rows = True, 3
        tiny_deit_teacher(pixel_values=images)
        heads.active = False
        for h in handles:
            h.remove()
        outs.append(heads.pop_logits())
    # patch_rows=3: the patch heads score the first 3 samples, the class heads every sample
    assert outs[0][1].shape == (6, 2, 3, 7) and outs[0][0].shape == (6, 2, images.shape[0], 7)
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[1][1], outs[0][1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hard", [False, True])
def test_fused_gates_equal_hook_gates(tiny_vit, images, hard):
    gates = GateSet(Dims.from_config(tiny_vit.config))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, _, m in gates.named_masks():
            m.copy_(torch.rand(m.shape, generator=g) * 1.2)
    gates.hard = hard
    results = []
    for install in (install_gates, install_fused_gates):
        handles = install(tiny_vit, gates)
        gates.zero_grad()
        out = tiny_vit(pixel_values=images).logits
        out.square().sum().backward()
        results.append(
            (
                out.detach(),
                [m.grad.clone() if m.grad is not None else None for _, _, m in gates.named_masks()],
            )
        )
        for h in handles:
            h.remove()
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-4, atol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        if hard:  # hard masks are detached: no gradient either way
            assert a is None and b is None
        else:
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
    assert all("forward" not in lm.q.__dict__ for lm in locate(tiny_vit).layers)  # removed cleanly


def test_fast_defaults_cli_and_validation():
    fast, ref = P3BConfig().resolved(), P3BConfig(reference=True).resolved()
    assert (fast.bpi_mode, fast.gate_mode, fast.bpi_every, fast.bpi_subbatch) == (
        "grouped",
        "fused",
        FAST_BPI_EVERY,
        FAST_BPI_SUBBATCH,
    )
    assert FAST_BPI_EVERY >= 1 and 0 < FAST_BPI_SUBBATCH <= 1
    assert (ref.bpi_mode, ref.gate_mode, ref.bpi_every, ref.bpi_subbatch) == ("reference", "hooks", 1, 1.0)
    for bad in (dict(bpi_subbatch=0.0), dict(bpi_every=0), dict(bpi_mode="fast"), dict(gate_mode="x")):
        with pytest.raises(ValueError):
            P3BConfig(**bad).resolved()
    import argparse

    p = argparse.ArgumentParser()
    add_options(p, P3BConfig)

    def config(argv: list[str]) -> P3BConfig:
        return options_from_namespace(P3BConfig, p.parse_args(argv), prune_ratio=0.5).resolved()

    cfg = config(["--bpi-mode", "reference", "--bpi-every", "3", "--bpi-subbatch", "0.5"])
    assert (cfg.bpi_mode, cfg.bpi_every, cfg.bpi_subbatch, cfg.gate_mode) == ("reference", 3, 0.5, "fused")
    assert cfg.bpi_shadows == []
    assert config(["--bpi-shadow", "0.0625:1", "0.25:4"]).bpi_shadows == ["0.0625:1", "0.25:4"]
    with pytest.raises(P3BError, match="BPI shadow '0:1'"):
        config(["--bpi-shadow", "0:1"])


def test_subbatch_and_every_k_dpsi_accounting(tmp_path):
    """Patch-head ΔΨ of each update is the mean over exactly the micro-batches that ran the patch heads, on
    ceil(f·B) rows; the class heads score every sample of every micro-batch."""
    every, frac, batch = 3, 0.4, 16
    model = tiny_model("vit")
    cfg = P3BConfig(
        prune_ratio=0.3,
        prune_start_step=2,
        prune_sparse_step=6,
        prune_finalize_step=12,
        update_every=3,
        bpi_every=every,
        bpi_subbatch=frac,
        save_dir=None,
        evaluate_pruned=False,
    )
    trainer = P3BTrainer(
        model=model,
        args=training_args(str(tmp_path), num_train_epochs=3, per_device_train_batch_size=batch),
        train_dataset=synthetic_dataset(64),
        p3b=cfg,
    )
    pr = trainer.pruner
    driver = pr.estimators[0]
    seen: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []
    orig_record, orig_eval = driver.record, pr.bpi.evaluate
    shapes: list[tuple[int, int | None]] = []

    def record(ce_cls: torch.Tensor, ce_patch: torch.Tensor | None) -> None:
        seen.append(
            (
                trainer.state.global_step,
                (ce_cls[:, 0] - ce_cls[:, 1]).double(),
                None if ce_patch is None else (ce_patch[:, 0] - ce_patch[:, 1]).double(),
            )
        )
        orig_record(ce_cls, ce_patch)

    def evaluate(taps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        cls, patch = orig_eval(taps)
        shapes.append((cls.shape[2], None if patch is None else patch.shape[2]))
        return cls, patch

    driver.record, pr.bpi.evaluate = record, evaluate
    trainer.train()
    assert isinstance(pr.bpi, GroupedBPIHeads)
    # 12 steps of 16: the patch heads ran on forwards 0, 3, 6, 9 with ceil(0.4*16) = 7 rows; the class heads
    # on all 12 forwards with all 16 rows
    rows = math.ceil(frac * batch)
    assert shapes == [(batch, rows if f % every == 0 else None) for f in range(12)]
    assert pr.state.train_forwards == 12
    updates = pr.state.history
    assert [u["step"] for u in updates] == [5, 8, 11]
    prev = 0
    for u in updates:
        window = [(c, p) for s, c, p in seen if prev <= s < u["step"]]
        patch = [p for _, p in window if p is not None]
        expected = sum(1 for s in range(max(prev, 2), u["step"]) if s % every == 0)
        assert u["window_forwards"] == len(patch) == expected
        assert u["window_forwards_cls"] == len(window) == u["step"] - max(prev, 2)
        assert u["window_steps"] == u["step"] - max(prev, 2)  # Taylor scores still every step
        torch.testing.assert_close(
            torch.tensor(u["dpsi_cls"], dtype=torch.float64), torch.stack([c for c, _ in window]).mean(0)
        )
        torch.testing.assert_close(
            torch.tensor(u["dpsi_patch"], dtype=torch.float64), torch.stack(patch).mean(0)
        )
        prev = u["step"]


def test_window_without_patch_forward_keeps_the_patch_importance(tmp_path):
    """bpi_every longer than the window: the class-head importance still moves, the patch-head EMA stays."""
    model = tiny_model("vit")
    cfg = P3BConfig(
        prune_ratio=0.3,
        prune_start_step=2,
        prune_sparse_step=6,
        prune_finalize_step=10,
        update_every=2,
        bpi_every=4,
        save_dir=None,
        evaluate_pruned=False,
    )
    trainer = P3BTrainer(
        model=model,
        args=training_args(str(tmp_path), num_train_epochs=2, per_device_train_batch_size=16),
        train_dataset=synthetic_dataset(80),
        p3b=cfg,
    )
    pr = trainer.pruner
    ema_patch: list[torch.Tensor | None] = []
    orig_update = pr.update

    def update(done: int, **kw):
        before = None if pr.state.ema_patch is None else pr.state.ema_patch.clone()
        entry = orig_update(done, **kw)
        after = pr.state.ema_patch
        ema_patch.append((before, None if after is None else after.clone()))
        return entry

    pr.update = update
    trainer.train()
    hist = pr.state.history
    # updates after steps 4, 6, 8, 10 (windows [2,4) [4,6) [6,8) [8,10), the last one at S2 itself); the
    # patch heads ran at forwards 0, 4, 8 only
    assert [u["window_forwards"] for u in hist] == [0, 1, 0, 1]
    assert [u["window_forwards_cls"] for u in hist] == [2, 2, 2, 2]
    assert hist[0]["dpsi_patch"] is None and hist[2]["dpsi_patch"] is None and hist[2]["dpsi_cls"] is not None
    assert ema_patch[0] == (None, None)  # first update: class heads only
    torch.testing.assert_close(ema_patch[2][1], ema_patch[2][0])  # patch importance unchanged ...
    assert hist[2]["keep_target"] != hist[1]["keep_target"]  # ... but the class heads still move κ


def test_shadow_estimators_ride_along_without_steering(tmp_path):
    """A shadow with the driver's own settings reproduces its keep targets; cheaper shadows record theirs;
    the run itself is the same with or without shadows."""

    def run(shadows: list[str], **kw) -> P3BTrainer:
        cfg = P3BConfig(
            prune_ratio=0.4,
            prune_start_step=2,
            prune_sparse_step=8,
            prune_finalize_step=12,
            update_every=2,
            bpi_subbatch=1.0,
            bpi_every=1,
            bpi_shadows=shadows,
            save_dir=None,
            evaluate_pruned=False,
        )
        tr = P3BTrainer(
            model=tiny_model("vit"),
            args=training_args(
                str(tmp_path / str(len(shadows))), num_train_epochs=3, per_device_train_batch_size=16, **kw
            ),
            train_dataset=synthetic_dataset(64),
            p3b=cfg,
        )
        tr.train()
        return tr

    plain, shadowed = run([]), run(["1:1", "0.25:1", "0.5:2", "1:1:7"], save_strategy="steps", save_steps=6)
    names = [e.name for e in shadowed.pruner.shadows]
    assert names == ["1:1", "0.25:1", "0.5:2", "1:1:7"]
    hp, hs = plain.pruner.state.history, shadowed.pruner.state.history
    assert len(hp) == len(hs) == 5  # updates after steps 4, 6, 8, 10 and 12 = S2
    for a, b in zip(hp, hs):  # shadows do not steer the run
        assert a["keep_target"] == pytest.approx(b["keep_target"], abs=1e-9)
        assert a["keep_achieved"] == b["keep_achieved"]
        assert "shadows" not in a and set(b["shadows"]) == set(names)
        # same settings, same initial heads, same batches -> the same estimate as the driver
        assert b["shadows"]["1:1"]["keep_target"] == pytest.approx(b["keep_target"], abs=1e-6)
        assert b["shadows"]["1:1"]["dpsi_patch"] == pytest.approx(b["dpsi_patch"], abs=1e-6)
        assert (
            b["shadows"]["0.5:2"]["window_forwards"] == 1 and b["shadows"]["0.25:1"]["window_forwards"] == 2
        )
    for name in ("0.25:1", "1:1:7"):  # a real, different estimate (sub-batch / other initial heads)
        other = [u["shadows"][name]["keep_target"] for u in hs]
        assert any(c != pytest.approx(u["keep_target"], abs=1e-6) for c, u in zip(other, hs))
    seeded = shadowed.pruner.shadows[3].heads
    assert not torch.equal(seeded.conv1_weight, shadowed.pruner.bpi.conv1_weight)
    for u in hs:  # every shadow's targets meet the same budget as the driver's
        for sh in u["shadows"].values():
            kept = sum(k * f for k, f in zip(sh["keep_target"], shadowed.pruner.full.tolist()))
            assert kept == pytest.approx(
                sum(k * f for k, f in zip(u["keep_target"], shadowed.pruner.full.tolist())), rel=1e-6
            )
    # shadows stay out of the saved model and the checkpoint, and a run with shadows is not resumable
    assert not any("p3b_shadows" in k for k in shadowed.pruned_model.state_dict())
    ckpt = tmp_path / "4" / "checkpoint-6"
    assert not any("shadow" in k for k in load_file(str(ckpt / "model.safetensors")))
    assert not any("shadow" in k for k in load_file(str(ckpt / "p3b_state.safetensors")))
    again = P3BTrainer(
        model=tiny_model("vit"),
        args=training_args(str(tmp_path / "again"), num_train_epochs=3, per_device_train_batch_size=16),
        train_dataset=synthetic_dataset(64),
        p3b=P3BConfig(
            prune_ratio=0.4,
            prune_start_step=2,
            prune_sparse_step=8,
            prune_finalize_step=12,
            update_every=2,
            bpi_shadows=["0.5:1"],
            save_dir=None,
            evaluate_pruned=False,
        ),
    )
    with pytest.raises(CheckpointError, match="cannot be resumed"):
        again.train(resume_from_checkpoint=str(ckpt))


def test_seeded_shadow_heads_come_from_the_seed_and_leave_the_rng_alone():
    mods = locate(tiny_model("vit"))

    def factory() -> BPIHeads:
        return BPIHeads.for_model(mods, 4)

    driver = GroupedBPIHeads.from_heads(factory())
    full = torch.ones(4, dtype=torch.float64)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    copied = make_shadow(driver, 0, "0.5:2", 4, full, factory)
    seeded = make_shadow(driver, 1, "1:1:7", 4, full, factory)
    assert torch.equal(
        torch.get_rng_state(), state
    )  # the driving run draws the same numbers as without shadows
    assert torch.equal(copied.heads.conv1_weight, driver.conv1_weight) and copied.heads is not driver
    torch.manual_seed(7)
    torch.testing.assert_close(seeded.heads.conv1_weight, GroupedBPIHeads.from_heads(factory()).conv1_weight)
    assert (copied.subbatch, copied.every, seeded.subbatch, seeded.every) == (0.5, 2, 1.0, 1)
    assert (copied.heads.output_key, seeded.heads.output_key) == ("p3b_shadow0", "p3b_shadow1")


def test_shadow_specs_are_validated():
    for bad in (["0:1"], ["0.5:0"], ["fast"], ["1.5:1"], ["1:1:x"], ["1:1:1:1"]):
        with pytest.raises(ValueError, match="BPI shadow"):
            P3BConfig(bpi_shadows=bad).resolved()
    with pytest.raises(ValueError, match="handcrafted_keep"):
        P3BConfig(bpi_shadows=["0.5:1"], handcrafted_keep=[0.5] * 4).resolved()


def test_tiny_run_in_fast_mode_reaches_ratio(tmp_path):
    model = tiny_model("vit")
    dense = sum(p.numel() for n, p in model.named_parameters())
    ds = synthetic_dataset(192)
    trainer = P3BTrainer(
        model=model,
        args=training_args(str(tmp_path), num_train_epochs=4),
        train_dataset=ds,
        eval_dataset=ds.select(range(64)),
        p3b=P3BConfig(
            prune_ratio=0.5,
            prune_start_epoch=1,
            prune_sparse_epoch=2,
            prune_finalize_epoch=4,
            update_every=2,
            save_dir=None,
        ),
    )
    pr = trainer.pruner
    assert isinstance(pr.bpi, GroupedBPIHeads)
    assert all(isinstance(h, ForwardOverride) for h in pr.handles[:7])
    trainer.train()
    n_pruned = sum(p.numel() for p in trainer.pruned_model.parameters())
    assert abs((1 - n_pruned / dense) - 0.5) <= 0.01
    fin = trainer.pruning.history["finalize"]["finalize"]
    assert fin["pruned"]["accuracy"] == pytest.approx(fin["hard_masked"]["accuracy"])
    # the fast default (every 4) is lowered to the 2 micro-batches of an update window, so no window misses
    # the patch heads (an explicit --bpi-every is left alone: test_window_without_patch_forward_...)
    assert FAST_BPI_EVERY > 2 and trainer.p3b.bpi_every_auto and trainer.p3b.bpi_every == 2
    every = trainer.p3b.bpi_every  # 2-step windows starting at step 6
    assert [u["window_forwards"] for u in trainer.pruning.state.history] == [
        sum(1 for s in range(d - 2, d) if s % every == 0) for d in range(8, 25, 2)
    ]  # the last at S2 = 24
    assert all(u["window_forwards_cls"] == 2 for u in trainer.pruning.state.history)
