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
