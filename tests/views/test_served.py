"""ServedFleet reads a real `kvlab serve` endpoint's event stream (no engine needs to run for the table)."""

import importlib.util
import time

import pytest

from kvlab.views.served import ServedFleet, render

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM (devices resolve through it)")


def test_served_fleet_shows_each_model_from_the_stream():
    from kvlab.serve import Gateway

    cfg = {"port": 0, "sample_interval": 0.1,
           "models": {"qwen-a": {"model": "synthetic:qwen2/tiny"}, "qwen-b": {"model": "synthetic:qwen2/tiny"}}}
    with Gateway(cfg) as gw:
        view = gw.watch()
        assert isinstance(view, ServedFleet)
        try:
            deadline = time.monotonic() + 10
            while view.samples < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert view.samples >= 2, view.error
            html = view.widget.value
            assert html.count("<tr>") == 3 and "qwen-a" in html and "qwen-b" in html and html.count("asleep") == 2
        finally:
            view.close()
        assert not view._thread.is_alive()


def test_render_shows_kv_reason_and_wake():
    sample = {"models": [
        {"model": "a", "state": "awake", "reason": None, "requests": 3, "in_flight": 1, "wake_s": [1.5],
         "ttft_after_wake_ms": [1620.0], "kv": {"used": 2 << 20, "mapped": 8 << 20, "limit": None}},
        {"model": "b", "state": "failed", "reason": "engine of b died (killed by signal 9)", "requests": 1,
         "in_flight": 0, "wake_s": [], "ttft_after_wake_ms": [], "kv": None}]}
    html = render(sample)
    assert "2 MiB used / 8 MiB mapped / limit none" in html and "1.50 s" in html and "1620 ms" in html
    assert "killed by signal 9" in html
