"""``compare.md``: the markdown table of the rows (:func:`markdown_table`), the leave-one-domain-out one
(:func:`lodo_table`)."""

from __future__ import annotations

from typing import Any

from .rows import eval_set_names


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _pct(v: float | None, spec: str = ".2f") -> str:
    return _fmt(None if v is None else 100 * v, spec)


def _pp(v: float | None) -> str:
    return _fmt(None if v is None else 100 * v, "+.2f")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """``compare.md``: one line per row; ``start`` and ``epochs (total)`` say what each cell started from and
    how much training it had in all (a cell started from the dense cell also had the dense cell's epochs).
    With several eval sets: one accuracy column per set, the source-vs-target gap and its change against the
    dense row (percentage points). Rows of ``--protocol lodo`` get :func:`lodo_table`."""
    if any("per_domain" in r for r in rows):
        return lodo_table(rows)
    sets = eval_set_names(rows)
    acc_heads = [f"{n} (%)" for n in sets] + ["gap (pp)", "Δgap vs dense (pp)"] if sets else ["top-1 (%)"]
    heads = [
        "method",
        "target ratio",
        "start",
        "epochs (total)",
        *acc_heads,
        "params (M)",
        "param reduction",
        "GMACs",
        "speed vs dense (eager)",
        "deployable speed vs dense",
        "wall (s)",
    ]
    latency = any("target_speedup" in r for r in rows)
    if latency:
        from ..latency.report import TABLE_HEADS, table_cells

        heads += TABLE_HEADS
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        head = (
            f"| {r['method']} | {_fmt(r['prune_ratio'], '.2f')} | {r.get('start') or '–'} | "
            f"{_fmt(r.get('epochs_total'), 'g')} |"
        )
        if r["status"] != "ok":
            lines.append(
                f"{head} {r['status']}: {r['error'].splitlines()[0][:90]} |" + " |" * (len(heads) - 5)
            )
            continue
        if sets:
            accs = [_pct((r.get("eval_sets") or {}).get(n)) for n in sets] + [
                _pp(r.get("gap")),
                _pp(r.get("gap_change")),
            ]
        else:
            accs = [_pct(r["accuracy"])]
        red = None if r["param_reduction"] is None else 100 * r["param_reduction"]
        lines.append(
            f"{head} {' | '.join(accs)} | "
            f"{r['params'] / 1e6:.3f} | {_fmt(red, '.1f')} % | {r['macs'] / 1e9:.3f} | "
            f"{_fmt(r['throughput_vs_dense'], '.2f')}× | {_fmt(r.get('deploy_speed_vs_dense'), '.2f')}× | "
            f"{_fmt(r['wall_time_s'], '.0f')} |" + (table_cells(r) if latency else "")
        )
    return "\n".join(lines)


def lodo_table(rows: list[dict[str, Any]]) -> str:
    """The leave-one-domain-out table: one column per held-out domain (the accuracy on it when it was held
    out), their mean, the mean in-domain ``source`` accuracy, the mean gap and its change vs dense."""
    domains = list(next((r["per_domain"] for r in rows if r.get("per_domain")), {}))
    heads = [
        "method",
        "target ratio",
        "params (M)",
        "param reduction",
        *[f"{d} (%)" for d in domains],
        "avg (%)",
        "source avg (%)",
        "gap (pp)",
        "Δgap vs dense (pp)",
        "speed vs dense (eager)",
        "deployable speed vs dense",
    ]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        head = f"| {r['method']} | {_fmt(r['prune_ratio'], '.2f')} |"
        if r["status"] != "ok":
            lines.append(
                f"{head} {r['status']}: {r['error'].splitlines()[0][:90]} |" + " |" * (len(heads) - 3)
            )
            continue
        red = None if r["param_reduction"] is None else 100 * r["param_reduction"]
        cells = [
            f"{r['params'] / 1e6:.3f}",
            f"{_fmt(red, '.1f')} %",
            *[_pct(r["per_domain"].get(d)) for d in domains],
            _pct(r["accuracy"]),
            _pct(r.get("source_accuracy")),
            _pp(r.get("gap")),
            _pp(r.get("gap_change")),
            f"{_fmt(r.get('throughput_vs_dense'), '.2f')}×",
            f"{_fmt(r.get('deploy_speed_vs_dense'), '.2f')}×",
        ]
        lines.append(f"{head} {' | '.join(cells)} |")
    return "\n".join(lines)
