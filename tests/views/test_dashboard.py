"""Dashboard over real registry records: a real Telemetry samples real Publishers, and what a front end
would receive (captured comm messages) follows the records: pages, memory, limits, events, pools going away.

The servers are real kvlab.lab.Server objects that are never started (no engine needed): they give
the pool names, and each test publishes those pools itself, as the engine's scheduler would.
"""

import time

import numpy as np
import pytest

pytest.importorskip("anywidget")
from kvlab import views  # noqa: E402
from kvlab.registry import PageState, Publisher  # noqa: E402
from kvlab.units import format_size  # noqa: E402
from tests.waiting import wait_for  # noqa: E402

PAGE = 2 << 20
PAGES = 64


@pytest.fixture(scope="module")
def model():
    from kvlab.models import synthetic

    return synthetic("qwen2", "tiny")


@pytest.fixture
def servers(model):
    from kvlab.lab import Server

    return [Server(model, memory="elastic", device="cpu", start=False, name=n) for n in ("alpha", "beta")]


@pytest.fixture
def pools(servers):
    pubs = [Publisher(str(s.model), PAGES * PAGE, PAGE, name=s.pool_name) for s in servers]
    yield pubs
    for p in pubs:
        p.close()


@pytest.fixture
def dash(cap, coalescer, servers, pools):
    from kvlab.views import Dashboard

    d = Dashboard(servers, interval=0.05, coalescer=coalescer)
    yield d
    d.close()


def front_state(cap, widget, coalescer):
    coalescer.idle(2.0)
    return cap.state(widget.comm.comm_id)


def pages(n_used, n_mapped):
    s = np.full(PAGES, PageState.UNMAPPED, np.uint8)
    s[:n_mapped] = PageState.MAPPED
    s[:n_used] = PageState.USED
    return s


def publish(pub, n_used, n_mapped, **kw):
    pub.update(mapped=n_mapped * PAGE, used=n_used * PAGE, pages=pages(n_used, n_mapped), **kw)


def test_pages_and_memory_follow_the_records(cap, coalescer, dash, pools):
    publish(pools[0], 3, 8)
    publish(pools[1], 10, 10)
    n = dash.samples
    wait_for(lambda: dash.samples > n + 2, what="samples")
    state = front_state(cap, dash.pagemap, coalescer)
    assert state["order"] == ["alpha", "beta"]
    a = np.frombuffer(state["states"]["alpha"], np.uint8)
    assert (a[:3] == 2).all() and (a[3:8] == 1).all() and (a[8:] == 0).all()
    assert np.frombuffer(state["states"]["beta"], np.uint8).sum() == 20
    assert state["infos"]["alpha"]["page_size"] == PAGE
    rows = dash.timeline.rows()
    assert dash.timeline.models == ["alpha", "beta"]
    assert rows[-1, 2] == 8 * PAGE and rows[-1, 3] == 10 * PAGE
    assert rows[-1, 1] == 2 * PAGES * PAGE  # CPU pools: the line is the pools' reserved capacity
    assert dash.timeline.total_label.startswith("reserved")

    publish(pools[0], 0, 0)  # the engine went idle and gave its pages back
    n = dash.samples
    wait_for(lambda: dash.samples > n + 2, what="samples")
    state = front_state(cap, dash.pagemap, coalescer)
    assert not np.frombuffer(state["states"]["alpha"], np.uint8).any()
    assert dash.timeline.rows()[-1, 2] == 0
    assert dash.errors == 0, dash.last_error


def test_other_pools_are_not_shown(cap, coalescer, dash, model):
    with Publisher(str(model), PAGES * PAGE, PAGE) as stranger:
        publish(stranger, 5, 5)
        n = dash.samples
        wait_for(lambda: dash.samples > n + 2, what="samples")
    assert set(dash.pagemap.pools) <= {"alpha", "beta"} and set(dash.timeline.models) <= {"alpha", "beta"}


def test_limits_and_events_reach_the_timeline(cap, coalescer, dash, pools):
    publish(pools[1], 2, 4, limit=16 * PAGE)
    dash.mark("burst 1")
    wait_for(lambda: dash.timeline.limits.get("beta") == 16 * PAGE
             and any(label == "burst 1" for _, label in dash.timeline.marks), what="limit and mark sent")
    t_mark = dict((lab, t) for t, lab in dash.timeline.marks)["burst 1"]
    assert 0 <= t_mark <= dash.timeline.rows()[-1, 0] + 0.1  # the Telemetry's clock, like the rows
    assert dash.controls[pools[1].name].enforced == 16 * PAGE
    assert "limit <b>32 MiB</b>" in dash.controls[pools[1].name].status.value
    publish(pools[1], 2, 4, limit=None)
    wait_for(lambda: "beta" not in dash.timeline.limits, what="limit removed")


def test_stopped_pool_shows_empty(cap, coalescer, dash, pools):
    publish(pools[0], 6, 6)
    wait_for(lambda: "alpha" in dash.pagemap.pools and dash.pagemap.counts("alpha")["in_use"] == 6, what="pages")
    pools[0].close()  # the engine stopped: its record is removed
    wait_for(lambda: dash.pagemap.counts("alpha")["in_use"] == 0, what="pages cleared")
    assert "stopped" in dash.pagemap._pending_infos["alpha"]["label"]


def test_latency_records_by_server(cap, coalescer, dash, servers):
    from kvlab.lab import RequestRecord

    servers[0].port = 8123  # as if started: records name the server by its URL
    ok = RequestRecord(str(servers[0].model), "http://127.0.0.1:8123", ttft=0.05, e2e=0.5, status="ok")
    failed = RequestRecord(str(servers[0].model), "http://127.0.0.1:8123", status="error", error="boom")
    for r in (ok, ok, failed):
        dash.record(r)
    assert dash.latency.percentiles("alpha")["ttft"][0] == pytest.approx(0.05)
    state = front_state(cap, dash.latency, coalescer)
    assert state["stats"]["alpha"]["n"] == 2


def test_close_stops_its_telemetry_and_closes_views(cap, coalescer, servers, pools):
    import threading

    from kvlab.views import Dashboard

    d = Dashboard(servers, interval=0.05, coalescer=coalescer)
    wait_for(lambda: d.samples > 1, what="first samples")
    tel = d.telemetry
    d.close()
    assert not tel.running and not any(t.name == "kvlab-telemetry" and t.is_alive() for t in threading.enumerate())
    n = d.samples
    time.sleep(0.2)
    assert d.samples == n
    for w in (d.pagemap, d.timeline, d.latency, *d.controls.values()):
        assert w.comm is None


def test_a_shared_telemetry_is_left_running(cap, coalescer, servers, pools):
    from kvlab.lab.telemetry import Telemetry
    from kvlab.views import Dashboard

    with Telemetry(servers, interval=0.05) as tel:
        d = Dashboard(servers, telemetry=tel, coalescer=coalescer)
        wait_for(lambda: d.samples > 1, what="samples")
        d.close()
        assert tel.running
        n = d.samples
        time.sleep(0.2)
        assert d.samples == n  # its listener is gone


def test_bad_arguments_leave_nothing_behind(cap, servers):
    import threading

    from kvlab.views import Dashboard

    with pytest.raises(TypeError, match="Server, a Fleet or a list"):
        Dashboard(42)
    with pytest.raises(ValueError, match="total="):
        Dashboard(servers, total="gpu")
    with pytest.raises(ValueError, match="interval"):
        Dashboard(servers, interval=0)
    assert not [m for m in cap.messages if m.msg_type == "comm_open"], "a widget was created anyway"
    assert not [t for t in threading.enumerate() if t.name == "kvlab-telemetry"]


def test_watch_and_dashboard_methods(cap, coalescer, servers, pools):
    from kvlab.lab import Fleet
    from kvlab.views import Dashboard

    d = views.watch(servers[0], interval=0.05, coalescer=coalescer)
    try:
        assert isinstance(d, Dashboard) and [s.name for s in d.servers] == ["alpha"]
        assert list(d.controls) == [servers[0].pool_name]
    finally:
        d.close()
    fleet = Fleet(servers, start=False)
    d = views.dashboard(fleet, interval=0.05, controls=False, coalescer=coalescer)
    try:
        assert [s.name for s in d.servers] == ["alpha", "beta"] and not d.controls
        publish(pools[1], 1, 1)
        wait_for(lambda: "beta" in d.pagemap.pools, what="fleet pool shown")
    finally:
        d.close()


def test_limit_controls_write_the_registry_and_show_the_readback(cap, coalescer, dash, pools):
    from kvlab import registry

    pub, control = pools[0], dash.controls[pools[0].name]
    wait_for(lambda: control.slider.max == PAGES * PAGE >> 20 and not control.slider.disabled, what="first readback")
    assert control.slider.value == control.slider.max  # no limit yet: all the way right
    control.text.value = "40MiB"  # what typing + Enter does
    asked = registry.read(pub.name).control
    assert asked.limit == 40 << 20 and control.error is None
    assert "asked 40MiB, not yet applied" in control.status.value
    pub.update(limit=asked.limit, control_ack=asked.revision)  # the engine applies it
    wait_for(lambda: control.enforced == 40 << 20, what="readback")
    assert "limit <b>40 MiB</b>" in control.status.value and "asked" not in control.status.value
    assert control.slider.value == 40  # follows the registry; moving it did not ask again
    assert registry.read(pub.name).control.revision == asked.revision

    control.slider.value = 16  # MiB
    assert registry.read(pub.name).control.limit == 16 << 20
    control.slider.value = control.slider.max
    assert registry.read(pub.name).control.limit is None
    control.text.value = "25%"
    assert registry.read(pub.name).control.limit == PAGES * PAGE // 4


def test_limit_control_errors_are_shown_and_change_nothing(cap, coalescer, dash, pools):
    from kvlab import registry

    pub, control = pools[1], dash.controls[pools[1].name]
    before = registry.read(pub.name).control
    control.text.value = "lots"
    assert control.error and "lots" in control.error and "kvlab-error" in control.status.value
    control.text.value = "150%"
    assert control.error and "150%" in control.error
    assert registry.read(pub.name).control.revision == before.revision  # nothing was written
    control.text.value = "8MiB"
    assert control.error is None and "kvlab-error" not in control.status.value
    pub.close()  # the engine is gone: asking now fails in the row, not in the kernel
    control.text.value = "4MiB"
    assert control.error and "PoolNotFound" in control.error


def test_stop_keeps_the_last_picture(cap, coalescer, servers, pools):
    from kvlab.views import Dashboard

    d = Dashboard(servers, interval=0.05, coalescer=coalescer)
    try:
        publish(pools[0], 4, 4)
        wait_for(lambda: "alpha" in d.pagemap.pools and d.pagemap.counts("alpha")["in_use"] == 4, what="pages")
        d.stop()
        assert not d.telemetry.running
        publish(pools[0], 9, 9)
        time.sleep(0.2)
        assert d.pagemap.counts("alpha")["in_use"] == 4  # no longer following
        assert d.pagemap.comm is not None and d.timeline.comm is not None  # still on screen
        control = d.controls[pools[0].name]
        assert control.slider.disabled and control.text.disabled
    finally:
        d.close()
    assert d.pagemap.comm is None


def test_no_target_shows_every_pool_in_the_registry(cap, coalescer):
    import secrets

    from kvlab.views import Dashboard

    model = f"models/solo-{secrets.token_hex(3)}"  # a unique model: other tests' pools may be listed too
    with Publisher(model, PAGES * PAGE, PAGE) as pub:
        publish(pub, 2, 3)
        d = Dashboard(None, interval=0.05, coalescer=coalescer)
        try:
            label = model.rsplit("/", 1)[1]  # a pool without a server is labelled by its model's short name
            wait_for(lambda: label in d.pagemap.pools, what="the pool on the page map")
            assert d.pagemap.counts(label) == {"unmapped": PAGES - 3, "mapped_free": 1, "in_use": 2}
            assert pub.name in d.controls  # a limit row for every pool listed when it was made
            assert "every pool in the registry" in d.header.value
        finally:
            d.close()


def test_a_restarted_pool_comes_back_under_its_name(cap, coalescer, dash, pools, servers):
    publish(pools[0], 5, 5)
    wait_for(lambda: "alpha" in dash.pagemap.pools and dash.pagemap.counts("alpha")["in_use"] == 5, what="pages")
    pools[0].close()
    wait_for(lambda: dash.pagemap.counts("alpha")["in_use"] == 0, what="pages cleared")
    with Publisher(str(servers[0].model), 2 * PAGES * PAGE, PAGE, name=servers[0].pool_name) as again:
        states = np.zeros(2 * PAGES, np.uint8)  # the server started again: same pool name, a bigger reservation
        states[:9], states[:7] = PageState.MAPPED, PageState.USED
        again.update(mapped=9 * PAGE, used=7 * PAGE, pages=states)
        wait_for(lambda: dash.pagemap.counts("alpha")["in_use"] == 7, what="the restarted pool's pages")
        assert sum(dash.pagemap.counts("alpha").values()) == 2 * PAGES
        assert dash.pagemap.pools == ["alpha", "beta"]  # not a second entry
        control = dash.controls[servers[0].pool_name]
        wait_for(lambda: control.slider.max == 2 * PAGES * PAGE >> 20, what="the limit row to follow the new capacity")


def test_watching_again_stops_the_previous_dashboard(cap, coalescer, servers, pools):
    """Re-running a `dash = views.watch(server)` cell must not leave the old Telemetry sampling for ever."""
    from kvlab.views import Dashboard

    first = Dashboard(servers, interval=0.05, coalescer=coalescer)
    other = views.watch(servers[0], interval=0.05, coalescer=coalescer)  # other servers: left alone
    second = Dashboard(list(reversed(servers)), interval=0.05, coalescer=coalescer)
    try:
        assert not first.telemetry.running and "newer dashboard" in first.header.value
        assert first.pagemap.comm is not None  # stopped, still on screen
        assert second.telemetry.running and other.telemetry.running
        first.stop()  # stopping twice is harmless
        assert first.header.value.count("newer dashboard") == 1
    finally:
        for d in (first, other, second):
            d.close()


def test_a_tensor_parallel_pool_shows_once_with_its_ranks(cap, coalescer):
    import secrets

    from kvlab.views import Dashboard

    model = f"models/tp-{secrets.token_hex(3)}"
    with Publisher(model, PAGES * PAGE, PAGE, ranks=2) as pub:
        publish(pub, 2, 4)
        d = Dashboard(None, interval=0.05, coalescer=coalescer)
        try:
            label = model.rsplit("/", 1)[1]
            wait_for(lambda: label in d.pagemap.pools, what="the pool on the page map")
            assert [p for p in d.pagemap.pools if p.startswith("tp-")] == [label]  # one entry, not one per rank
            info = d.pagemap._pending_infos[label]
            assert info["ranks"] == 2 and info["label"].endswith(f"2 ranks, {format_size(2 * PAGE)} mapped on each")
        finally:
            d.close()
