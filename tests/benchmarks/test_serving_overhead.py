"""benchmarks/serving_overhead.py: its paired summary, and the whole harness against real CPU vLLM servers.

The GPU figures come from the device; this keeps the script from rotting between device sessions.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmarks.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "serving_overhead.py"


def _module(monkeypatch):
    return load_script(monkeypatch, "serving_overhead")


def test_summary_pairs_each_round_with_static(monkeypatch):
    mod = _module(monkeypatch)

    def rnd(static_tok, elastic_tok, static_ttft, elastic_ttft):
        return {"static": {"saturation": {"output_tok_s": static_tok}, "steady": {"ttft_p50": static_ttft}},
                "elastic": {"saturation": {"output_tok_s": elastic_tok}, "steady": {"ttft_p50": elastic_ttft}}}

    # The machine drifts (round 1 is twice as fast for both): paired ratios see no gap, medians would.
    rounds = [rnd(100, 97, 0.050, 0.055), rnd(200, 196, 0.025, 0.0255), rnd(150, 150, 0.040, 0.040)]
    out = mod.summarize(rounds, ["static", "elastic"])
    assert out["static"]["output_tok_s"] == {"median": 150, "min": 100, "max": 200, "n": 3}
    assert "output_tok_s_vs_static" not in out["static"]
    tok = out["elastic"]["output_tok_s_vs_static"]
    assert tok["n"] == 3 and tok["median"] == pytest.approx(0.98) and tok["min"] == pytest.approx(0.97)
    assert tok["max"] == pytest.approx(1.0)
    assert out["elastic"]["ttft_p50_vs_static"]["max"] == pytest.approx(1.1)
    assert out["elastic"]["ttft_p99"] == {"median": None, "min": None, "max": None, "n": 0}  # not measured


@pytest.mark.slow
def test_harness_runs_on_cpu_servers_and_saves_every_round(tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "overhead.json"
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--model", "tiny", "--systems", "elastic,static",
           "--rounds", "2", "--sat-requests", "12", "--sat-concurrency", "6", "--sat-tokens", "8",
           "--rate", "4", "--duration", "1.5", "--steady-tokens", "8", "--prompt-len", "32",
           "--max-model-len", "512", "--cpu-kv-mib", "64", "--out", str(out)]
    # The tiny model comes from kvlab's model cache, as for tests/lab (made there if missing).
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["complete"] and data["systems"] == ["static", "elastic"]  # static is started first
    assert [r["order"] for r in data["rounds"]] == [["static", "elastic"], ["elastic", "static"]]
    for r in data["rounds"]:
        for system in ("static", "elastic"):
            sat, steady = r[system]["saturation"], r[system]["steady"]
            assert sat["requests"] == 12 and sat["output_tok_s"] > 0
            assert steady["requests"] >= 1 and 0 < steady["ttft_p50"] <= steady["ttft_p99"]
        assert "pool" not in r["static"]["saturation"]  # static vLLM publishes no pool
        pool = r["elastic"]["saturation"]["pool"]  # the elastic pool, read from kvlab's registry around the phase
        assert pool["pages_mapped"] >= 0 and pool["pages_unmapped"] >= 0 and pool["mapped_after"] > 0
    ratio = data["summary"]["elastic"]["output_tok_s_vs_static"]
    assert ratio["n"] == 2 and ratio["min"] > 0
    assert data["versions"]["vllm"] and data["system_info"]
    assert "vs static" in run.stdout
