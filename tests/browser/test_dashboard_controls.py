"""A dashboard's limit row in a real JupyterLab: typing a size and pressing Enter writes the pool's registry
record (read here, from another process), the limit the owner then applies is read back into the row
and onto the timeline, and a bad size is answered in the row, not with a traceback.

The pool's owner is the notebook's kernel itself: a Publisher plus a thread that applies requested
limits the way an engine's scheduler does (tests/views/test_dashboard_engine.py does it with vLLM).
"""

from __future__ import annotations

import json
import secrets

import pytest

from .helpers import JS_CELLS, JS_KERNEL, notebook, open_and_run_all, wait

OWNER = """
import threading, time
import numpy as np
from kvlab import views
from kvlab.lab import Server
from kvlab.models import synthetic
from kvlab.registry import Publisher
from kvlab.settings import ElasticSettings

server = Server(synthetic("qwen2", "tiny"), memory="elastic", device="cpu", start=False, name="ctl",
                elastic=ElasticSettings(pool_name={pool!r}))
pub = Publisher("ctl", 128 << 21, 2 << 20, name=server.pool_name)
pub.update(mapped=16 << 21, used=8 << 21, pages=np.r_[np.full(8, 2), np.full(8, 1), np.zeros(112)].astype(np.uint8))

def apply_limits():  # what an engine does with the control block
    seen = 0
    while not pub.closed:
        ctl = pub.control()
        if ctl.revision != seen:
            pub.update(limit=ctl.limit, control_ack=ctl.revision)
            seen = ctl.revision
        time.sleep(0.05)

threading.Thread(target=apply_limits, daemon=True).start()
"""


@pytest.mark.slow
def test_limit_row_writes_the_registry_and_reads_back(lab, browser, artifacts):
    from kvlab import registry

    pool = f"browser-ctl-{secrets.token_hex(3)}"
    cells = [OWNER.format(pool=pool), "dash = views.watch(server)\ndash"]
    (lab.root / "controls.ipynb").write_text(json.dumps(notebook(cells)))
    ctx = browser.new_context(viewport={"width": 1280, "height": 1600}, device_scale_factor=1)
    page = ctx.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    try:
        open_and_run_all(page, lab, "controls.ipynb")
        cells = wait(page, JS_CELLS, lambda cs: all(c["count"] is not None or c["errors"] for c in cs), 90,
                     "the cells to run")
        assert not [e for c in cells for e in c["errors"]], cells
        wait(page, JS_KERNEL, lambda k: k and k["status"] == "idle", 30, "the kernel to be idle")
        status = page.locator(".kvlab-limit-status")
        status.filter(has_text="limit none").wait_for(timeout=15_000)  # the first readback came

        box = page.locator(".kvlab-limit-text input")
        box.fill("48MiB")
        box.press("Enter")
        status.filter(has_text="limit 48 MiB").wait_for(timeout=15_000)
        assert registry.read(pool).control.limit == 48 << 20  # what the row wrote, seen from here
        assert registry.read(pool).limit == 48 << 20  # what the owner applied
        legend = page.locator(".kvlab-tl .kvlab-legend")
        legend.filter(has_text="limit 48 MiB").wait_for(timeout=5_000)

        revision = registry.read(pool).control.revision
        box.fill("lots")
        box.press("Enter")
        status.filter(has_text="InvalidSize").wait_for(timeout=10_000)
        assert registry.read(pool).control.revision == revision  # nothing was written
        assert "limit 48 MiB" in status.text_content()
        page.locator(".kvlab-dashboard").first.screenshot(path=str(artifacts / "limit-row.png"))
        print(f"\nscreenshot: {artifacts / 'limit-row.png'}")
    finally:
        ctx.close()
    lab.stop()  # the kernel exits: its pool's record goes with it
    assert pool not in [r.name for r in registry.list_records()]
    assert not page_errors, page_errors
