"""Notebook 01 in a real JupyterLab, in headless Chromium: run it as a person would (Run > Run All Cells)
and watch the dashboard: the page map and the memory timeline must render (canvases with pixels on
them) and change while the workload runs; every cell must finish without an error. A screenshot of
the dashboard at its busiest moment and one of the whole page at the end are kept under
test-artifacts/ (their paths are printed).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from .helpers import JS_CELLS, JS_KERNEL, open_and_run_all

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "01_quickstart.ipynb"
RUN_TIMEOUT = float(os.environ.get("KVLAB_BROWSER_TIMEOUT", 420))

# The notebook's own quick mode (a tiny model, a short workload); see notebooks/README or its first cells.
QUICK_ENV = {"KVLAB_QUICK": "1"}

# Pixels of each view's canvas: size, distinct colours, a hash, and for the page map the cells
# painted as mapped or in use (the PageMap's palette).
JS_CANVASES = """() => {
  const read = (c) => {
    if (!c.width || !c.height) return {w: c.width, h: c.height, colors: 0, hash: 0, mapped: 0, used: 0};
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    const colors = new Set(); let hash = 0, mapped = 0, used = 0;
    for (let i = 0; i < d.length; i += 4) {
      const v = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
      colors.add(v * 256 + d[i + 3]);
      hash = (Math.imul(hash, 31) + v + d[i + 3]) >>> 0;
      if (d[i] === 29 && d[i + 1] === 78 && d[i + 2] === 216) used++;
      if (d[i] === 147 && d[i + 1] === 197 && d[i + 2] === 253) mapped++;
    }
    return {w: c.width, h: c.height, colors: colors.size, hash, mapped, used, rows: Number(c.dataset.rows || 0)};
  };
  return {
    pagemap: [...document.querySelectorAll(".kvlab-pm canvas")].map(read),
    timeline: [...document.querySelectorAll(".kvlab-tl canvas")].map(read),
  };
}"""


@pytest.fixture
def quick(monkeypatch):
    """Set before the ``lab`` fixture starts JupyterLab (requested first), so its kernels inherit it."""
    for k, v in QUICK_ENV.items():
        monkeypatch.setenv(k, v)


@pytest.mark.slow
def test_quickstart_runs_and_the_dashboard_moves(quick, lab, browser, artifacts):
    shutil.copy(NOTEBOOK, lab.root / NOTEBOOK.name)  # a copy: the repository's notebook stays without outputs
    ctx = browser.new_context(viewport={"width": 1280, "height": 2400}, device_scale_factor=1)
    page = ctx.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    try:
        open_and_run_all(page, lab, NOTEBOOK.name)

        polls, busiest, t_end = [], None, time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < t_end:
            views = page.evaluate(JS_CANVASES)
            cells = page.evaluate(JS_CELLS)
            kernel = page.evaluate(JS_KERNEL)
            errors = [e for c in cells for e in c["errors"]]
            assert not errors, f"a cell failed: {errors}\n{lab.log_tail()}"
            if views["pagemap"]:
                polls.append(views)
                used = sum(v["used"] + v["mapped"] for v in views["pagemap"])
                if busiest is None or used > busiest:
                    busiest = used
                    page.locator(".kvlab-dashboard").first.screenshot(path=str(artifacts / "dashboard-busiest.png"))
            if all(c["count"] is not None for c in cells) and kernel and kernel["status"] == "idle":
                break
            page.wait_for_timeout(300)
        else:
            raise AssertionError(f"the notebook did not finish in {RUN_TIMEOUT:.0f} s:\n{lab.log_tail()}")
        page.screenshot(path=str(artifacts / "notebook-end.png"), full_page=True)
        print(f"\nscreenshots: {artifacts / 'dashboard-busiest.png'} {artifacts / 'notebook-end.png'}")
    finally:
        ctx.close()

    assert polls, "no page map canvas ever appeared"
    pm = [v["pagemap"] for v in polls]
    tl = [v["timeline"] for v in polls if v["timeline"]]
    assert all(c["w"] > 0 and c["h"] > 0 for p in pm for c in p), "a page map canvas has no size"
    assert busiest and busiest > 0, "the page map never showed a mapped page"
    assert len({tuple(c["hash"] for c in p) for p in pm}) >= 3, "the page map did not change while the notebook ran"
    used_counts = {sum(c["used"] for c in p) for p in pm}
    assert len(used_counts) >= 2, f"pages in use never changed: {used_counts}"
    assert tl, "no timeline canvas ever appeared"
    assert max(c["colors"] for p in tl for c in p) > 2, "the timeline canvas stayed blank"
    rows = [p[0]["rows"] for p in tl]
    assert rows[-1] > rows[0] and len({p[0]["hash"] for p in tl}) >= 3, "the timeline did not move"
    assert not page_errors, f"uncaught errors in the page: {page_errors}"
