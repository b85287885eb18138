"""Chunk bookkeeping and release policy of one elastic SGLang pool (numpy, no torch, no SGLang).

The allocator's free lists are the truth about which SGLang pages are free; the book knows which
chunks are mapped, the budget (a limit, the device's room) and when fully free chunks may go:

* while busy, a chunk that has been fully free for ``release_delay`` seconds, keeping ``reserve_chunks``
  of them mapped as headroom for the next burst;
* idle, every fully free chunk beyond the reserve at once; idle for ``idle_release`` seconds, the
  reserve too (and the lab's policy empties the prefix cache first, so that its pages become free);
* over budget (a limit was lowered), the excess at once, busy or not.

It offers what ``kvlab.engines.vllm.pool_record.PoolRecord`` and ``watcher.PoolWatcher`` read of a
planner (``k``, ``free``, ``mapped``, ``used_blocks`` ...), so the registry record, ``kvlab top``,
``kvlab ctl`` and the device headroom rule treat an SGLang pool exactly like a vLLM one.
"""

from __future__ import annotations

import numpy as np


class ChunkBook:
    def __init__(self, valid_pages: np.ndarray, pages_per_chunk: int, chunk_bytes: int, *,
                 budget_chunks: int | None = None, reserve_chunks: int = 0, release_delay: float = 1.0,
                 idle_release: float | None = 30.0):
        self.valid = np.asarray(valid_pages, dtype=np.int64)
        self.num_chunks, self.k, self.chunk_bytes = len(self.valid), int(pages_per_chunk), int(chunk_bytes)
        # Pages of a chunk that are never handed out (page 0, the rounding past the pool's end) count as
        # free, so "free == k" means "nothing of it in use"; chunk 0 holds page 0 and is never fully free.
        self.never_used = self.k - self.valid
        self.never_used[0] -= 1
        self.mapped = np.zeros(self.num_chunks, dtype=bool)
        self.mapped[0] = True
        self.free = np.zeros(self.num_chunks, dtype=np.int64)
        self.free_since = np.zeros(self.num_chunks)
        self._was_fully_free = np.zeros(self.num_chunks, dtype=bool)
        self.reserve_chunks, self.release_delay, self.idle_release = reserve_chunks, release_delay, idle_release
        self.now = 0.0
        self.idle_since: float | None = None
        self.device_cap: int | None = None  # written by the watcher thread (one int)
        self.peak_mapped = 1
        self.budget_chunks = budget_chunks

    # -- budget ------------------------------------------------------------------------------------
    @property
    def n_mapped(self) -> int:
        return int(self.mapped.sum())

    @property
    def budget_chunks(self) -> int:
        return self._budget

    @budget_chunks.setter
    def budget_chunks(self, value: int | None) -> None:
        self._budget = self.num_chunks if value is None else max(1, min(int(value), self.num_chunks))

    def growable_chunks(self) -> int:
        cap = self._budget if self.device_cap is None else min(self._budget, self.device_cap)
        return max(0, min(self.num_chunks - self.n_mapped, cap - self.n_mapped))

    def growable_pages(self) -> int:
        """SGLang pages that mapping the lowest growable chunks would add."""
        return int(self.valid[np.flatnonzero(~self.mapped)[:self.growable_chunks()]].sum())

    def withheld_pages(self) -> int:
        """Free pages of unmapped chunks that the budget does not let SGLang use now."""
        return int(self.valid[~self.mapped].sum()) - self.growable_pages()

    @property
    def over_budget(self) -> int:
        return max(0, self.n_mapped - self._budget)

    def grow(self, pages: int) -> list[int]:
        """Mark the lowest unmapped chunks mapped until they add at least ``pages`` (or the budget is spent)."""
        chunks, added = [], 0
        for c in np.flatnonzero(~self.mapped)[:self.growable_chunks()]:
            if added >= pages:
                break
            chunks.append(int(c))
            added += int(self.valid[c])
        self.mapped[chunks] = True
        self.free[chunks] = self.k
        self.peak_mapped = max(self.peak_mapped, self.n_mapped)
        return chunks

    def unmark(self, chunks) -> None:
        """Undo ``grow`` (the map failed) or record a release."""
        self.mapped[list(chunks)] = False
        self.free[list(chunks)] = 0
        self._was_fully_free[list(chunks)] = False

    # -- state from the allocator --------------------------------------------------------------------
    def tick(self, now: float) -> None:
        self.now = now

    def note_idle(self, idle: bool) -> None:
        if not idle:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = self.now

    def sync(self, free_page_ids: np.ndarray) -> None:
        """Recount the free pages of every mapped chunk from the allocator's free page ids."""
        counts = np.bincount(np.asarray(free_page_ids, dtype=np.int64) // self.k, minlength=self.num_chunks)
        self.free = np.where(self.mapped, counts[:self.num_chunks] + self.never_used, 0)
        fully = self.fully_free()
        self.free_since[fully & ~self._was_fully_free] = self.now
        self._was_fully_free = fully

    def fully_free(self) -> np.ndarray:
        fully = self.mapped & (self.free == self.k)
        fully[0] = False
        return fully

    # -- decisions ---------------------------------------------------------------------------------
    def idle_release_at(self) -> float | None:
        since, grace = self.idle_since, self.idle_release
        return None if since is None or grace is None else since + grace

    def grace_over(self) -> bool:
        due = self.idle_release_at()
        return due is not None and self.now >= due

    def release_candidates(self, idle: bool) -> list[int]:
        """Fully free chunks to release now, highest first; the lowest ``reserve_chunks`` stay as headroom."""
        ready = np.flatnonzero(self.fully_free())
        reserve = 0 if (idle and self.grace_over()) or self.over_budget else self.reserve_chunks
        spare = ready[min(reserve, len(ready)):]
        if not idle:
            forced = set(spare[len(spare) - min(self.over_budget, len(spare)):].tolist())
            spare = [c for c in spare.tolist() if c in forced or self.free_since[c] <= self.now - self.release_delay]
        return sorted((int(c) for c in spare), reverse=True)

    # -- what PoolRecord and PoolWatcher read --------------------------------------------------------
    def used_blocks(self) -> int:
        return int((self.k - self.free[self.mapped]).sum())

    def retained_chunks(self) -> int:
        return int(self.fully_free().sum())

    def stats(self) -> dict:
        return {"chunks": self.num_chunks, "mapped_chunks": self.n_mapped, "peak_mapped_chunks": self.peak_mapped,
                "budget_chunks": self._budget, "fully_free_chunks": self.retained_chunks(),
                "chunk_bytes": self.chunk_bytes, "mapped_bytes": self.n_mapped * self.chunk_bytes}
