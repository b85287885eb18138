"""latency.js in headless Chromium: percentile table and histograms per model, updates, cleanup."""

import numpy as np
import pytest

from .conftest import ORIGIN

pytest.importorskip("anywidget", reason="kvlab.views needs anywidget (pip install anywidget ipywidgets)")
views = pytest.importorskip("kvlab.views")

MOUNT = f"""async (state) => {{
  const t = await import("{ORIGIN}/ui/fake_model.js");
  window.t = t;
  window.w = await t.mount("{ORIGIN}/widgets/latency.js", state);
}}"""
ROW = "(m) => [...document.querySelectorAll(`tr[data-model='${m}'] td`)].map(td => td.textContent)"


def test_table_and_histograms(page, widget_state):
    lv = views.LatencyView()
    lv.add("small", np.full(100, 0.02), np.full(100, 0.5))
    page.evaluate(MOUNT, widget_state(lv))
    assert page.evaluate(ROW, "small") == ["small", "100", "20 ms", "20 ms", "20 ms", "500 ms", "500 ms", "500 ms"]
    assert page.eval_on_selector_all(".kvlab-lat-panel", "ps => ps.map(p => p.dataset.metric)") == ["ttft", "e2e"]
    # Some bar of the model colour is painted in its TTFT histogram.
    painted = page.evaluate("""() => { const c = document.querySelector("[data-metric=ttft] canvas[data-model=small]");
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] === 37 && d[i+1] === 99 && d[i+2] === 235) n++; return n; }""")
    assert painted > 20


def test_updates_add_models_and_move_percentiles(page, widget_state):
    lv = views.LatencyView()
    lv.add("a", 0.01, 0.1)
    page.evaluate(MOUNT, widget_state(lv))
    lv.add("a", np.linspace(0.01, 1.0, 99), np.linspace(0.1, 10, 99))
    lv.add("b", 2.0, 20.0)
    page.evaluate("async (s) => { w.model.setMany(s); await t.frames(); }", widget_state(lv))
    row = page.evaluate(ROW, "a")
    p99 = lv.percentiles("a")["ttft"][2]
    assert row[1] == "100" and row[4] == f"{p99 * 1e3:.0f} ms"
    assert page.evaluate(ROW, "b")[2] == "2.00 s"
    assert page.locator("[data-metric=e2e] canvas").count() == 2


def test_cleanup_removes_listeners_and_dom(page, widget_state):
    lv = views.LatencyView()
    lv.add("a", 0.01, 0.1)
    page.evaluate(MOUNT, widget_state(lv))
    page.evaluate("w.cleanup()")
    assert page.evaluate("[w.model.listenerCount(), w.el.childElementCount]") == [0, 0]
