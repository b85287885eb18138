"""The views' front ends come from the top-level widgets/ with the shared frame module inlined."""

import re

import pytest

pytest.importorskip("anywidget")

from kvlab.views import LatencyView, MemoryTimeline, PageMap  # noqa: E402
from kvlab.views import assets  # noqa: E402


@pytest.mark.parametrize("view", [PageMap, MemoryTimeline, LatencyView])
def test_each_view_module_is_self_contained_and_shares_the_frame_scheduler(view):
    esm = view._esm
    # anywidget imports the module from a blob URL: a relative import left in it would fail in the browser
    assert not re.search(r'from\s+"\./', esm)
    assert esm.count("export function redrawOnChange") == 1 and "requestAnimationFrame" in esm
    assert "export default" in esm
    assert assets.widgets_dir().name == "widgets" and assets.css().is_file()


def test_only_the_shared_module_schedules_frames():
    d = assets.widgets_dir()
    users = sorted(p.name for p in d.glob("*.js") if "requestAnimationFrame" in p.read_text())
    assert users == ["frames.js"]
