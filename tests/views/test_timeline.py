"""MemoryTimeline on the Python side: base + tail rows, rebases, limits and marks."""

import numpy as np
import pytest

pytest.importorskip("anywidget", reason="kvlab.views needs anywidget (pip install anywidget ipywidgets)")

from kvlab.views import MemoryTimeline

G = 1 << 30


def rows_of(state, width):
    return np.frombuffer(state["base"] + state["tail"]).reshape(-1, width)


def test_rows_base_and_tail(cap, coalescer):
    tl = MemoryTimeline(rebase_every=4, coalescer=coalescer)
    tl.append(0.0, {"a": G}, total=8 * G)
    tl.flush()
    assert tl.columns == ["a"] and len(tl.base) == 3 * 8 and tl.tail == b""
    tl.append(1.0, {"a": 2 * G})
    tl.append(2.0, {"a": 3 * G})
    tl.flush()
    assert len(tl.base) == 24 and len(tl.tail) == 2 * 24  # only the new rows travel
    msg = cap.updates(tl.comm.comm_id)[-1]
    assert msg.data["state"] == {} and msg.data["buffer_paths"] == [["tail"]] and len(msg.buffers) == 1
    got = rows_of(cap.state(tl.comm.comm_id), 3)
    np.testing.assert_array_equal(got, tl.rows().reshape(-1, 3))
    assert np.isnan(got[1, 1]) and got[2, 2] == 3 * G


def test_new_model_rebases_with_nan_before_it(coalescer):
    tl = MemoryTimeline(coalescer=coalescer)
    tl.append(0, {"a": 1})
    tl.flush()
    tl.append(1, {"a": 2, "b": 5})
    tl.flush()
    assert tl.columns == ["a", "b"] and tl.tail == b""
    base = np.frombuffer(tl.base).reshape(-1, 4)
    assert np.isnan(base[0, 3]) and base[1, 3] == 5


def test_rebase_after_rebase_every_and_window(coalescer):
    tl = MemoryTimeline(window=10, rebase_every=3, coalescer=coalescer)
    for i in range(25):
        tl.append(i, {"a": i})
        tl.flush()
    rows = rows_of(tl.get_state(), 3)
    assert rows[-10:, 0].tolist() == list(range(15, 25))  # the view trims to `window`
    assert len(tl.base) // 24 <= 10 and len(tl.tail) // 24 <= 3


def test_limits_and_marks(coalescer):
    tl = MemoryTimeline(coalescer=coalescer)
    tl.set_limit("a", 4 * G)
    tl.set_limit("b", G)
    tl.set_limit("b", None)
    tl.mark(3.5, "burst starts")
    tl.flush()
    assert tl.limits == {"a": 4 * G} and tl.marks == [[3.5, "burst starts"]]


def test_bad_input():
    tl = MemoryTimeline()
    tl.append(5, {"a": 1})
    with pytest.raises(ValueError, match="backwards"):
        tl.append(4, {"a": 1})
    with pytest.raises(ValueError, match=">= 0"):
        tl.append(6, {"a": -1})
    with pytest.raises(ValueError, match="rebase_every"):
        MemoryTimeline(window=10, rebase_every=11)
