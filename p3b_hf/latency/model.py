"""The latency model of a deployed artefact: per-structure step curves fitted on a timed grid, plus the rest.

A block's time is fitted, per curve (blocks of one shape, :mod:`.structures`), as

    t(w, c) = a + b * W * c/C + e * W + g * c/C,     W = q * ceil(w' / q),   w' = w rounded up as deployed

with ``w`` the block's width (head dim / MLP neurons), ``c`` the residual width it reads and writes, and ``q``
the kernel step chosen by the fit from 1, 2, 4, ..., 64 (the step that explains the timings best: a width
just past a multiple of ``q`` costs as much as the next multiple). ``w'``: the deployable ViT / DeiT module
already pads inner widths to multiples of 8 (:func:`p3b_hf.export.deploy_module`), so that rounding is applied
first. A removed block (``w = 0``) costs nothing.

Blocks timed alone are not blocks inside the deployed graph (norms, layout copies, fusions and per-call
overhead differ, and differently for attention and MLPs), so whole deployed models anchor the curves: the
dense model and copies of it (random weights) with every block at 1/2 and 1/4 of its width, with only the
attention blocks or only the MLPs at 1/4, and (plain ViTs, whose residual stream global pruning cuts) with
the residual stream at 1/2 are timed in one round-robin run, and

    T = rest + sum over block kinds k of scale_k * sum(blocks of kind k)

is fitted to them (least squares; ``rest`` >= 0: a negative rest is refitted as 0 -- clamping it alone would
leave the scales fitted for the negative rest and bias every prediction up). ``rest`` (embedding, norms,
head, framework overhead) and the per-kind scales are stored with the curves; the relative error at the
anchors is the model's whole-model fit error.

Fit error: relative RMS and max error of each curve on its own grid, stored with the model. Calibrated models
are cached per (device, backend, dtype, threads, batch, architecture, library versions) as JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import P3BError
from ..models.families import stage_family_of_config
from .structures import Structure, structures

STEPS = (1, 2, 4, 8, 16, 32, 64)
#: a larger step must explain the grid this much better than a smaller one to be chosen (noise guard)
STEP_TOLERANCE = 1.05
CACHE_VERSION = 3


class LatencyError(P3BError):
    """A latency budget that cannot be calibrated, met or measured."""


def round_up(w: int, q: int) -> int:
    return int(q * math.ceil(w / q)) if w > 0 else 0


@dataclass(frozen=True)
class Probe:
    """One grid point: a block of ``kind`` at ``width`` reading / writing ``c`` channels (``gated``: a gated
    MLP, timed as one: gate and up projections)."""

    kind: str
    width: int
    heads: int
    c: int
    tokens: int
    groups: int
    gated: bool = False


class Clock(Protocol):
    """What calibration times with: the real one (:class:`~p3b_hf.latency.timing.BackendClock`) or a fake
    one in tests. Milliseconds per batch. A clock that also has ``time_models({name: model}, config) ->
    {name: ms}`` times the whole-model anchors together, round-robin."""

    def time_probes(self, probes: list[Probe]) -> list[float]: ...

    def time_model(self, model: Any) -> float: ...


@dataclass
class Curve:
    """A fitted step curve (module docstring) with the grid it was fitted on."""

    step: int
    coef: list[float]  # a, b, e, g (b, g = 0 when the grid has one residual width)
    c_full: int
    deploy_round: int
    points: list[list[float]] = field(default_factory=list)  # [w, c, ms]
    rel_rms: float = 0.0
    max_rel: float = 0.0

    def width_eff(self, w: int) -> int:
        return round_up(round_up(w, self.deploy_round), self.step)

    def ms(self, w: int, c: int | None = None) -> float:
        if w <= 0:
            return 0.0
        cc = (c if c is not None else self.c_full) / self.c_full
        big_w = self.width_eff(w)
        a, b, e, g = self.coef
        return max(0.0, a + b * big_w * cc + e * big_w + g * cc)

    def slope(self, c: int | None = None) -> float:
        """Average ms per unit of width (the importance-per-latency denominator; steps averaged out)."""
        cc = (c if c is not None else self.c_full) / self.c_full
        return max(1e-12, self.coef[1] * cc + self.coef[2])


def _features(w: np.ndarray, c: np.ndarray, step: int, deploy_round: int, c_full: int) -> np.ndarray:
    big_w = np.array([round_up(round_up(int(x), deploy_round), step) for x in w], dtype=float)
    cc = c / c_full
    return np.stack([np.ones_like(big_w), big_w * cc, big_w, cc], axis=1)


def fit_curve(points: list[tuple[int, int, float]], c_full: int, deploy_round: int = 1) -> Curve:
    """Least-squares fit of the step curve to ``(width, c, ms)`` points, the step chosen from :data:`STEPS`
    (the smallest whose relative RMS error is within :data:`STEP_TOLERANCE` of the best)."""
    w = np.array([p[0] for p in points], dtype=float)
    c = np.array([p[1] for p in points], dtype=float)
    y = np.array([p[2] for p in points], dtype=float)
    one_c = len(set(c.tolist())) == 1
    # one robust pass: a shared machine makes single grid points outliers; drop those far off a plain fit
    x1 = _features(w, c, 1, deploy_round, c_full)[:, [0, 2] if one_c else [0, 1, 2, 3]]
    sol, *_ = np.linalg.lstsq(x1, y, rcond=None)
    rel1 = np.abs(x1 @ sol - y) / np.maximum(y, 1e-9)
    keep = rel1 <= max(0.25, 3.0 * float(np.median(rel1)))
    if keep.sum() >= max(4, len(y) // 2):
        w, c, y = w[keep], c[keep], y[keep]
    fits = []
    for q in [s for s in STEPS if s <= max(1, int(w.max()))]:
        x = _features(w, c, q, deploy_round, c_full)
        cols = [0, 2] if one_c else [0, 1, 2, 3]
        sol, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
        coef = np.zeros(4)
        coef[cols] = sol
        rel = (x @ coef - y) / np.maximum(y, 1e-9)
        fits.append((float(np.sqrt(np.mean(rel**2))), float(np.abs(rel).max()), q, coef))
    best = min(f[0] for f in fits)
    rms, mx, q, coef = next(f for f in fits if f[0] <= best * STEP_TOLERANCE + 1e-12)
    return Curve(
        q, [float(v) for v in coef], c_full, deploy_round, [list(map(float, p)) for p in points], rms, mx
    )


def width_grid(full: int) -> list[int]:
    """Widths timed for a curve of dense width ``full``: ~7 multiples of 8 (16 for wide blocks) spread over
    ``(0, full]``, each also one past it (where a kernel step shows as a jump), and ``full``."""
    unit = 16 if full >= 256 else 8 if full >= 32 else 1
    base = {max(unit, unit * round(full * k / (7 * unit))) for k in range(1, 8)}
    grid = {w for b in base for w in (b, b + 1) if w <= full} | {full}
    return sorted(grid)


def residual_grid(c_full: int, kind_of_family: str) -> list[int]:
    """Residual widths timed: the dense one, and for plain ViTs also ½ and ¼ of it (global pruning cuts the
    residual stream; Swin / ConvNeXt keep theirs). A latency budget never cuts below the smallest of them
    (:func:`min_residual`), so the fit is not extrapolated."""
    if kind_of_family == "stage":
        return [c_full]
    return sorted({c_full, max(8, 8 * round(c_full / 16)), max(8, 8 * round(c_full / 32))}, reverse=True)


def min_residual(model: LatencyModel) -> int:
    """The smallest residual width the latency model was calibrated at."""
    return min((int(p[1]) for c in model.curves.values() for p in c.points), default=0)


@dataclass
class LatencyModel:
    """Fitted curves + rest for one (device, backend, dtype, threads, batch, architecture)."""

    key: dict[str, Any]
    curves: dict[str, Curve]
    rest_ms: float
    dense_ms: float
    calibration_s: float
    rest_clamped: bool = False
    path: str | None = None
    #: the part of the rest that scales with the residual width (patch embedding, final norm, head): the rest
    #: of a model whose residual stream is c of C channels is ``rest_ms + rest_residual_ms * c / C``
    rest_residual_ms: float = 0.0
    scale: float = 1.0
    #: per block kind ("attn", "mlp", ...): in-graph time / probe time (module docstring); ``scale`` for a
    #: kind not listed
    scales: dict[str, float] = field(default_factory=dict)
    anchors: list[list[Any]] = field(default_factory=list)  # [anchor name, measured ms, predicted ms]

    # ------------------------------------------------------------------ prediction
    def scale_of(self, kind: str) -> float:
        """The anchor-fitted factor from a probe's time to the same block's time inside the deployed graph."""
        return float(self.scales.get(kind, self.scale))

    def block_ms(self, structs: list[Structure]) -> list[float]:
        """Predicted ms of each block."""
        out = []
        for s in structs:
            curve = self.curves.get(s.curve)
            if curve is None:
                raise LatencyError(
                    f"The latency model has no curve for block {s.curve}; it was calibrated for another "
                    "architecture. Re-run with --recalibrate (or a fresh --latency-cache)."
                )
            out.append(self.scale_of(s.kind) * curve.ms(s.width, s.c))
        return out

    def rest_at(self, c_fraction: float = 1.0) -> float:
        """The non-block time of a model whose residual stream keeps ``c_fraction`` of its channels."""
        return self.rest_ms + self.rest_residual_ms * c_fraction

    def predict_structs(self, structs: list[Structure]) -> float:
        c_fraction = structs[0].c / structs[0].c_full if structs and structs[0].c_full else 1.0
        return self.rest_at(c_fraction) + float(sum(self.block_ms(structs)))

    def predict(self, config: Any, dense_config: Any, image_size: int | None = None) -> float:
        """Predicted ms per batch of a (pruned) model with ``config`` deployed like the calibrated dense one."""
        return self.predict_structs(structures(config, image_size, dense_config))

    @property
    def fit_error(self) -> dict[str, float]:
        """Worst relative RMS / max error of the curves on their grids, and the whole-model error at the
        anchors (predicted vs measured deployed models)."""
        return {
            "rel_rms": max((c.rel_rms for c in self.curves.values()), default=0.0),
            "max_rel": max((c.max_rel for c in self.curves.values()), default=0.0),
            "anchor_max_rel": max((abs(a[2] / a[1] - 1) for a in self.anchors if a[1] > 0), default=0.0),
        }

    def summary(self) -> dict[str, Any]:
        """What a report keeps of the model (no grid points)."""
        return {
            "key": self.key,
            "dense_ms": self.dense_ms,
            "rest_ms": self.rest_ms,
            "rest_clamped": self.rest_clamped,
            "rest_residual_ms": self.rest_residual_ms,
            "scale": self.scale,
            "scales": self.scales,
            "anchors": self.anchors,
            "calibration_s": self.calibration_s,
            "fit_error": self.fit_error,
            "steps": {name: max(c.step, c.deploy_round) for name, c in self.curves.items()},
            "cache": self.path,
        }

    # ------------------------------------------------------------------ cache
    def to_json(self) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "key": self.key,
            "curves": {k: asdict(v) for k, v in self.curves.items()},
            "rest_ms": self.rest_ms,
            "dense_ms": self.dense_ms,
            "calibration_s": self.calibration_s,
            "rest_clamped": self.rest_clamped,
            "rest_residual_ms": self.rest_residual_ms,
            "scale": self.scale,
            "scales": self.scales,
            "anchors": self.anchors,
            "fit_error": self.fit_error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], path: str | None = None) -> LatencyModel:
        return cls(
            key=data["key"],
            curves={k: Curve(**v) for k, v in data["curves"].items()},
            rest_ms=float(data["rest_ms"]),
            dense_ms=float(data["dense_ms"]),
            calibration_s=float(data["calibration_s"]),
            rest_clamped=bool(data.get("rest_clamped", False)),
            path=path,
            rest_residual_ms=float(data.get("rest_residual_ms", 0.0)),
            scale=float(data.get("scale", 1.0)),
            scales={k: float(v) for k, v in data.get("scales", {}).items()},
            anchors=[list(a) for a in data.get("anchors", [])],
        )


@dataclass(frozen=True)
class Anchor:
    """A whole deployed model timed to anchor the curves: the dense model with every attention block at
    ``attn`` of its width, every MLP at ``mlp``, and the residual stream at ``residual`` of its width."""

    name: str
    attn: float = 1.0
    mlp: float = 1.0
    residual: float = 1.0


#: the anchors (module docstring); ``residual`` < 1 only where the residual stream is timed (plain ViTs)
ANCHORS = (
    Anchor("x1"),
    Anchor("x0.5", 0.5, 0.5),
    Anchor("x0.25", 0.25, 0.25),
    Anchor("attn0.25", attn=0.25),
    Anchor("mlp0.25", mlp=0.25),
    Anchor("residual0.5", residual=0.5),
)


#: the dense anchor's weight in the anchor fit relative to the others (its error shifts every speed-up)
DENSE_ANCHOR_WEIGHT = 3.0


def _anchor_fit(
    kinds: list[str], sums: list[dict[str, float]], times: list[float], c_fractions: list[float]
) -> tuple[dict[str, float], float, float, bool]:
    """Least squares ``times ~ rest + rest_residual * c/C + sum_k scale_k * sums[k]`` over the anchors ->
    (scales, rest, rest_residual, clamped).

    Weighted by 1 / time (relative errors) and :data:`DENSE_ANCHOR_WEIGHT` for the dense anchor. Every
    coefficient must come out >= 0 (scales > 0): fits are tried from the fullest to the simplest -- per
    kind scales before one scale for all kinds, with a residual-dependent rest (only where the anchors vary the
    residual width), then a constant rest, then none (``clamped``: the anchors asked for a negative rest; it is
    refitted as 0 with the scales, not clamped alone). If nothing fits: scale 1 and the rest from the dense
    anchor."""
    y = np.array(times)
    varied = len({round(c, 9) for c in c_fractions}) > 1
    # relative errors (speed-ups are ratios), the dense anchor -- every speed-up's reference -- weighted most
    w = 1.0 / np.maximum(y, 1e-12)
    w[0] *= DENSE_ANCHOR_WEIGHT

    def solve(cols: list[list[float]]) -> np.ndarray | None:
        x = np.array(cols, dtype=float).T
        if np.linalg.matrix_rank(x) < x.shape[1]:
            return None
        sol, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
        return sol if np.all(np.isfinite(sol)) else None

    rests = [("rest", "residual"), ("rest",), ()] if varied else [("rest",), ()]
    extra = {"rest": [1.0] * len(y), "residual": list(c_fractions)}
    for groups in ([[k] for k in kinds], [kinds]):  # per kind, then one scale for all
        block_cols = [[sum(s.get(k, 0.0) for k in g) for s in sums] for g in groups]
        for rest_terms in rests:
            sol = solve([extra[t] for t in rest_terms] + block_cols)
            if sol is None:
                continue
            fixed = dict(zip(rest_terms, sol[: len(rest_terms)].tolist()))
            sc = sol[len(rest_terms) :]
            if any(v < 0 for v in fixed.values()) or np.any(sc <= 0):
                continue
            scales = {k: float(v) for g, v in zip(groups, sc) for k in g}
            return scales, fixed.get("rest", 0.0), fixed.get("residual", 0.0), "rest" not in rest_terms
    return {k: 1.0 for k in kinds}, float(times[0] - sum(sums[0].values())), 0.0, True


def anchor_model(
    dense: Any, fraction: float = 1.0, *, mlp: float | None = None, residual: float = 1.0
) -> Any:
    """A copy of ``dense`` with every attention block kept at ``fraction`` of its width, every MLP at ``mlp``
    (default: ``fraction``) and the residual stream at ``residual`` (the first channels: anchors time shapes,
    not functions)."""
    from ..plan import WidthPlan
    from ..slicing import apply_width_plan

    mlp = fraction if mlp is None else mlp
    plan = WidthPlan.full(dense.config)
    for i, layer in enumerate(plan.layers):
        f = plan.mlp_size(i)
        layer.mlp = list(range(max(1, int(round(f * mlp)))))
        if plan.num_heads(i):
            hd = plan.dense_head_dim(i)
            layer.head_dims = list(range(max(1, int(round(hd * fraction)))))
    if residual < 1.0:
        plan.embed = list(range(max(8, 8 * int(round(plan.hidden_size * residual / 8)))))
    return apply_width_plan(dense, plan)


def _anchors(dense: Any, family: str, image_size: int | None) -> dict[str, Any]:
    """The anchor models of ``dense`` (:data:`ANCHORS`): the residual anchor only where residual widths were
    timed (plain ViTs), and no two anchors of equal blocks (e.g. ``attn0.25`` of a family without attention)."""
    out: dict[str, Any] = {}
    seen: set[tuple] = set()
    for a in ANCHORS:
        if a.residual < 1.0 and family != "plain":
            continue
        m = dense if a == ANCHORS[0] else anchor_model(dense, a.attn, mlp=a.mlp, residual=a.residual)
        shape = tuple(structures(m.config, image_size, dense.config))
        if shape not in seen:
            seen.add(shape)
            out[a.name] = m
    return out


def cache_dir(explicit: str | None = None) -> Path:
    return Path(
        explicit or os.environ.get("P3B_HF_LATENCY_CACHE") or Path.home() / ".cache" / "p3b_hf" / "latency"
    )


def cache_key(
    config: Any, *, device: str, backend: str, threads: int, batch: int, image_size: int | None
) -> dict:
    """What a calibrated model is valid for: the device / backend / dtype / threads / batch, the dense
    architecture (its blocks' curves and its model type) and the library versions that time it."""
    import torch

    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    curves = sorted({s.curve for s in structures(config, image_size)})
    return {
        "device": device,
        "backend": backend,
        "dtype": "fp32",
        "threads": int(threads),
        "batch": int(batch),
        "model_type": str(getattr(config, "model_type", "")),
        "image_size": image_size,
        "curves": curves,
        "num_blocks": len(structures(config, image_size)),
        "torch": torch.__version__,
        "onnxruntime": ort if backend == "onnxruntime" else None,
        "cpu": _cpu_name() if device == "cpu" else None,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def cache_path(key: dict[str, Any], directory: Path) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return directory / f"latency_{key['backend']}_{key['device']}_{digest}.json"


def calibrate(
    dense: Any,
    clock: Clock,
    key: dict[str, Any],
    *,
    directory: Path | None = None,
    recalibrate: bool = False,
    image_size: int | None = None,
    log: Any = None,
) -> LatencyModel:
    """The latency model of ``dense`` (a model: its config gives the blocks, the clock times it): loaded from
    the cache when one matches ``key``, else timed on the grid with ``clock``, fitted and cached."""
    path = cache_path(key, directory) if directory is not None else None
    if path is not None and path.exists() and not recalibrate:
        try:
            data = json.loads(path.read_text())
            if data.get("version") == CACHE_VERSION and data.get("key") == key:
                return LatencyModel.from_json(data, str(path))
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            pass  # a broken cache file is re-timed and replaced
    from ..optimize import has_fast_path

    t0 = time.perf_counter()
    config = dense.config
    structs = structures(config, image_size)
    staged = stage_family_of_config(config) is not None
    family = "stage" if staged or any(s.groups > 1 for s in structs) else "plain"
    deploy_round = 8 if has_fast_path(config) else 1
    reps: dict[str, Structure] = {}
    for s in structs:
        reps.setdefault(s.curve, s)
    curves: dict[str, Curve] = {}
    for name, s in reps.items():
        probes = [
            Probe(s.kind, w, s.heads, c, s.tokens, s.groups, s.gated)
            for c in residual_grid(s.c_full, family)
            for w in width_grid(s.full)
        ]
        if log:
            log(f"latency: timing {len(probes)} grid points of {name}")
        ms = clock.time_probes(probes)
        curves[name] = fit_curve([(p.width, p.c, m) for p, m in zip(probes, ms)], s.c_full, deploy_round)
    anchors = _anchors(dense, family, image_size)
    kinds = sorted({s.kind for s in structs})
    sums, c_fractions = [], []
    for a in anchors.values():
        by_kind = dict.fromkeys(kinds, 0.0)
        blocks = structures(a.config, image_size, config)
        for s in blocks:
            by_kind[s.kind] += curves[s.curve].ms(s.width, s.c)
        sums.append(by_kind)
        c_fractions.append(blocks[0].c / blocks[0].c_full if blocks else 1.0)
    if hasattr(clock, "time_models"):  # one round-robin run: load drift hits every anchor alike
        timed = clock.time_models(anchors, config)
        times = [float(timed[name]) for name in anchors]
    else:
        times = [float(clock.time_model(a)) for a in anchors.values()]
    scales, rest, rest_residual, clamped = _anchor_fit(kinds, sums, times, c_fractions)
    model = LatencyModel(
        key=key,
        curves=curves,
        rest_ms=rest,
        dense_ms=times[0],
        calibration_s=0.0,
        rest_clamped=clamped,
        scale=float(np.mean(list(scales.values()))) if scales else 1.0,
        scales=scales,
        rest_residual_ms=rest_residual,
    )
    model.anchors = [
        [name, t, model.rest_at(cf) + sum(model.scale_of(k) * v for k, v in b.items())]
        for name, t, b, cf in zip(anchors, times, sums, c_fractions)
    ]
    model.calibration_s = time.perf_counter() - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(model.to_json(), indent=1))
        os.replace(tmp, path)
        model.path = str(path)
    return model
