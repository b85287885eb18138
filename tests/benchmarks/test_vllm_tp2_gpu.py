"""benchmarks/vllm_tp2_gpu.py's per-shape summary, from two runs as its children report them (no GPU needed):
the issue's keys (identity, idle VRAM per GPU) and the limit step's figures."""

from .scripts import load_script

MiB = 1 << 20


def _run(mode, outputs, idle, after_grace):
    base = [1000 * MiB, 2000 * MiB]
    return {"mode": mode, "vllm": "0.24.0", "outputs": outputs, "vram_before": base,
            "vram_idle": [b + idle * MiB for b in base], "vram_after_burst": [b + 3000 * MiB for b in base],
            "vram_after_grace": [b + after_grace * MiB for b in base], "ranks_after_grace": [],
            "limit": {"limit_bytes": 96 * MiB, "max_mapped_bytes": 96 * MiB} if mode == "elastic" else None}


def test_summary_per_shape(monkeypatch):
    tp2 = load_script(monkeypatch, "vllm_tp2_gpu")
    runs = {"static": _run("static", [[1, 2], [3, 4]], 20000, 20000),
            "elastic": _run("elastic", [[1, 2], [3, 4]], 1500, 1400)}
    s = tp2.summarize(runs)
    assert s["identical"] and s["mismatched_requests"] == [] and s["distinct_outputs"] == 2
    assert s["idle_MiB"] == {"static": [20000, 20000], "elastic": [1400, 1400]}  # elastic: after the grace
    assert s["elastic_idle_after_start_MiB"] == [1500, 1500]
    assert s["limit"] == {"limit_bytes": 96 * MiB, "max_mapped_bytes": 96 * MiB}
    assert "outputs" not in s["runs"]["elastic"]
    runs["elastic"]["outputs"] = [[1, 2], [3, 5]]
    assert tp2.summarize(runs)["mismatched_requests"] == [1]
