"""Limits and the device cap changing under random traffic, with kvlab's free queue inside vLLM's real
BlockPool (no engine). Whatever the order of events:

* the pool never grows past min(budget, device cap), and never hands out a block of an unmapped chunk;
* a lowered budget is met as soon as enough chunks are free: one release pass (busy, delay not yet
  passed) leaves at most max(budget, chunks holding live blocks) mapped;
* plans replayed in order reproduce the scheduler's view of what is mapped (what workers do).
"""

import random

import pytest

pytest.importorskip("vllm")

from vllm.v1.core.block_pool import BlockPool  # noqa: E402

from kvlab.engines.vllm.free_queue import ElasticFreeQueue  # noqa: E402
from kvlab.engines.vllm.planner import ChunkPlanner  # noqa: E402

K, CHUNKS = 4, 24


@pytest.mark.parametrize("seed", range(4))
def test_random_limits_and_device_caps_under_traffic(seed):
    rng = random.Random(seed)
    pool = BlockPool(num_gpu_blocks=K * CHUNKS, enable_caching=True, hash_block_size=16)
    planner = ChunkPlanner(CHUNKS, K, 1, reserve_chunks=2, release_delay=1e9)  # busy: only forced releases
    queue = ElasticFreeQueue(pool, planner)
    pool.free_block_queue = queue
    held, worker_mapped, shrinks = [], {0}, 0
    for step in range(600):
        planner.tick(float(step))
        op = rng.random()
        if op < 0.4:
            n = rng.randint(1, 6)
            before = planner.n_mapped
            if n <= pool.get_num_free_blocks():
                held.extend(pool.get_new_blocks(n))
            ceiling = max(before, min(planner.budget_chunks, planner.device_cap or CHUNKS))
            assert planner.n_mapped <= ceiling  # growth stops at the budget and the device cap
        elif op < 0.75 and held:
            rng.shuffle(held)
            cut = rng.randint(1, len(held))
            pool.free_blocks(held[:cut])
            held = held[cut:]
        elif op < 0.85:
            planner.budget_chunks = rng.choice([None, 2, 4, 8, 16])
        elif op < 0.95:
            planner.device_cap = rng.choice([None, 3, 6, 12])
        live = {b.block_id // K for b in held} | {0}
        released = planner.release_candidates(idle=False)
        for c in released:
            queue.release(c)
        shrinks += bool(released)  # release_delay never passes here: every release is the budget's doing
        assert planner.n_mapped <= max(planner.budget_chunks, len(live))
        assert all(planner.mapped[b.block_id // K] for b in held)
        plan = planner.take_plan()
        if plan is not None:
            assert not set(plan.unmap) & live
            worker_mapped.difference_update(plan.unmap)
            worker_mapped.update(plan.map)
        assert worker_mapped == {c for c in range(CHUNKS) if planner.mapped[c]}
    assert shrinks > 10, shrinks  # the budget really bound, many times
