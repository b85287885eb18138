"""The device-wide headroom rule and the limit policy, in pure Python (no engine).

The watcher measures (device free memory, other pools' guarantees) and turns it into a cap on mapped
chunks; the planner never grows past it, so a full device means waiting requests, not a crash.
"""

import threading

from kvlab.engines.vllm import headroom
from kvlab.engines.vllm.planner import ChunkPlanner
from kvlab.engines.vllm.pool_record import PoolRecord
from kvlab.engines.vllm.watcher import PoolWatcher
from kvlab.meminfo import MemoryReading
from kvlab.registry import PageState, Publisher, list_records

MiB, GiB = 1 << 20, 1 << 30
CHUNK = 8 * MiB


def test_room_subtracts_headroom_and_the_others_unmet_guarantees():
    assert headroom.room(10 * GiB, GiB, 2 * GiB) == 7 * GiB
    assert headroom.room(None, GiB, 0) is None       # unknown free memory: nothing to say
    assert headroom.room(GiB, 2 * GiB, 0) == -GiB     # already inside the headroom


def test_cap_counts_chunks_planned_since_the_measurement_and_keeps_the_own_guarantee():
    r = headroom.DeviceRoom(room=5 * CHUNK + 1, mapped_chunks=3)
    assert r.cap_chunks(CHUNK) == 8                   # 3 mapped then + 5 that fit
    assert headroom.DeviceRoom(-GiB, 3).cap_chunks(CHUNK) == 3            # no room: no growth, no shrink
    assert headroom.DeviceRoom(-GiB, 3).cap_chunks(CHUNK, min_chunks=6) == 6  # the pool's own min holds


def test_default_headroom():
    assert headroom.resolve_headroom("", 80 * GiB, is_cuda=True) == GiB
    assert headroom.resolve_headroom("", 100 * GiB, is_cuda=False) == 5 * GiB
    assert headroom.resolve_headroom("10%", 80 * GiB, is_cuda=True) == 8 * GiB
    assert headroom.resolve_headroom("256MiB", 80 * GiB, is_cuda=True) == 256 * MiB


def test_unmet_guarantees_of_other_pools_on_the_same_device(root):
    with Publisher("a", GiB, 2 * MiB, name="a", min=300 * MiB) as a, \
            Publisher("b", GiB, 2 * MiB, name="b", min=200 * MiB) as b, \
            Publisher("c", GiB, 2 * MiB, name="c", min=500 * MiB, device="cuda:0", device_uuid="GPU-1") as c, \
            Publisher("d", GiB, 2 * MiB, name="d", min=400 * MiB, device="cuda:1", device_uuid="GPU-2"):
        a.update(mapped=100 * MiB)
        b.update(mapped=250 * MiB)  # more than its guarantee: nothing owed
        recs = list_records(root)
        assert headroom.unmet_min(recs, "me", "cpu", "") == 200 * MiB
        assert headroom.unmet_min(recs, "a", "cpu", "") == 0          # its own guarantee is not a debt
        assert headroom.unmet_min(recs, "me", "cuda:0", "GPU-1") == 500 * MiB  # by UUID, not by index
        assert c.name == "c"


def test_planner_never_grows_past_the_device_cap():
    p = ChunkPlanner(16, 4, CHUNK)
    p.device_cap = 3
    assert p.growable_chunks() == 2
    p.grow(), p.grow()
    assert p.growable_chunks() == 0
    p.device_cap = None
    assert p.growable_chunks() == 13


def test_a_lowered_limit_releases_the_excess_at_once_even_while_busy():
    p = ChunkPlanner(16, 4, CHUNK, reserve_chunks=4, release_delay=60.0)
    for _ in range(6):
        c = p.grow()
        p.on_free(range(c * 4, c * 4 + 4))
    p.on_taken([4])                      # chunk 1 in use
    p.tick(1.0)
    assert p.release_candidates(idle=False) == []      # busy: free chunks wait out the delay
    p.budget_chunks = 3
    assert p.release_candidates(idle=False) == [6, 5, 4, 3]  # 7 mapped, budget 3: 4 free chunks go now...
    p.budget_chunks = 2
    assert sorted(p.release_candidates(idle=False)) == [2, 3, 4, 5, 6]  # ...never the one in use


class _Probe:
    """Free memory as a test sets it (the policy is what is under test here)."""

    def __init__(self, free, total):
        self.value = MemoryReading(total, total - free, free)

    def __call__(self):
        return self.value


def test_watcher_turns_measurements_into_a_cap_and_wakes_on_control_changes(root):
    planner = ChunkPlanner(64, 4, CHUNK)
    record = PoolRecord(planner, model="m", page_size=2 * MiB, name="me", device="cpu", device_uuid="",
                        limit=None, minimum=16 * MiB)
    woken = threading.Event()
    probe = _Probe(free=GiB + 10 * CHUNK, total=20 * GiB)
    w = PoolWatcher(record, planner, woken.set, probe=probe, device="cpu", device_uuid="", headroom_spec="1GiB",
                    is_cuda=False)
    try:
        with Publisher("other", GiB, 2 * MiB, name="other", min=4 * CHUNK):
            w.measure()
            assert planner.device_cap == 1 + 6          # chunk 0 + (10 chunks free - 4 owed to "other")
            probe.value = MemoryReading(20 * GiB, 20 * GiB - GiB // 2, GiB // 2)            # the device filled up under us
            w._scanned = 0
            w.measure()
            assert planner.device_cap == 2              # only the pool's own 16 MiB guarantee remains
        w.start()
        from kvlab import limits

        limits.set_limit("me", "64MiB")
        assert woken.wait(2), "the watcher did not notice the new limit"
    finally:
        w.stop()
        record.close()


def test_record_pages_show_chunks_in_use_mapped_and_unmapped(root):
    planner = ChunkPlanner(8, 4, CHUNK)   # chunk 0 pinned and mapped
    record = PoolRecord(planner, model="m", page_size=2 * MiB, name="pages", device="cpu", device_uuid="",
                        limit=None, minimum=0)
    try:
        planner.on_free(range(1, 4))      # chunk 0: all free but the null block
        c = planner.grow()
        planner.on_free(range(c * 4, c * 4 + 4))
        planner.on_taken([c * 4, c * 4 + 1])  # half of chunk 1 in use
        record.count(1, 0)
        record.publish(force=True)
        rec = list_records(root)[0]
        states = rec.page_states()
        assert len(states) == 8 * 4 and rec.page_size == 2 * MiB
        assert list(states[:8]) == [PageState.USED, PageState.MAPPED, PageState.MAPPED, PageState.MAPPED,
                                    PageState.USED, PageState.USED, PageState.MAPPED, PageState.MAPPED]
        assert not states[8:].any()
        assert (rec.mapped, rec.used, rec.retained, rec.n_maps) == (2 * CHUNK, 3 * CHUNK // 4, 0, 4)
    finally:
        record.close()


def test_an_applied_control_change_is_published_even_when_nothing_is_mapped_or_unmapped(root):
    planner = ChunkPlanner(8, 4, CHUNK)
    record = PoolRecord(planner, model="m", page_size=2 * MiB, name="ack", device="cpu", device_uuid="",
                        limit=None, minimum=0)
    try:
        from kvlab import limits

        limits.set_limit("ack", "64MiB")
        ctl = record.pending_control()
        record.applied(ctl, 64 * MiB, 0)
        record.publish()  # not forced, nothing changed in the pool, within the rate limit: still goes out
        rec = list_records(root)[0]
        assert rec.control_ack == ctl.revision and rec.limit == 64 * MiB
    finally:
        record.close()
