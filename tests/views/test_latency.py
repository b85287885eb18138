"""LatencyView on the Python side: histograms and percentiles over a bounded window."""

import numpy as np
import pytest

pytest.importorskip("anywidget", reason="kvlab.views needs anywidget (pip install anywidget ipywidgets)")

from kvlab.views import LatencyView


def test_hist_and_percentiles(cap, coalescer):
    lv = LatencyView(coalescer=coalescer)
    ttft = np.linspace(0.01, 0.1, 101)
    lv.add("a", ttft, ttft * 10)
    lv.add("a", 0.05, float("nan"))  # finished without an end-to-end time: counted, not plotted
    lv.add("b", 200.0, 0.0005)  # out of range: clamped into the end bins
    lv.flush()
    nb = len(lv.edges) - 1
    hist = np.frombuffer(lv.hist, np.uint32).reshape(2, 2, nb)
    assert hist[0, 0].sum() == 102 and hist[0, 1].sum() == 101
    assert hist[1, 0, -1] == 1 and hist[1, 1, 0] == 1
    assert lv.stats["a"]["n"] == 102
    np.testing.assert_allclose(lv.stats["a"]["e2e"], np.percentile(ttft * 10, [50, 90, 99]))
    assert lv.models == ["a", "b"]
    assert len(cap.updates(lv.comm.comm_id)[-1].buffers) == 1


def test_window_keeps_the_latest_samples():
    lv = LatencyView(window=10)
    lv.add("a", np.arange(1, 26) / 100, np.arange(1, 26) / 10)
    for i in range(3):
        lv.add("a", 1.0 + i, 10.0)
    p = lv.percentiles("a")
    assert p["ttft"][0] == np.percentile(list(np.arange(19, 26) / 100) + [1, 2, 3], 50)


def test_bad_input():
    lv = LatencyView()
    with pytest.raises(ValueError, match="one length"):
        lv.add("a", [0.1, 0.2], [1.0])
    with pytest.raises(ValueError, match=">= 0"):
        lv.add("a", -1, 1)
