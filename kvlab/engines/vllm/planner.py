"""Scheduler-side page policy: which chunks are mapped, when to map more, when to give them back.

Pure Python, no vLLM: the block pool tells the planner when blocks enter or leave its free queue,
and the planner answers three questions:

* how many more chunks may be mapped (the budget: the limit, or the whole reservation; and the device's
  room, ``device_cap``, which the pool's watcher thread keeps current: see headroom.py),
* which chunk to map next (the lowest unmapped one, so mapped memory stays in low, contiguous runs),
* which fully free chunks to release: while busy, those free for ``release_delay`` seconds; when the
  engine goes idle, all of them; either way keeping ``reserve_chunks`` free chunks as headroom, until the
  engine has been idle for ``idle_release`` seconds (then the reserve goes too: an idle model should
  cost little more than its weights, while bursts closer together than that still find it mapped).

Every decision is recorded as an event; ``take_plan()`` turns the events since the last call into a
PagePlan that the workers apply, in order, before the next forward pass.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

# The SchedulerOutput attribute that carries a step's PagePlan to the workers.
PLAN_ATTR = "kvlab_plan"


@dataclass(frozen=True)
class PagePlan:
    """What each worker does before a step's forward pass: unmap ``unmap``, then map ``map`` (chunk ids).

    ``idle``: the engine has no unfinished request, so workers may also return other cached memory.
    ``trim``: idle past the grace (the reserve goes): workers also drop scratch buffers that the next
    step rebuilds, so that a long-idle engine holds its weights and little else.
    """

    seq: int
    unmap: tuple[int, ...] = ()
    map: tuple[int, ...] = ()
    idle: bool = False
    trim: bool = False


class ChunkPlanner:
    def __init__(self, num_chunks: int, blocks_per_chunk: int, chunk_bytes: int, *, budget_chunks: int | None = None,
                 reserve_chunks: int = 0, release_delay: float = 1.0, idle_release: float | None = None,
                 pinned: tuple[int, ...] = (0,)):
        if num_chunks <= 0 or blocks_per_chunk <= 0:
            raise ValueError("a planner needs at least one chunk of at least one block")
        self.num_chunks, self.k, self.chunk_bytes = num_chunks, blocks_per_chunk, chunk_bytes
        self.pinned = frozenset(pinned)
        self.reserve_chunks = reserve_chunks
        self.release_delay = release_delay
        self.idle_release = idle_release          # seconds idle before the reserve goes; None: it never does
        self.idle_since: float | None = None      # when the engine last went idle; None while busy
        self.mapped = [c in self.pinned for c in range(num_chunks)]
        self.n_mapped = len(self.pinned)
        self.free = [0] * num_chunks              # free blocks of each chunk that sit in the free queue
        self.free_since = [0.0] * num_chunks      # when the chunk last became fully free
        self._fully_free: set[int] = set()        # mapped, unpinned chunks whose every block is free
        self._unmapped = [c for c in range(num_chunks) if not self.mapped[c]]  # a heap: lowest first
        self._unmap_events: list[int] = []
        self._map_events: list[int] = []
        self._seq = 0
        self.now = 0.0
        self.peak_mapped = self.n_mapped
        self.budget_chunks = budget_chunks
        # Most chunks the device's headroom rule allows (None: not measured). Written by another thread
        # as one int, read here as one: no lock needed on the hot path.
        self.device_cap: int | None = None

    # -- budget ------------------------------------------------------------------------------------
    @property
    def budget_chunks(self) -> int:
        return self._budget

    @budget_chunks.setter
    def budget_chunks(self, value: int | None) -> None:
        """Most chunks mapped at once. Lowering it unmaps nothing at once: free chunks go first, at release."""
        self._budget = self.num_chunks if value is None else max(len(self.pinned), min(int(value), self.num_chunks))

    def growable_chunks(self) -> int:
        cap = self._budget if self.device_cap is None else min(self._budget, self.device_cap)
        return max(0, min(len(self._unmapped), cap - self.n_mapped))

    @property
    def over_budget(self) -> int:
        """Chunks mapped beyond the budget (after a limit was lowered); they go as soon as they are free."""
        return max(0, self.n_mapped - self._budget)

    # -- events from the free queue ----------------------------------------------------------------
    def tick(self, now: float) -> None:
        self.now = now

    def note_idle(self, idle: bool) -> None:
        """Called once per step (and on the in-process idle paths) with whether the engine has no
        unfinished request: the first idle call starts the idle period's clock, a busy one ends it."""
        if not idle:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = self.now

    def on_free(self, block_ids) -> None:
        k, free = self.k, self.free
        for b in block_ids:
            c = b // k
            free[c] += 1
            if free[c] == k and c not in self.pinned:
                self._fully_free.add(c)
                self.free_since[c] = self.now

    def on_taken(self, block_ids) -> None:
        k, free = self.k, self.free
        for b in block_ids:
            c = b // k
            if free[c] == k:
                self._fully_free.discard(c)
            free[c] -= 1

    # -- decisions ---------------------------------------------------------------------------------
    def grow(self) -> int:
        """Mark the lowest unmapped chunk mapped and return it; the caller links its blocks."""
        if self.growable_chunks() <= 0:
            raise RuntimeError("no chunk may be mapped: the budget is spent")
        c = heapq.heappop(self._unmapped)
        self.mapped[c] = True
        self.n_mapped += 1
        self.peak_mapped = max(self.peak_mapped, self.n_mapped)
        self._map_events.append(c)
        return c

    def idle_release_at(self) -> float | None:
        """When this idle period's grace ends (the clock of ``tick``), or None: busy, or no grace set.

        Also read by the pool's watcher thread (two attribute reads, no lock): it wakes the engine then.
        """
        since, grace = self.idle_since, self.idle_release
        return None if since is None or grace is None else since + grace

    def grace_over(self) -> bool:
        """Idle for at least ``idle_release`` seconds (by the clock of ``tick``)."""
        due = self.idle_release_at()
        return due is not None and self.now >= due

    def retained_chunks(self) -> int:
        """Mapped, unpinned chunks that are entirely free: the reserve and chunks waiting to be released."""
        return len(self._fully_free)

    def release_candidates(self, idle: bool) -> list[int]:
        """Fully free chunks to release now, highest first, keeping the lowest ``reserve_chunks`` as headroom.

        Idle for ``idle_release`` seconds (see ``note_idle``), the reserve goes too. Over budget (a
        lowered limit), the reserve is given up as well, and the excess goes at once, busy or not: a
        limit must not wait for ``release_delay``.
        """
        ready = sorted(self._fully_free)
        reserve = 0 if idle and self.grace_over() else self.reserve_chunks
        keep = max(0, min(reserve, self._budget - (self.n_mapped - len(ready))))
        spare = ready[keep:]
        if not idle:
            deadline = self.now - self.release_delay
            forced = set(spare[len(spare) - min(self.over_budget, len(spare)):])
            spare = [c for c in spare if c in forced or self.free_since[c] <= deadline]
        return spare[::-1]

    def mark_released(self, c: int) -> None:
        """Record that chunk ``c``'s blocks left the free queue for good and its pages must be unmapped."""
        if not self.mapped[c] or c in self.pinned:
            raise ValueError(f"chunk {c} is not a mapped, releasable chunk")
        self._fully_free.discard(c)
        self.free[c] = 0
        self.mapped[c] = False
        self.n_mapped -= 1
        heapq.heappush(self._unmapped, c)
        self._unmap_events.append(c)

    def forget_unmaps(self, chunks) -> None:
        """Drop the unmap events of ``chunks``: released here, but the workers never kept them mapped
        (a rank could not map them and every rank undid the map)."""
        gone = set(chunks)
        self._unmap_events = [c for c in self._unmap_events if c not in gone]

    def take_plan(self, idle: bool = False) -> PagePlan | None:
        if not self._unmap_events and not self._map_events:
            return None
        self._seq += 1
        plan = PagePlan(self._seq, tuple(self._unmap_events), tuple(self._map_events), idle,
                        trim=idle and self.grace_over())
        self._unmap_events, self._map_events = [], []
        return plan

    def used_blocks(self) -> int:
        """Blocks of mapped chunks that are not free (requests' blocks, and the null block)."""
        k, free, mapped = self.k, self.free, self.mapped
        return sum(k - free[c] for c in range(self.num_chunks) if mapped[c])

    def stats(self) -> dict:
        return {"chunks": self.num_chunks, "mapped_chunks": self.n_mapped, "peak_mapped_chunks": self.peak_mapped,
                "budget_chunks": self._budget, "fully_free_chunks": len(self._fully_free),
                "chunk_bytes": self.chunk_bytes, "mapped_bytes": self.n_mapped * self.chunk_bytes}
