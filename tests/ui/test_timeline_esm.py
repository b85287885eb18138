"""timeline.js in headless Chromium: stacked areas from base + tail, limits and marks, cleanup."""

import pytest

from .conftest import ORIGIN

pytest.importorskip("anywidget", reason="kvlab.views needs anywidget (pip install anywidget ipywidgets)")
views = pytest.importorskip("kvlab.views")

MOUNT = f"""async (state) => {{
  const t = await import("{ORIGIN}/ui/fake_model.js");
  window.t = t;
  window.w = await t.mount("{ORIGIN}/widgets/timeline.js", state);
}}"""
GiB = 1 << 30


def _timeline(n=20, **kw):
    tl = views.MemoryTimeline(**kw)
    for i in range(n):
        tl.append(i, {"a": 4 * GiB, "b": 2 * GiB}, total=8 * GiB)
    return tl


def test_renders_stacked_areas_legend_and_total(page, widget_state):
    tl = _timeline()
    tl.set_limit("a", 6 * GiB)
    tl.mark(10, "burst starts")
    page.evaluate(MOUNT, widget_state(tl))
    assert page.get_attribute(".kvlab-tl canvas", "data-rows") == "20"
    legend = page.text_content(".kvlab-tl .kvlab-legend")
    assert "a 4 GiB / limit 6 GiB" in legend and "b 2 GiB" in legend
    # Plot area: y(v) = 216 - v / (8.4 GiB) * 198. Model a fills 0-4 GiB, b 4-6 GiB above it.
    px = lambda v: page.evaluate("(y) => t.pixel(document.querySelector('.kvlab-tl canvas'), 400, y)",
                                 round(216 - v / (8 * GiB * 1.05) * 198))
    assert px(2 * GiB)[:3] == [37, 99, 235]  # palette[0]
    assert px(5 * GiB)[:3] == [245, 158, 11]  # palette[1]
    assert px(7.4 * GiB)[3] == 0  # above the stack and the total: transparent


def test_tail_appends_and_rebase_resets(page, widget_state):
    tl = _timeline(n=5, rebase_every=8)
    page.evaluate(MOUNT, widget_state(tl))
    tl.append(5, {"a": GiB, "b": GiB})
    s = widget_state(tl)
    assert len(s["tail"]["__b64__"]) > 0  # only the new row travels
    page.evaluate("async (s) => { w.model.set('tail', s.tail); await t.frames(); }", s)
    assert page.get_attribute(".kvlab-tl canvas", "data-rows") == "6"
    for i in range(6, 20):  # past rebase_every: a fresh base, empty tail
        tl.append(i, {"a": GiB, "c": GiB})
    page.evaluate("async (s) => { w.model.setMany(s); await t.frames(); }", widget_state(tl))
    assert page.get_attribute(".kvlab-tl canvas", "data-rows") == "20"
    assert "c 1 GiB" in page.text_content(".kvlab-tl .kvlab-legend")


def test_window_bounds_rows(page, widget_state):
    tl = _timeline(n=50, window=30, rebase_every=30)
    page.evaluate(MOUNT, widget_state(tl))
    assert page.get_attribute(".kvlab-tl canvas", "data-rows") == "30"


def test_cleanup_removes_listeners_and_dom(page, widget_state):
    page.evaluate(MOUNT, widget_state(_timeline()))
    assert page.evaluate("w.model.listenerCount()") > 0
    page.evaluate("w.cleanup()")
    assert page.evaluate("[w.model.listenerCount(), w.el.childElementCount]") == [0, 0]


def test_total_label_redraws(page, widget_state):
    tl = _timeline()
    page.evaluate(MOUNT, widget_state(tl))
    before = page.evaluate("document.querySelector('.kvlab-tl canvas').toDataURL()")
    tl.total_label = "reserved (pools' capacity)"  # what a Dashboard on the CPU draws
    page.evaluate("async (s) => { w.model.set('total_label', s.total_label); await t.frames(); }", widget_state(tl))
    assert page.evaluate("document.querySelector('.kvlab-tl canvas').toDataURL()") != before
