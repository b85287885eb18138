"""The policy of one elastic SGLang pool, run on the scheduler's own thread, and its registry record.

SGLang's scheduler loop calls ``Scheduler.on_idle`` over and over while it has nothing to run and
``process_batch_result`` after every batch (compat.py hooks both), so the policy needs no thread of
its own to act: each call (at most every ``PERIOD`` seconds) applies a changed limit from the
registry, releases what may go (book.py) and publishes. Idle past ``idle_release``, and over a lowered
limit, it first evicts the RadixCache's unlocked entries (SGLang's own ``evict``, which frees their
pages through the allocator), so that cached prefixes do not pin memory an idle model should give
back. The watcher thread of the vLLM adapter (``PoolWatcher``) keeps the heartbeat and measures the
device's room for the headroom rule; its wake-up is not needed here, because the loop polls.
"""

from __future__ import annotations

import logging
import math
import time
import weakref

from kvlab.engines.vllm import headroom
from kvlab.engines.vllm.pool_record import PoolRecord
from kvlab.engines.vllm.watcher import PoolWatcher
from kvlab.registry import RecordExists

from . import compat

logger = logging.getLogger("sglang.kvlab")

PERIOD = 0.02  # seconds between policy runs while the loop spins idle (on_idle is called thousands of times a second)


def controller_of(scheduler):
    """The controller of a scheduler's elastic allocator (made on first use), or None when it is stock."""
    allocator = getattr(scheduler, "token_to_kv_pool_allocator", None)
    if not hasattr(allocator, "kvlab_book"):
        return None
    if allocator.kvlab_controller is None:
        model, context_len = compat.scheduler_model(scheduler)
        PoolController(allocator, model=model, context_len=context_len)
    return allocator.kvlab_controller


class PoolController:
    def __init__(self, allocator, *, model: str, context_len: int, probe=None):
        self.allocator, self.book = allocator, allocator.kvlab_book
        s = allocator.kvlab_pool.kvlab_settings
        geo = allocator.kvlab_pool.kvlab_geometry
        self.settings, self.tokens_per_chunk = s, geo.tokens_per_chunk
        # A budget below one longest request (and chunk 0) would leave it waiting forever.
        self.floor_chunks = 1 + math.ceil(context_len / geo.tokens_per_chunk)
        self.book.budget_chunks = self._budget(s.limit)
        device_type = "cpu" if allocator.kvlab_pool.kvlab_arena.device.backend == "host" else "cuda"
        index = allocator.kvlab_pool.kvlab_arena.device.index
        device, uuid, measured = headroom.device_probe(device_type, index)
        limit = None if s.limit is None else self.book.budget_chunks * self.book.chunk_bytes
        try:
            self.record = PoolRecord(self.book, model=model, page_size=s.page_size, name=s.pool_name, device=device,
                                     device_uuid=uuid, limit=limit, minimum=s.min)
        except RecordExists:
            raise RecordExists(f"kvlab: pool name {s.pool_name!r} (KVLAB_POOL_NAME) is taken by another live engine; "
                               "give each engine its own name, or leave it unset for a unique one") from None
        self.watcher = PoolWatcher(self.record, self.book, lambda: None, probe=probe or measured, device=device,
                                   device_uuid=uuid, headroom_spec=s.headroom, is_cuda=device != "cpu").start()
        self._last = 0.0
        allocator.kvlab_controller = self
        self._finalizer = weakref.finalize(self, _close, self.watcher, self.record)
        logger.info("kvlab: SGLang pool %s on %s, %d chunks of %.2f MiB, budget %d chunks", self.record.name, device,
                    self.book.num_chunks, self.book.chunk_bytes / 2**20, self.book.budget_chunks)

    def _budget(self, limit: int | None) -> int | None:
        if limit is None:
            return None
        return max(self.floor_chunks, limit // self.book.chunk_bytes)

    # -- counters the allocator reports ----------------------------------------------------------------
    def mapped(self, chunks: int) -> None:
        self.record.count(chunks, 0)
        self.record.publish(force=True)

    def unmapped(self, chunks: int) -> None:
        self.record.count(0, chunks)

    # -- the policy ------------------------------------------------------------------------------------
    def apply_control(self) -> None:
        ctl = self.record.pending_control()
        if ctl is None:
            return
        self.book.budget_chunks = budget = self._budget(ctl.limit)
        self.record.applied(ctl, None if budget is None else self.book.budget_chunks * self.book.chunk_bytes, ctl.min)
        logger.info("kvlab: pool %s limit %s (control revision %d)", self.record.name,
                    "none" if budget is None else f"{self.book.budget_chunks * self.book.chunk_bytes >> 20} MiB",
                    ctl.revision)

    def step(self, scheduler, idle: bool, now: float | None = None) -> int:
        """Run the policy once (throttled); returns the chunks released."""
        now = time.monotonic() if now is None else now
        if now - self._last < PERIOD:
            return 0
        self._last = now
        idle = idle and compat.scheduler_idle(scheduler)
        return self.run(getattr(scheduler, "tree_cache", None), idle, now)

    def run(self, tree_cache, idle: bool, now: float) -> int:
        book, allocator = self.book, self.allocator
        book.tick(now)
        self.apply_control()
        book.note_idle(idle)
        if tree_cache is not None and ((idle and book.grace_over()) or book.over_budget):
            # Cached prefixes would keep their chunks mapped: evict them (all when idle past the grace,
            # the excess over a lowered limit otherwise). SGLang frees their pages through the allocator.
            want = compat.evictable_tokens(tree_cache) if idle else book.over_budget * self.tokens_per_chunk
            compat.evict_tokens(tree_cache, want)
        book.sync(allocator.kvlab_free_page_ids())
        released = allocator.kvlab_release(book.release_candidates(idle))
        self.record.publish(force=released > 0)
        return released

    def close(self) -> None:
        self._finalizer()


def _close(watcher: PoolWatcher, record: PoolRecord) -> None:
    watcher.stop()
    record.close()
