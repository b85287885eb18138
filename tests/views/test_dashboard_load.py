"""Short runs of benchmarks/dashboard_load.py: nothing lost, the final states arrive, little CPU."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("kvlab.memory")
pytest.importorskip("anywidget")
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "dashboard_load.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("dashboard_load", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check(r, views: str):
    assert r["updates"]["page_states_sampled"] > 0 and r["updates"]["timeline_rows"] > 0
    assert r["updates"]["page_states_lost"] == 0 and r["updates"]["timeline_rows_lost"] == 0
    assert r["updates"]["views_with_final_state"] == views
    assert r["messages"]["max_per_widget_per_second"] <= 10.5
    # Generous against a loaded CI machine; the 60 s benchmark records the real figure.
    assert r["cpu"]["dashboard_percent_of_core"] < 15


def test_short_views_load(bench):
    check(bench.run(duration=2.0, hz=5.0, models=3, pages=1024, page_size=64 << 10), "4/4")


def test_short_dashboard_load(bench):
    r = bench.run_dashboard(duration=2.0, hz=5.0, models=3, pages=1024, page_size=64 << 10)
    check(r, "2/2")
    assert r["updates"]["dashboard_errors"] == 0 and not r["updates"]["telemetry_errors"]
    assert r["updates"]["page_states_sampled"] >= 3 * 5  # every pool, at about 5 Hz
