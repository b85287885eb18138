"""What benchmarks/kv_pressure.py reports from one system's run: latency per model, SLOs, queueing, and how
long each burst's first second spent mapping. Pure functions over RequestRecords and sampled timelines, so
they are tested without engines; the plot is matplotlib (a PNG next to the JSON, for the README)."""

from __future__ import annotations

from statistics import mean

from stats import percentile

SLO_S = (1.0, 5.0)  # TTFT thresholds of kvcached's headline plot


def _ms(v):
    return None if v is None else v * 1000


def tpot(rec) -> float | None:
    """Seconds per output token after the first (vLLM bench serve's TPOT)."""
    if not rec.ok or rec.ttft is None or rec.e2e is None or not rec.tokens_out or rec.tokens_out < 2:
        return None
    return (rec.e2e - rec.ttft) / (rec.tokens_out - 1)


def latency(records) -> dict:
    """TTFT and TPOT (ms) over ``records``; SLO attainment counts every scheduled request (a failed one misses)."""
    ok = [r for r in records if r.ok]
    ttft = [r.ttft for r in ok]
    tp = [t for t in (tpot(r) for r in ok) if t is not None]
    out = {"requests": len(records), "ok": len(ok), "errors": len(records) - len(ok),
           "ttft_mean_ms": _ms(mean(ttft)) if ttft else None, "ttft_p50_ms": _ms(percentile(ttft, 50)),
           "ttft_p99_ms": _ms(percentile(ttft, 99)), "tpot_mean_ms": _ms(mean(tp)) if tp else None,
           "tpot_p50_ms": _ms(percentile(tp, 50)), "tpot_p99_ms": _ms(percentile(tp, 99))}
    for slo in SLO_S:
        met = sum(1 for t in ttft if t <= slo)
        out[f"slo_ttft_le_{slo:g}s"] = met / len(records) if records else None
    errors = sorted({r.error for r in records if not r.ok and r.error})
    if errors:
        out["error_kinds"] = errors[:5]
    return out


def waiting(rows: list[dict], key: str) -> dict:
    """Requests waiting in ``key``'s queue (vllm:num_requests_waiting from /metrics) over the telemetry rows."""
    vals = [r[f"waiting:{key}"] for r in rows if r.get(f"waiting:{key}") is not None]
    return {"max": max(vals) if vals else None, "mean": mean(vals) if vals else None, "samples": len(vals),
            "seconds_queued": sum(1 for v in vals if v > 0)}


def burst_mapping(samples: list[tuple[float, int, int, int]], start: float, window: float = 1.0) -> dict:
    """One model's burst: when its pool began to grow and how long its first ``window`` seconds spent mapping.

    ``samples``: (t, mapped, used, map_ns) of the model's pool as its registry record published them, t in
    seconds from the run's start; ``start``: when the model's first request was scheduled. Growth starts
    at the first sample after ``start`` whose mapped bytes rose; the first second's mapping time is map_ns
    at growth + ``window`` minus map_ns at the sample before the growth.
    """
    if not samples:
        return {"start_s": start, "samples": 0}
    before = [s for s in samples if s[0] <= start]
    base = before[-1] if before else samples[0]
    rising = [s for s in samples if s[0] > start and s[1] > base[1]]
    if not rising:
        return {"start_s": start, "grew": False}
    t_grow = rising[0][0]
    at = [s for s in samples if s[0] < t_grow][-1]
    end = [s for s in samples if s[0] <= t_grow + window][-1]
    return {"start_s": start, "grew": True, "growth_start_s": t_grow,
            "map_ms_first_s": (end[3] - at[3]) / 1e6, "mapped_first_s_gib": (end[1] - at[1]) / 2**30,
            "map_ms_total": (samples[-1][3] - base[3]) / 1e6,
            "peak_mapped_gib": max(s[1] for s in samples if s[0] >= start) / 2**30}


def plot(systems: dict, path) -> None:
    """One column per system: each model's memory over time (process memory from NVML or RSS; for kvlab
    also its pool's mapped KV from the registry, dashed) above its waiting requests."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s for s in systems if "timeline" in systems[s]]
    if not names:
        return
    fig, axes = plt.subplots(2, len(names), figsize=(5.5 * len(names), 6), squeeze=False, sharex=True,
                             sharey="row")
    for col, system in enumerate(names):
        tl = systems[system]["timeline"]
        top, bottom = axes[0][col], axes[1][col]
        for i, (model, series) in enumerate(sorted(tl["mem_gib"].items())):
            color = f"C{i}"
            if series:
                top.plot(*zip(*series), color=color, label=f"{model} process")
            kv = tl["kv_mapped_gib"].get(model)
            if kv:
                top.plot(*zip(*kv), color=color, linestyle="--", label=f"{model} KV mapped")
            wait = tl["waiting"].get(model)
            if wait:
                bottom.step(*zip(*wait), where="post", color=color, label=model)
        top.set_title(system)
        top.set_ylabel("GiB")
        bottom.set_ylabel("requests waiting")
        bottom.set_xlabel("seconds")
        top.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
