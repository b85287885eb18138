"""kvlab's free queue inside vLLM's real BlockPool, driven by random allocate/cache/hit/free/release steps.

After every step the pool must only hand out blocks of mapped chunks, keep the prefix cache pointing
into mapped chunks, stay within the budget, agree with the planner's counts, and the page plans,
replayed in order the way a worker applies them, must reproduce the scheduler's view of what is mapped.
"""

import itertools
import random

import pytest

pytest.importorskip("vllm")

from vllm.v1.core.block_pool import BlockPool  # noqa: E402
from vllm.v1.core.kv_cache_utils import BlockHash, make_block_hash_with_group_id  # noqa: E402

from kvlab.engines.vllm.free_queue import ElasticFreeQueue  # noqa: E402
from kvlab.engines.vllm.planner import ChunkPlanner  # noqa: E402

K, CHUNKS, BUDGET = 4, 16, 6


def _linked(queue):
    out, b = [], queue.fake_free_list_head.next_free_block
    while b is not queue.fake_free_list_tail:
        out.append(b)
        b = b.next_free_block
    return out


def _check(pool, queue, planner, worker_mapped):
    linked = _linked(queue)
    assert len(linked) == queue.num_linked_blocks
    assert pool.get_num_free_blocks() == len(linked) + planner.growable_chunks() * K
    assert all(planner.mapped[b.block_id // K] and b.ref_cnt == 0 for b in linked)
    counts = [0] * CHUNKS
    for b in linked:
        counts[b.block_id // K] += 1
    assert counts == [planner.free[c] if planner.mapped[c] else 0 for c in range(CHUNKS)]
    for b in pool.blocks:
        if b.block_hash is not None or b.ref_cnt > 0:
            assert planner.mapped[b.block_id // K], f"block {b.block_id} is live in an unmapped chunk"
    assert planner.n_mapped <= BUDGET
    plan = planner.take_plan()
    if plan is not None:  # what a worker does before the next forward pass
        worker_mapped.difference_update(plan.unmap)
        worker_mapped.update(plan.map)
    assert worker_mapped == {c for c in range(CHUNKS) if planner.mapped[c]}


@pytest.mark.parametrize("seed", range(5))
def test_random_pool_traffic(seed):
    rng = random.Random(seed)
    pool = BlockPool(num_gpu_blocks=K * CHUNKS, enable_caching=True, hash_block_size=16)
    planner = ChunkPlanner(CHUNKS, K, 1, budget_chunks=BUDGET, reserve_chunks=1, release_delay=0.0)
    queue = ElasticFreeQueue(pool, planner)
    pool.free_block_queue = queue
    held, worker_mapped, n_hash, max_mapped = [], {0}, 0, 1
    for step in range(400):
        planner.tick(step * 0.1)
        op = rng.random()
        if op < 0.35:
            n = rng.randint(1, 6)
            if n <= pool.get_num_free_blocks():
                got = pool.get_new_blocks(n)
                assert all(not b.is_null and planner.mapped[b.block_id // K] for b in got)
                held.extend(got)
            else:
                with pytest.raises(ValueError):
                    pool.get_new_blocks(n)  # a spent budget looks like a full cache
        elif op < 0.5 and held:
            b = rng.choice(held)
            if b.block_hash is None:
                n_hash += 1
                key = make_block_hash_with_group_id(BlockHash(n_hash.to_bytes(8, "little")), 0)
                pool._insert_block_hash(key, b, num_tokens=16)
        elif op < 0.6:
            cached = [b for b in pool.blocks if b.block_hash is not None and b.ref_cnt == 0]
            if cached:  # a prefix-cache hit on a free block
                b = rng.choice(cached)
                pool.touch([b])
                held.append(b)
        elif op < 0.9 and held:
            rng.shuffle(held)
            cut = rng.randint(1, len(held))
            pool.free_blocks(held[:cut])
            held = held[cut:]
        else:
            for c in planner.release_candidates(idle=rng.random() < 0.5):
                queue.release(c)
        max_mapped = max(max_mapped, planner.n_mapped)
        _check(pool, queue, planner, worker_mapped)
    pool.free_blocks(held)
    for c in planner.release_candidates(idle=True):
        queue.release(c)
    _check(pool, queue, planner, worker_mapped)
    assert max_mapped == BUDGET          # traffic reached the budget...
    assert planner.n_mapped == 2         # ...and idle gives it back down to chunk 0 + one reserve chunk


class _BusyPool:
    """vLLM's BlockPool with kvlab's free queue, driven as the scheduler drives it while requests run: blocks
    get prefix-cache entries as they fill, and every step ends with the busy-time release and a page plan,
    whose chunks mapped and unmapped are counted."""

    def __init__(self, chunks: int, k: int, release_delay: float):
        self.pool = BlockPool(num_gpu_blocks=k * chunks, enable_caching=True, hash_block_size=16)
        self.planner = ChunkPlanner(chunks, k, 1, reserve_chunks=1, release_delay=release_delay)
        self.queue = ElasticFreeQueue(self.pool, self.planner)
        self.pool.free_block_queue = self.queue
        self.maps = self.unmaps = 0
        self._hashes = itertools.count(1)

    def cache(self, blocks) -> None:
        """A new cache entry for each block, as a full block of a prompt or of an output gets."""
        for b in blocks:
            key = make_block_hash_with_group_id(BlockHash(next(self._hashes).to_bytes(8, "little")), 0)
            self.pool._insert_block_hash(key, b, num_tokens=16)

    def end_step(self) -> None:
        for c in self.planner.release_candidates(idle=False):
            self.queue.release(c)
        plan = self.planner.take_plan()
        if plan is not None:
            self.maps, self.unmaps = self.maps + len(plan.map), self.unmaps + len(plan.unmap)


def _steady_traffic(release_delay: float, steps: int = 600, per_step: int = 8, hold: int = 5) -> _BusyPool:
    """A request of ``per_step`` fully cached blocks every 0.1 s, each freed ``hold`` steps later."""
    busy = _BusyPool(64, K, release_delay)
    live = []
    for step in range(steps):
        busy.planner.tick(step * 0.1)
        got = busy.pool.get_new_blocks(per_step)
        busy.cache(got)  # every block full and cached, as a long prompt's blocks are
        live.append(got)
        if len(live) > hold:
            busy.pool.free_blocks(live.pop(0))
        busy.end_step()
    return busy


def test_steady_traffic_keeps_a_stable_pool_instead_of_a_sliding_window():
    # Working set: 5 requests of 8 blocks = 10 chunks; cache entries younger than half the 1 s release delay
    # are kept (5 steps of 8 blocks = 10 chunks). 60 s of traffic writes 4800 blocks (1200 chunks) of KV.
    busy = _steady_traffic(release_delay=1.0)
    assert busy.planner.n_mapped <= 23 and busy.maps <= 23, (busy.planner.n_mapped, busy.maps)  # mapped once
    assert busy.unmaps == 0


def test_a_young_cache_entry_is_kept_by_mapping_an_old_one_is_reused():
    pool = BlockPool(num_gpu_blocks=K * CHUNKS, enable_caching=True, hash_block_size=16)
    planner = ChunkPlanner(CHUNKS, K, 1, reserve_chunks=0, release_delay=1.0)
    queue = ElasticFreeQueue(pool, planner)
    pool.free_block_queue = queue
    planner.tick(0.0)
    blocks = pool.get_new_blocks(K - 1)  # chunk 0's blocks but the null block
    for i, b in enumerate(blocks):
        pool._insert_block_hash(make_block_hash_with_group_id(BlockHash(bytes([i + 1] * 8)), 0), b, num_tokens=16)
    pool.free_blocks(blocks)
    planner.tick(0.4)  # freed less than half the delay ago: a new chunk is mapped, the entries stay
    young = pool.get_new_blocks(1)
    assert planner.n_mapped == 2 and young[0].block_id // K == 1
    assert all(b.block_hash is not None for b in blocks)
    pool.free_blocks(young)
    planner.tick(0.9)  # older than half the delay: the oldest entry is evicted and its block reused
    old = pool.get_new_blocks(K + 1)  # chunk 1's K fresh blocks come first, then the oldest cached one
    assert planner.n_mapped == 2
    assert blocks[0] in old and blocks[0].block_hash is None


def test_closed_loop_saturation_grows_once_and_unmaps_nothing_while_busy():
    # serving_overhead.py's saturation phase in the pool alone: 64 clients, each sending its next request a
    # few steps after the last one ended; 256-token prompts (16 cached blocks), 128 output tokens (one more
    # block every 16), 2.2 ms steps as on the H100. On the H100 each such phase mapped 13-15 chunks and as
    # many were unmapped by the time its figures were read: this says they went at the end, not while busy.
    k, step_s = 64, 0.0022
    busy, rng = _BusyPool(200, k, release_delay=1.0), random.Random(0)
    running, next_send = [], [0] * 64  # [client, blocks, tokens]; the step each client sends at
    sent = done = step = 0
    while done < 1024:
        busy.planner.tick(step * step_s)
        for client, at in enumerate(next_send):
            if at is not None and at <= step and sent < 1024:
                blocks = busy.pool.get_new_blocks(16)
                busy.cache(blocks)
                running.append([client, blocks, 0])
                next_send[client], sent = None, sent + 1
        for r in running:
            r[2] += 1
            if r[2] % 16 == 0:
                busy.cache(r[1][-1:])
                if r[2] < 128:
                    r[1] += busy.pool.get_new_blocks(1)
        for r in [r for r in running if r[2] >= 128]:
            running.remove(r)
            busy.pool.free_blocks(reversed(r[1]))
            next_send[r[0]], done = step + rng.randint(1, 4), done + 1
        busy.end_step()
        step += 1
    live = 64 * 24 / k  # chunks of KV the 64 requests hold at their longest
    assert busy.unmaps == 0, f"{busy.unmaps} chunks unmapped while busy ({busy.maps} mapped)"
    assert live < busy.planner.n_mapped == busy.maps + 1 < 4 * live, (busy.maps, live)  # grown once, then reused
