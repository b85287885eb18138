"""benchmarks/hybrid_gpu.py's saved result, from two runs as its children report them (no GPU needed)."""

from tests.benchmarks.scripts import load_script

MiB = 1 << 20


def _run(mode, outputs, long_tokens, **extra):
    groups = [{"layers": 4, "spec": "SlidingWindowSpec", "sliding_window": 512, "block_size": 16}] * 6 + [
        {"layers": 4, "spec": "FullAttentionSpec", "sliding_window": None, "block_size": 16}]
    stats = {"peak_mapped_bytes": 96 * MiB} if mode == "elastic" else {}
    return {"mode": mode, "vllm": "0.24.0", "vram_before": 1000 * MiB, "vram_idle": 1000 * MiB + extra["idle"],
            "groups": groups, "static_kv_bytes": 40_000 * MiB, "kvlab_stats_after_burst": stats,
            "kvlab_stats_end": stats, "outputs": outputs,
            "long": {"tokens": long_tokens, "mapped_after_prefill": 64 * MiB if mode == "elastic" else None,
                     "mapped_peak": 64 * MiB if mode == "elastic" else None,
                     "mapped_last_decode": 16 * MiB if mode == "elastic" else None}}


def test_summary_has_the_issues_top_level_keys_and_the_figures(monkeypatch):
    hb = load_script(monkeypatch, "hybrid_gpu")
    runs = {"static": _run("static", [[1, 2], [3, 4]], [5], idle=41_000 * MiB),
            "elastic": _run("elastic", [[1, 2], [3, 4]], [5], idle=2_000 * MiB)}
    s = hb.summarize(runs, "gemma-3-1b", "NVIDIA H100 80GB HBM3, 550.54", 0.5)
    assert (s["model_shape"], s["identical"], s["groups"]) == ("gemma3/gemma-3-1b", True, 7)
    assert s["idle_vram_MiB"] == {"static": 41_000, "elastic": 2_000}
    assert s["peak_kv_MiB"] == {"static": 40_000, "elastic": 96}
    assert s["long_request_kv_MiB"] == {"mapped_after_prefill": 64, "mapped_peak": 64, "mapped_last_decode": 16}
    assert "outputs" not in s["runs"]["static"] and s["config"]["load_format"] == "dummy"

    runs["elastic"]["long"]["tokens"] = [6]  # one token off, in the long request only
    assert hb.summarize(runs, "gemma-3-1b", "H200", 0.5)["identical"] is False
