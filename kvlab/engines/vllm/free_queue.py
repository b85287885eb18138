"""vLLM's free-block queue, made elastic: only blocks of mapped chunks are linked in it.

The scheduler's BlockPool hands out blocks with ``free_block_queue.popleft_n`` and judges capacity by
``free_block_queue.num_free_blocks``. Replacing that one object (a subclass, so every other pool
method keeps working) is enough to put the policy in the pool:

* ``num_free_blocks`` = linked free blocks + the blocks of chunks the budget still lets us map, so a
  spent budget looks to vLLM like a full cache: new requests wait and running ones get preempted.
* ``popleft_n`` maps more chunks (lowest first) before it runs out, and before vLLM would evict a
  prefix-cached block freed less than half ``release_delay`` ago; the planner records the chunks so the
  workers map them before the forward pass. Older cached blocks are evicted and reused, as stock vLLM
  does once its pool is full (see ``_needs_growth``).
* ``release(chunk)`` evicts the chunk's cached blocks from the prefix cache and unlinks them, so
  nothing can reach the chunk's memory until it is mapped again.

Blocks of unmapped chunks are *parked*: ref_cnt 0, no hash, not linked, invisible to vLLM.
"""

from __future__ import annotations

from . import compat
from .planner import ChunkPlanner


class ElasticFreeQueue(compat.free_queue_base()):
    def __init__(self, pool, planner: ChunkPlanner):
        self._planner = planner
        self._pool = pool
        self._linked = 0
        # When each block last entered the queue (the planner's clock): whether its cache entry is young.
        self._freed_at = [0.0] * len(compat.pool_blocks(pool))
        k = planner.k
        blocks = []
        all_blocks = compat.pool_blocks(pool)
        for c in range(planner.num_chunks):
            if planner.mapped[c]:
                blocks.extend(b for b in all_blocks[c * k:(c + 1) * k] if not b.is_null and b.ref_cnt == 0)
        compat.unlink_all(all_blocks)  # park everything else: drop the links the old queue left on them
        super().__init__(blocks)
        self._linked = len(blocks)
        planner.on_free(b.block_id for b in blocks)

    # vLLM's methods adjust num_free_blocks arithmetically (+= / -=); the setter keeps that exact
    # for the linked count while reads also include what the budget still lets us map.
    @property
    def num_free_blocks(self) -> int:
        return self._linked + self._planner.growable_chunks() * self._planner.k

    @num_free_blocks.setter
    def num_free_blocks(self, value: int) -> None:
        self._linked = value - self._planner.growable_chunks() * self._planner.k

    @property
    def num_linked_blocks(self) -> int:
        return self._linked

    # -- growth ------------------------------------------------------------------------------------
    def _needs_growth(self, n: int) -> bool:
        """Whether handing out the first n linked blocks needs a new chunk: fewer than n are linked, or one
        of them holds a prefix-cache entry freed less than half the release delay ago (walks <= n links).

        Stock vLLM, its pool full-size, uses never-used blocks before it evicts a cached one, so a young
        entry is kept by mapping memory for it. An older one is evicted and its block reused: a chunk free
        for the whole delay is unmapped anyway. Half the delay, so that under steady load blocks are reused
        before their chunk's delay runs out (hysteresis); with the whole delay both rules fired at once.
        Growing for every cached block made the pool a sliding window under steady load, mapping new
        chunks and unmapping old ones as fast as KV was written (on the H100, 24 chunks of 48 MiB mapped
        and 23 unmapped in one 12 s saturation phase, the pool no larger at the end).
        """
        if self._linked < n:
            return True
        young = self._planner.now - self._planner.release_delay / 2
        freed_at = self._freed_at
        return any(b.block_hash is not None and freed_at[b.block_id] > young for b in compat.first_linked(self, n))

    def _ensure(self, n: int) -> None:
        planner = self._planner
        while planner.growable_chunks() > 0 and self._needs_growth(n):
            c = planner.grow()
            fresh = compat.pool_blocks(self._pool)[c * planner.k:(c + 1) * planner.k]
            super().prepend_n(fresh)
            planner.on_free(b.block_id for b in fresh)

    def popleft(self):
        self._ensure(1)
        block = super().popleft()
        self._planner.on_taken((block.block_id,))
        return block

    def popleft_n(self, n: int):
        self._ensure(n)
        blocks = super().popleft_n(n)
        self._planner.on_taken(b.block_id for b in blocks)
        return blocks

    # -- bookkeeping of vLLM's own moves -----------------------------------------------------------
    def remove(self, block) -> None:
        super().remove(block)
        self._planner.on_taken((block.block_id,))

    def append(self, block) -> None:
        super().append(block)
        self._freed_at[block.block_id] = self._planner.now
        self._planner.on_free((block.block_id,))

    def append_n(self, blocks) -> None:
        blocks = list(blocks)
        super().append_n(blocks)
        now, freed_at = self._planner.now, self._freed_at
        for b in blocks:
            freed_at[b.block_id] = now
        self._planner.on_free(b.block_id for b in blocks)

    def prepend_n(self, blocks) -> None:
        blocks = list(blocks)
        super().prepend_n(blocks)
        self._planner.on_free(b.block_id for b in blocks)

    # -- release -----------------------------------------------------------------------------------
    def release(self, chunk: int) -> None:
        """Evict and unlink every block of a fully free chunk, then record it for unmapping."""
        planner, pool = self._planner, self._pool
        blocks = compat.pool_blocks(pool)[chunk * planner.k:(chunk + 1) * planner.k]
        if any(b.ref_cnt or b.is_null or not compat.is_linked(b) for b in blocks):
            raise RuntimeError(f"kvlab: chunk {chunk} is not fully free; refusing to release it")
        compat.forget_blocks(pool, blocks)  # nothing may read the chunk's memory once it goes
        for b in blocks:
            super().remove(b)
        planner.mark_released(chunk)
