"""The P3B engine, independent of the Trainer: attaches gates / BPI heads to a HF ViT/DeiT, accumulates
ΔΨ and Taylor scores, runs mask updates (docs/p3b.md §3 + §4 + §5) and finalisation (§7 -> WidthPlan).

The Trainer integration (loss, optimizer groups, hooks into the training loop, checkpoints) is in
:mod:`.trainer`; this module only needs tensors, a :class:`~.config.P3BConfig` and a schedule.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ...errors import P3BError
from ...models.locator import locate
from ...plan import LayerPlan, WidthPlan
from ...runtime import all_reduce_, broadcast_tensors_, world_size
from .bpi import BPIHeads, BPITaps
from .budget import block_importance, ema, ramp, solve_keep_ratios
from .config import P3BConfig
from .estimator import BPIEstimator, make_shadow
from .fused_gates import install_fused_gates
from .gates import BLOCK_GATES, GATES, Dims, GateSet, block_params, install_gates, non_block_params
from .grouped_bpi import GroupedBPIHeads
from .local import block_masks, taylor_score
from .schedule import Schedule
from .state import P3BState

logger = logging.getLogger(__name__)


class P3BPruner:
    """Soft-mask pruning state machine for one model (see module docstring)."""

    def __init__(self, model: nn.Module, config: P3BConfig) -> None:
        self.config = config
        self.model = model
        mods = locate(model)
        self.dims = Dims.from_config(model.config)
        self.num_blocks = self.dims.num_blocks
        self.full = block_params(self.dims)
        self.non_block = (
            0.0
            if config.block_param_only
            else float(non_block_params(model, reference=config.reference_non_block))
        )
        #: a latency budget (docs/latency.md; :class:`~p3b_hf.methods.latency_budget.P3BLatencyCost`), set by
        #: the method before training: the budget step then weighs remaining block *latency*
        self.latency: Any = None
        if config.handcrafted_keep is not None and len(config.handcrafted_keep) != self.num_blocks:
            raise P3BError(
                f"handcrafted_keep needs {self.num_blocks} values (attn0, mlp0, attn1, ...), got "
                f"{len(config.handcrafted_keep)}."
            )
        if not 0.0 <= config.prune_ratio < 1.0:
            raise P3BError(f"prune_ratio must be in [0, 1), got {config.prune_ratio}.")
        self.gates: GateSet | None = None
        self.bpi: BPITaps | None = None
        self.estimators: list[BPIEstimator] = []  # the driving BPI first, then the shadows
        self.handles: list[Any] = []
        if config.frozen:
            for p in model.parameters():
                p.requires_grad_(False)
        else:
            self.gates = GateSet(self.dims)
            model.p3b_gates = self.gates
            install = (
                install_fused_gates if getattr(config, "gate_mode", "hooks") == "fused" else install_gates
            )
            self.handles += install(model, self.gates, mods)
        if config.handcrafted_keep is None:
            heads = GroupedBPIHeads if getattr(config, "bpi_mode", "reference") == "grouped" else BPIHeads
            self.bpi = heads.for_model(mods, int(model.config.num_labels), frozen_bn=config.bpi_frozen_bn)
            model.p3b_bpi = self.bpi
            self.handles += self.bpi.install(model, mods)
        n_mask = sum(m.numel() for _, _, m in self.gates.named_masks()) if self.gates is not None else 0
        self.state = P3BState.fresh(self.num_blocks, n_mask, self.full)
        if self.bpi is not None:
            self.estimators.append(
                BPIEstimator(
                    "driver",
                    self.bpi,
                    float(getattr(config, "bpi_subbatch", 1.0)),
                    int(getattr(config, "bpi_every", 1)),
                    self.state,
                )
            )

            def new_heads() -> BPITaps:  # a seeded shadow's fresh heads (same recipe as the driver's)
                return BPIHeads.for_model(mods, int(model.config.num_labels), frozen_bn=config.bpi_frozen_bn)

            shadows = [
                make_shadow(self.bpi, i, spec, self.num_blocks, self.full, new_heads)
                for i, spec in enumerate(getattr(config, "bpi_shadows", None) or [])
            ]
            if shadows:
                model.p3b_shadows = nn.ModuleList([s.heads for s in shadows])
                for sh in shadows:
                    self.handles += sh.heads.install(model, mods)
            self.estimators += shadows
        self._ddp_ignored = self._keep_heads_out_of_ddp()
        self.schedule: Schedule | None = None
        self.plan: WidthPlan | None = None

    # ------------------------------------------------------------------ plumbing
    @property
    def shadows(self) -> list[BPIEstimator]:
        return self.estimators[1:]

    @property
    def device(self) -> torch.device:
        src = self.gates if self.gates is not None else self.bpi
        return next(src.parameters()).device

    def _keep_heads_out_of_ddp(self) -> list[str]:
        """Name every BPI head parameter and buffer in the model's ``_ddp_params_and_buffers_to_ignore`` (read by
        ``DistributedDataParallel`` when the Trainer wraps the model): the reducer then never waits for
        them, so they may go unused after finalisation, and their logits need not be in the model output.
        The trainer averages their gradients itself (:meth:`head_parameters`)."""
        names = [
            n
            for n, _ in [*self.model.named_parameters(), *self.model.named_buffers()]
            if n.startswith(("p3b_bpi.", "p3b_shadows."))
        ]
        if names:
            prior = list(getattr(self.model, "_ddp_params_and_buffers_to_ignore", []))
            self.model._ddp_params_and_buffers_to_ignore = prior + [n for n in names if n not in prior]
        return names

    def head_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of every estimator's heads (driver first): outside DDP's reducer."""
        return [p for est in self.estimators for p in est.heads.parameters() if p.requires_grad]

    def sync_heads(self, buffers_only: bool = False) -> None:
        """Give every rank rank 0's head weights and BN buffers: DDP does this for what it wraps (weights at
        construction, buffers before every forward: ``broadcast_buffers``), not for what it ignores. The
        trainer syncs the buffers (BN running statistics, updated from each rank's own batch) once per
        optimizer step, so the ranks' checkpointable state stays identical."""
        broadcast_tensors_(
            [
                t
                for est in self.estimators
                for t in [*([] if buffers_only else est.heads.parameters()), *est.heads.buffers()]
            ]
        )

    def sync_device(self) -> None:
        for st in [self.state] + [e.state for e in self.shadows]:
            st.to(self.device)

    def detach(self) -> None:
        """Remove hooks and the attached modules: leaves the plain HF model (hard masks are NOT applied)."""
        for h in self.handles:
            h.remove()
        self.handles = []
        for name in ("p3b_gates", "p3b_bpi", "p3b_shadows"):
            if name in self.model._modules:
                del self.model._modules[name]
        ignored = getattr(self.model, "_ddp_params_and_buffers_to_ignore", None)
        if ignored is not None and self._ddp_ignored:
            rest = [n for n in ignored if n not in set(self._ddp_ignored)]
            if rest:
                self.model._ddp_params_and_buffers_to_ignore = rest
            else:
                del self.model._ddp_params_and_buffers_to_ignore
        self._ddp_ignored = []

    # ------------------------------------------------------------------ accumulation
    def record_taylor(self, step: int, grad_scale: float = 1.0) -> bool:
        """Add ``(m · dL/dm)^2`` of the current mask gradients (once per optimizer step).

        ``grad_scale`` is the AMP loss scale still contained in the gradients. Non-finite steps (fp16
        overflow, skipped by the scaler anyway) are skipped. Returns True when something was added.
        """
        with torch.no_grad():  # a block, not a decorator: mutmut skips decorated functions
            st = self.state
            if self.gates is None or st.last_taylor_step == step:
                return False
            st.last_taylor_step = step
            grad = self.gates.flat_grad()
            if grad is None:
                return False
            masks = torch.cat([m.detach().reshape(-1) for _, _, m in self.gates.named_masks()])
            score = taylor_score(masks, grad.double() / grad_scale)
            if not bool(torch.isfinite(score).all()):
                st.skipped_taylor_steps += 1
                return False
            st.taylor_sum += score.to(st.taylor_sum.device)
            st.taylor_count += 1
            return True

    # ------------------------------------------------------------------ updates
    def _reduce_window(self) -> dict[int, tuple[torch.Tensor, ...]]:
        """All-reduce every estimator's ΔΨ window (SUM) and the Taylor window (mean) in place.

        Returns each estimator's *local* ΔΨ sums from before the reduction: the window kept for the
        finalisation merge must be the local one, or the merge (which all-reduces again) counts it once
        per process. ``reference=True`` keeps the reduced sums instead -- the reference's over-weighting
        of the previous window by the world size (docs/p3b.md §9.4).
        """
        st, local = self.state, {}
        for est in self.estimators:
            if not self.config.reference:
                local[id(est.state)] = tuple(t.clone() for t in est.state.window_tensors())
            for t in est.state.window_tensors():
                all_reduce_(t)
        # gradients are DDP-averaged already, so the Taylor sums agree; the mean keeps them exact either way
        all_reduce_(st.taylor_sum, mean=True)
        all_reduce_(st.taylor_count, mean=True)
        return local

    def _block_keep_ratios(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        cfg, st = self.config, self.state
        if cfg.handcrafted_keep is not None:
            return (
                torch.tensor(cfg.handcrafted_keep, dtype=torch.float64, device=st.remaining.device),
                None,
                None,
            )
        return self._keep_from_window(st, st.remaining)

    def _keep_from_window(
        self, st: P3BState, remaining: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Block keep ratios from one estimator's finished window (docs/p3b.md §3): ΔΨ means -> importance per
        remaining parameter -> EMA (state in ``st``) -> α-merge -> budget solver. Returns (κ, ΔΨᶜ, ΔΨᵖ);
        a ΔΨ is None when no micro-batch of the window ran those heads (its EMA then stays as it was)."""
        cfg = self.config
        if self.latency is not None and self.gates is not None:
            remaining = self.latency.remaining(self.gates.kept_widths()).to(remaining.device)
        n_cls, n_patch = float(st.dpsi_cls_count.item()), float(st.dpsi_count.item())
        if n_cls == 0 and n_patch == 0:
            logger.warning(
                "P3B update with no BPI forward in its window: keeping the previous block keep ratios."
            )
            if st.kappa is not None:
                return st.kappa, None, None
        d_cls = st.dpsi_cls_sum / max(n_cls, 1.0) if n_cls > 0 or n_patch == 0 else None
        d_patch = st.dpsi_patch_sum / max(n_patch, 1.0) if n_patch > 0 or n_cls == 0 else None
        if d_patch is None and st is self.state:
            logger.warning(
                "P3B update with no patch-head forward in its window (--bpi-every larger than the "
                "window): the patch-head importance keeps its previous value. Use --bpi-every <= "
                "--update-every x gradient accumulation steps."
            )
        if d_cls is not None:
            st.ema_cls = ema(
                block_importance(d_cls, remaining, cfg.block_imp_scale, guard=cfg.guards),
                st.ema_cls,
                cfg.pr_gamma,
            )
        if d_patch is not None:
            st.ema_patch = ema(
                block_importance(d_patch, remaining, cfg.block_imp_scale, guard=cfg.guards),
                st.ema_patch,
                cfg.pr_gamma,
            )
        if st.ema_cls is not None and st.ema_patch is not None:
            imp = cfg.pr_alpha * st.ema_cls + (1 - cfg.pr_alpha) * st.ema_patch
        else:  # one head type has not run yet at the first update
            imp = st.ema_cls if st.ema_cls is not None else st.ema_patch
        if self.latency is not None:  # κ over block latencies, then the widest block fitting each
            lat = self.latency
            kappa = solve_keep_ratios(imp, lat.full.to(imp.device), lat.non_block, lat.keep, guard=cfg.guards)
            per_param = None
            if self.gates is not None:  # what the current masks deliver: latency keep per parameter keep
                par = block_params(self.dims, self.gates.kept_widths()) / self.full
                lat_keep = remaining.cpu() / lat.full
                per_param = torch.where(par > 0, lat_keep / par.clamp_min(1e-12), torch.ones_like(par))
            return lat.param_keep(kappa, per_param), d_cls, d_patch
        kappa = solve_keep_ratios(
            imp, self.full.to(imp.device), self.non_block, 1.0 - cfg.prune_ratio, guard=cfg.guards
        )
        return kappa, d_cls, d_patch

    def update(self, done: int, *, rho: float | None = None, tau: float | None = None) -> dict[str, Any]:
        """One mask update after ``done`` optimizer steps; returns (and records) its history entry."""
        with torch.no_grad():  # a block, not a decorator: mutmut skips decorated functions
            assert self.schedule is not None, "call P3BPruner.schedule = Schedule(...) before updating"
            st = self.state
            local = self._reduce_window()
            kappa, d_cls, d_patch = self._block_keep_ratios()
            st.kappa = kappa
            shadows: dict[str, Any] = {}
            for est in self.shadows:  # what each shadow would choose, with the driver's remaining counts
                sk, sc, sp = self._keep_from_window(est.state, st.remaining)
                est.state.kappa = sk
                shadows[est.name] = {
                    "keep_target": sk.tolist(),
                    "dpsi_cls": None if sc is None else sc.tolist(),
                    "dpsi_patch": None if sp is None else sp.tolist(),
                    "window_forwards": int(est.state.dpsi_count.item()),
                }
                est.state.roll_window(local.get(id(est.state)))
            rho = self.schedule.rho(done) if rho is None else rho
            tau = self.schedule.tau(done) if tau is None else tau
            applied = ramp(kappa, rho)
            if self.gates is not None:
                self._apply_local(applied, tau)
                st.remaining = block_params(self.dims, self.gates.kept_widths()).to(st.remaining.device)
            full = self.full.to(st.remaining.device)
            entry = {
                # the last update falls on S2 itself: it ends sharpening, finalisation follows
                "step": int(done),
                "phase": self.schedule.phase(min(done, self.schedule.finalize - 1)),
                "rho": float(rho),
                "tau": float(tau),
                "keep_target": kappa.tolist(),
                "keep_applied": applied.tolist(),
                "keep_achieved": (st.remaining / full).tolist(),
                "model_keep": float((st.remaining.sum() + self.non_block) / (full.sum() + self.non_block)),
                "dpsi_cls": None if d_cls is None else d_cls.tolist(),
                "dpsi_patch": None if d_patch is None else d_patch.tolist(),
                "window_forwards": int(st.dpsi_count.item()),
                "window_forwards_cls": int(st.dpsi_cls_count.item()),
                "window_steps": int(st.taylor_count.item()),
            }
            if shadows:
                entry["shadows"] = shadows
            st.history.append(entry)
            st.num_updates += 1
            st.roll_window(local.get(id(st)))
            return entry

    def _apply_local(self, applied: torch.Tensor, tau: float) -> None:
        gates, st, scales = self.gates, self.state, self.config.gate_scales
        offsets, pos = {}, 0
        for g, layer, m in gates.named_masks():
            offsets[(g, layer)] = (pos, m.numel())
            pos += m.numel()
        cnt = float(st.taylor_count.clamp_min(1).item())
        mean = st.taylor_sum / cnt
        for layer in range(self.dims.layers):
            for k, kind in enumerate(("attn", "mlp")):
                names = BLOCK_GATES[kind]
                scores = [mean[offsets[(g, layer)][0] : sum(offsets[(g, layer)])] for g in names]
                masks, _, _ = block_masks(
                    self.dims,
                    kind,
                    scores,
                    [scales.get(g, 1.0) for g in names],
                    float(applied[2 * layer + k]),
                    tau,
                    exact=self.config.exact_budget,
                    floor=self.config.mask_floor,
                )
                for g, new in zip(names, masks):
                    gates.mask(g, layer).data.copy_(new.to(gates.mask(g, layer).dtype))

    # ------------------------------------------------------------------ finalisation
    def finalize(self, done: int) -> WidthPlan:
        """Hard masks -> :class:`WidthPlan` (clean: from the last applied masks; with
        ``finalize_reselect`` the reference's extra update on the merged last two windows)."""
        with torch.no_grad():  # a block, not a decorator: mutmut skips decorated functions
            st = self.state
            if self.gates is not None:
                if self.config.finalize_reselect and st.num_updates > 0:
                    st.merge_previous_window()
                    entry = self.update(done, rho=1.0, tau=self.config.tau_max)
                    entry["phase"] = "finalize_reselect"
                if st.num_updates == 0 and self.config.prune_ratio > 0:
                    logger.warning(
                        "P3B finalised before any mask update: nothing was pruned. Train longer or "
                        "lower --prune-start-epoch / --update-every."
                    )
                # hard and frozen from here on: training past finalisation must not move them (the reference
                # deletes its gates); under DDP they stay in the graph so the reducer sees every parameter
                self.gates.freeze(keep_in_graph=world_size() > 1)
                st.remaining = block_params(self.dims, self.gates.kept_widths()).to(st.remaining.device)
            for est in self.estimators:
                est.heads.active = False
            st.finalized, st.finalize_step = True, int(done)
            self.plan = self.width_plan()
            return self.plan

    def width_plan(self) -> WidthPlan:
        plan = WidthPlan.full(self.model.config)
        if self.gates is not None:
            for layer in range(plan.num_layers):
                kept = {g: self.gates.kept_indices(g, layer) for g in GATES}
                plan.layers[layer] = LayerPlan(
                    head_dims=kept["attn_qkv"],
                    mlp=kept["mlp_hid"],
                    attn_in=kept["attn_in"],
                    attn_out=kept["attn_out"],
                    mlp_in=kept["mlp_in"],
                    mlp_out=kept["mlp_out"],
                )
        plan.meta = {
            "method": "p3b",
            "prune_ratio": self.config.prune_ratio,
            "base_model_name_or_path": getattr(self.model.config, "_name_or_path", None) or None,
        }
        return plan

    # ------------------------------------------------------------------ checkpoints
    def state_tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.gates is not None:
            out.update({f"gates.{k}": v for k, v in self.gates.state_dict().items()})
        if self.bpi is not None:
            out.update({f"bpi.{k}": v for k, v in self.bpi.state_dict().items()})
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.gates is not None:
            self.gates.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("gates.")})
        if self.bpi is not None:
            self.bpi.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("bpi.")})
