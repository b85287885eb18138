"""benchmarks/gpu_serving.py's per-burst summary (its servers need the GPU; this keeps the figures honest)."""

import pytest

from kvlab.lab.client import RequestRecord
from tests.benchmarks.scripts import load_script


def _rec(model, phase, start, ttft, status="ok"):
    return RequestRecord(model=model, url="http://127.0.0.1:1", phase=phase, start=start, ttft=ttft,
                         e2e=None if ttft is None else ttft + 1.0, status=status)


def test_per_burst_splits_an_alternating_run_by_phase_in_order(monkeypatch):
    mod = load_script(monkeypatch, "gpu_serving")
    # Two rounds over two models; only m1's first burst is slow, and one of its requests failed.
    recs = [_rec("m0", 0, 0.0, 0.10), _rec("m0", 0, 0.01, 0.12),
            _rec("m1", 1, 7.5, 0.40), _rec("m1", 1, 7.52, 0.30), _rec("m1", 1, 7.53, None, status="error"),
            _rec("m0", 2, 15.0, 0.11), _rec("m1", 3, 22.5, 0.13)]
    out = mod.per_burst(list(reversed(recs)))  # records arrive in completion order, not sending order
    assert [(b["phase"], b["model"]) for b in out] == [(0, "m0"), (1, "m1"), (2, "m0"), (3, "m1")]
    assert [b["sent_s"] for b in out] == [0.0, 7.5, 15.0, 22.5]
    slow = out[1]
    assert (slow["requests"], slow["ok"]) == (3, 2)
    assert slow["ttft_p50"] == pytest.approx(0.30)  # nearest rank of the two that got a first token
    assert slow["ttft_p99"] == pytest.approx(0.40)
    assert out[0]["ttft_p99"] == pytest.approx(0.12) and out[3]["ttft_p50"] == pytest.approx(0.13)
