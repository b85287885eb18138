"""The coalescer: at most ~10 messages a second whatever the update rate, and the last value always lands."""

import threading
import time

import numpy as np
import pytest

pytest.importorskip("anywidget", reason="kvlab.views needs anywidget (pip install anywidget ipywidgets)")

from kvlab.views import Coalescer, CoalescerSettings, MemoryTimeline, PageMap


class Counter:
    def __init__(self):
        self.flushes, self.value, self.seen = 0, None, None

    def _flush(self):
        self.flushes += 1
        self.seen = self.value


def storm(fn, seconds=1.0, hz=1000):
    """Call fn(i) ~hz times a second from a background thread, like an engine callback would."""
    def run():
        i, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < seconds:
            fn(i)
            i += 1
            time.sleep(1 / hz)
        fn(i)  # the final value, right before the storm ends
    th = threading.Thread(target=run)
    th.start()
    th.join()


def test_storm_is_coalesced_and_last_value_lands(coalescer):
    c = Counter()

    def update(i):
        c.value = i
        coalescer.mark(c)
    t0 = time.monotonic()
    storm(update, seconds=1.0)
    assert coalescer.idle(1.0)
    elapsed = time.monotonic() - t0
    assert c.seen == c.value
    assert c.flushes <= elapsed * 10 + 2, f"{c.flushes} flushes in {elapsed:.2f} s"
    assert c.flushes >= 5  # and it did flush along the way, not only at the end


def test_widget_storm_sends_at_most_10_messages_per_second(cap, coalescer):
    pm = PageMap(coalescer=coalescer)
    tl = MemoryTimeline(coalescer=coalescer, window=5000, rebase_every=5000)
    t0 = time.monotonic()

    def update(i):
        pm.update("pool", np.full(4096, i % 3, np.uint8), {"i": i})
        tl.append(i, {"m": i})
    storm(update, seconds=1.5)
    assert coalescer.idle(1.0)
    elapsed = time.monotonic() - t0
    for w in (pm, tl):
        n = len(cap.updates(w.comm.comm_id))
        assert 3 <= n <= elapsed * 10 + 2, f"{type(w).__name__}: {n} messages in {elapsed:.2f} s"
    last = cap.state(pm.comm.comm_id)
    final = pm._pending_infos["pool"]["i"]
    assert last["infos"]["pool"]["i"] == final
    assert last["states"]["pool"] == np.full(4096, final % 3, np.uint8).tobytes()
    # The timeline is not latest-value but append-only: every row reached the front end.
    st = cap.state(tl.comm.comm_id)
    rows = np.frombuffer(st["base"] + st["tail"]).reshape(-1, 3)
    assert rows[:, 0].tolist() == list(range(final + 1))


def test_sampler_runs_on_schedule_and_stops_on_false(coalescer):
    calls = []
    s = coalescer.add_task(lambda: calls.append(time.monotonic()) or len(calls) < 5, 0.02)
    time.sleep(0.3)
    assert len(calls) == 5 and s.runs == 5 and s not in coalescer._tasks


def test_sampler_error_is_kept_not_raised(coalescer):
    def boom():
        raise RuntimeError("arena went away")
    s = coalescer.add_task(boom, 0.01)
    time.sleep(0.1)
    assert isinstance(s.error, RuntimeError) and coalescer.errors == 1 and s.runs == 1


def test_a_failing_flush_does_not_stop_the_others(coalescer):
    class Bad:
        def _flush(self):
            raise ValueError("broken view")
    bad, good = Bad(), Counter()
    good.value = 1
    coalescer.mark(bad)
    coalescer.mark(good)
    assert coalescer.idle(1.0)
    time.sleep(0.05)
    assert good.seen == 1 and coalescer.errors == 1


def test_collected_widgets_are_skipped(coalescer):
    c = Counter()
    coalescer.mark(c)
    del c
    coalescer.flush_now()  # a dead weak reference, no error
    assert coalescer.errors == 0


def test_idle_thread_sleeps():
    co = Coalescer()
    c = Counter()
    co.mark(c)
    assert co.idle(1.0)
    time.sleep(0.1)
    cpu0 = time.process_time()
    time.sleep(0.5)  # nothing dirty, no samplers: the thread waits without a timeout
    assert time.process_time() - cpu0 < 0.05
    co.stop()


def test_settings_are_validated():
    with pytest.raises(ValueError, match="outside"):
        CoalescerSettings(flush_interval_s=0.001)
    assert Coalescer(CoalescerSettings(flush_interval_s=0.05)).settings.flush_interval_s == 0.05
