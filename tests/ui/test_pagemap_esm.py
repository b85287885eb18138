"""pagemap.js in headless Chromium: paints states, repaints only on change, tooltips, cleans up."""

import numpy as np
import pytest

from .conftest import ORIGIN

pytest.importorskip("anywidget", reason="kvlab.views needs anywidget (pip install anywidget ipywidgets)")
views = pytest.importorskip("kvlab.views")

MOUNT = f"""async (state) => {{
  const t = await import("{ORIGIN}/ui/fake_model.js");
  window.t = t;
  window.w = await t.mount("{ORIGIN}/widgets/pagemap.js", state);
}}"""
# Cell centre of page p in a pool's canvas (layout read back from the painted canvas).
CELL = """(p) => { const c = document.querySelector('[data-pool="a"] canvas');
  const cols = 32, cell = c.width / cols; return t.pixel(c, (p % cols) * cell + 2, Math.floor(p / cols) * cell + 2); }"""


def _state(widget_state, states, info=None, **kw):
    pm = views.PageMap(columns=32, **kw)
    pm.update("a", np.asarray(states, np.uint8), info or {"page_size": 2 << 20, "block_bytes": 1 << 20})
    return pm, widget_state(pm)


def test_paints_each_state_in_its_colour(page, widget_state):
    _, state = _state(widget_state, [0, 1, 2] + [0] * 61)
    page.evaluate(MOUNT, state)
    px = [page.evaluate(CELL, p)[:3] for p in range(3)]
    assert px == [[226, 229, 234], [147, 197, 253], [29, 78, 216]]
    head = page.text_content('[data-pool="a"] .kvlab-pm-head')
    assert "1 in use · 1 free · 62 unmapped of 64 pages" in head and "4 MiB mapped" in head


def test_repaints_on_change_and_only_on_change(page, widget_state):
    pm, state = _state(widget_state, [0] * 64)
    page.evaluate(MOUNT, state)
    pm.update("a", np.full(64, 2, np.uint8))
    new = widget_state(pm)
    page.evaluate("async (s) => { w.model.set('states', s.states); await t.frames(); }", new)
    assert page.evaluate(CELL, 10)[:3] == [29, 78, 216]
    paints = page.get_attribute('[data-pool="a"]', "data-paints")
    # The kernel re-sends every pool when one changes: equal bytes must not repaint.
    page.evaluate("async (s) => { w.model.set('states', s.states); await t.frames(); }", new)
    assert page.get_attribute('[data-pool="a"]', "data-paints") == paints == "2"


def test_pools_added_and_removed(page, widget_state):
    pm, state = _state(widget_state, [2] * 8)
    page.evaluate(MOUNT, state)
    pm.update("b", np.zeros(100, np.uint8))
    page.evaluate("async (s) => { w.model.setMany(s); await t.frames(); }", widget_state(pm))
    assert page.eval_on_selector_all(".kvlab-pm-pool", "els => els.map(e => e.dataset.pool)") == ["a", "b"]
    pm.remove("a")
    page.evaluate("async (s) => { w.model.setMany(s); await t.frames(); }", widget_state(pm))
    assert page.eval_on_selector_all(".kvlab-pm-pool", "els => els.map(e => e.dataset.pool)") == ["b"]


def test_tooltip_names_page_bytes_and_blocks(page, widget_state):
    _, state = _state(widget_state, [2] * 64)
    page.evaluate(MOUNT, state)
    box = page.locator('[data-pool="a"] canvas').bounding_box()
    cell = box["width"] / 32
    page.mouse.move(box["x"] + 5 * cell + 2, box["y"] + 1 * cell + 2)  # page 37
    tip = page.locator(".kvlab-tip")
    assert tip.is_visible()
    text = tip.text_content()
    assert "a · page 37" in text and "in use" in text and "blocks 74–75" in text and "74 MiB – 76 MiB" in text
    page.mouse.move(0, 690)
    assert not tip.is_visible()


def test_fifty_thousand_pages_paint_fast(page, widget_state):
    pm = views.PageMap()
    pm.update("big", np.random.default_rng(0).integers(0, 3, 50_000).astype(np.uint8), {"page_size": 2 << 20})
    page.evaluate(MOUNT.replace("window.w =", "window.t0 = performance.now(); window.w ="), widget_state(pm))
    ms = page.evaluate("""async () => { const t0 = performance.now();
      const s = w.model.get('states').big; const u = new Uint8Array(s.buffer.slice(0)); u[0] = (u[0] + 1) % 3;
      w.model.set('states', {big: new DataView(u.buffer)}); await t.frames(); return performance.now() - t0; }""")
    assert page.get_attribute('[data-pool="big"]', "data-paints") == "2"
    assert ms < 500, f"repainting 50k pages took {ms:.0f} ms"


def test_cleanup_removes_listeners_and_dom(page, widget_state):
    _, state = _state(widget_state, [1] * 16)
    page.evaluate(MOUNT, state)
    assert page.evaluate("w.model.listenerCount()") > 0
    page.evaluate("w.cleanup()")
    assert page.evaluate("w.model.listenerCount()") == 0
    assert page.evaluate("w.el.childElementCount") == 0
    page.evaluate("async () => { w.model.set('order', []); await t.frames(); }")  # no view left to throw
