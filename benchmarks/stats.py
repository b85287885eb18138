"""Summaries and readings shared by the benchmark scripts (imported by name: each script runs with benchmarks/ on sys.path)."""

from __future__ import annotations

import statistics


def percentile(values, q: float) -> float | None:
    """The nearest-rank ``q``-th percentile of the values that are not None; None if there are none."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    return vals[min(len(vals) - 1, max(0, round(q / 100 * (len(vals) - 1))))]


def spread(values) -> dict:
    """Median, min, max and count of the values that are not None (None figures when there are none)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def round_figure(rnd: dict, system: str, part: str, field: str):
    """One figure of one system in one paired round (serving_overhead.py's JSON), or None if not measured."""
    return rnd.get(system, {}).get(part, {}).get(field)


def paired_ratios(rounds, system: str, part: str, field: str) -> list[float]:
    """Each round's ratio of ``system``'s figure to static's, where both were measured."""
    out = []
    for rnd in rounds:
        a, b = round_figure(rnd, system, part, field), round_figure(rnd, "static", part, field)
        if a is not None and b:
            out.append(a / b)
    return out


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (no scipy in the benchmarks' needs).
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def mean_interval(values) -> dict:
    """Mean and 95% confidence interval (Student's t) of the values that are not None, for paired per-round
    ratios: how far the data let the true ratio be from the mean. None figures with fewer than two values."""
    vals = [v for v in values if v is not None]
    if len(vals) < 2:
        return {"mean": statistics.mean(vals) if vals else None, "low": None, "high": None, "n": len(vals)}
    mean = statistics.mean(vals)
    half = (_T95[len(vals) - 2] if len(vals) <= 31 else 1.96) * statistics.stdev(vals) / len(vals) ** 0.5
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(vals)}


def pool_state(server) -> dict | None:
    """The server's pool as last published (None for static vLLM and kvcached, which publish none)."""
    from kvlab import registry

    if server.pool_name is None:
        return None
    rec = registry.read(server.pool_name)
    return {"mapped": rec.mapped, "n_maps": rec.n_maps, "n_unmaps": rec.n_unmaps}


def pool_change(before: dict, after: dict) -> dict:
    """What a pool did between two ``pool_state`` readings: mapped bytes then and now, pages mapped and unmapped."""
    return {"mapped_before": before["mapped"], "mapped_after": after["mapped"],
            "pages_mapped": after["n_maps"] - before["n_maps"], "pages_unmapped": after["n_unmaps"] - before["n_unmaps"]}
