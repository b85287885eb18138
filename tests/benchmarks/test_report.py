"""benchmarks/stats.mean_interval and report_gpu's pooled paired ratios: the figures the README quotes."""

import pytest

from tests.benchmarks.scripts import load_script


def _round(static_tok, elastic_tok, static_ttft, elastic_ttft):
    return {"static": {"saturation": {"output_tok_s": static_tok}, "steady": {"ttft_p50": static_ttft}},
            "elastic": {"saturation": {"output_tok_s": elastic_tok}, "steady": {"ttft_p50": elastic_ttft}}}


def test_interval_pools_the_rounds_of_several_runs(monkeypatch):
    report = load_script(monkeypatch, "report_gpu")
    stats = load_script(monkeypatch, "stats")
    m = stats.mean_interval([1.0, 2.0, 3.0, None])
    assert m["mean"] == 2.0 and m["n"] == 3
    assert m["high"] - 2.0 == pytest.approx(4.303 / 3 ** 0.5, rel=1e-4)  # t(0.975, 2 df) * sd / sqrt(n)
    assert stats.mean_interval([0.9])["low"] is None  # one round: no interval

    runs = [{"rounds": [_round(100, 90, 0.05, 0.05), _round(100, 110, 0.05, 0.055)]},
            {"rounds": [_round(200, 200, 0.04, 0.04)]}]
    rounds = [r for run in runs for r in run["rounds"]]
    assert stats.paired_ratios(rounds, "elastic", "saturation", "output_tok_s") == pytest.approx([0.9, 1.1, 1.0])
    line = report.overhead_intervals(runs)
    assert line.startswith("- kvlab vs static: throughput 1.000 (95% 0.75-1.25, 3 rounds); TTFT p50 1.033")
    assert "kvcached" not in line  # not in these runs
