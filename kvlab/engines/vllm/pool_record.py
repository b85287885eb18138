"""The engine's pool in the shared registry: its record (what `kvlab top/ctl` and the lab read) and its
control block (the limit and minimum other processes ask for).

One record per engine, published by the scheduler (the process that owns the ChunkPlanner), however
many ranks (tensor/pipeline-parallel workers) it has: sizes are of the whole engine (the planner's
chunk is one chunk on every rank), ``ranks`` says over how many workers they are split. Fields:

* ``capacity`` = all chunks' bytes; ``mapped`` = chunks the scheduler has planned mapped (the workers map
  them before the step that uses them); ``used`` = bytes of blocks in use (requests' blocks and vLLM's
  null block); ``retained`` = bytes of mapped chunks that are entirely free (the reserve, until the
  engine has been idle for ``idle_release`` seconds, and chunks waiting out ``release_delay``);
  ``limit`` = the limit enforced now (the asked-for limit in whole chunks, raised to one max-length
  request when it is lower); ``min`` = the guarantee in force; ``n_maps``/``n_unmaps`` = pages
  mapped/unmapped so far; ``map_ns`` = time the workers in this process spent in ``Arena.map`` so far (a
  step late: workers map after the plan is published; 0 where the workers live in other processes).
* Page map: the record's ``page_size`` is the engine's mapping page (KVLAB_PAGE_SIZE). Chunk ``c`` is
  shown as pages ``[c*P, (c+1)*P)`` with ``P = chunk_bytes / page_size``, in chunk order (a chunk's real
  pages are spread over the layers' regions): all ``UNMAPPED`` when the chunk is unmapped, else its
  share of used blocks as ``USED`` (first) and the rest ``MAPPED``. Hybrid models (several KV cache
  groups over one pool) show the blocks each group holds as ``USED + g``, group by group
  (``held_per_group``, read from vLLM's per-group managers at most every ``GROUP_PERIOD`` seconds: it walks
  every held block, too slow for every publication of a large GPU pool), so `kvlab top` and the page
  map can count pages per group; a sliding-window group's share stays small however long its requests.

Published on every map/unmap, when an update leaves the engine idle (it may not step again for a long
while), and at most ``MAX_RATE`` times a second otherwise; the heartbeat and the control block are looked
after by ``watcher.PoolWatcher``.
"""

from __future__ import annotations

import math
import time

import numpy as np

from kvlab.registry import Control, PageState, Publisher
from kvlab.registry.names import default_name
from kvlab.registry.record import MAX_GROUPS

from .planner import ChunkPlanner

MAX_RATE = 10.0  # publications per second while nothing is mapped or unmapped (readers sample at ~10 Hz)
GROUP_PERIOD = 1.0  # seconds between readings of which KV cache group holds which blocks (hybrid models)


def served_model(vllm_config) -> str:
    name = getattr(vllm_config.model_config, "served_model_name", None) or vllm_config.model_config.model
    return str(name[0] if isinstance(name, (list, tuple)) else name)


class PoolRecord:
    def __init__(self, planner: ChunkPlanner, *, model: str, page_size: int, name: str, device: str,
                 device_uuid: str, limit: int | None, minimum: int, min_period: float = 1 / MAX_RATE,
                 held_per_group=None, ranks: int = 1, map_ns=lambda: 0):
        import os

        self.planner = planner
        # () -> one collection of held block ids per KV cache group; None: one group, counted by the planner
        self.held_per_group = held_per_group
        self._held: list[np.ndarray] = []   # blocks each group holds per chunk, as last read
        self._held_at = -GROUP_PERIOD
        self.pages_per_chunk = max(1, planner.chunk_bytes // page_size)
        self.block_bytes = planner.chunk_bytes // planner.k
        capacity = planner.num_chunks * planner.chunk_bytes
        minimum = min(minimum, capacity)
        self.publisher = Publisher(model, capacity, planner.chunk_bytes // self.pages_per_chunk,
                                   name=name or default_name(model, os.getpid()), device=device,
                                   device_uuid=device_uuid, limit=limit, min=minimum,
                                   max_pages=planner.num_chunks * self.pages_per_chunk, ranks=ranks)
        self.name = self.publisher.name
        self.limit, self.min = limit, minimum
        self.control_seen = 0     # control revision applied
        self.n_maps = self.n_unmaps = 0
        self.map_ns = map_ns  # callable: the mappers' total map time, read at each publication
        self.min_period = min_period
        self._last = 0.0
        self._last_used = -1
        self._dirty = False
        self.publish(force=True)

    # -- control -----------------------------------------------------------------------------------
    def pending_control(self) -> Control | None:
        """The control block, if it changed since the last one applied (cheap: one seqlock read)."""
        ctl = self.publisher.control()
        return ctl if ctl.revision != self.control_seen else None

    def applied(self, ctl: Control, limit: int | None, minimum: int) -> None:
        self.control_seen, self.limit, self.min = ctl.revision, limit, minimum
        self._dirty = True  # the next publish() goes out whatever else changed: readers wait for the ack

    # -- state -------------------------------------------------------------------------------------
    def count(self, mapped_chunks: int, unmapped_chunks: int) -> None:
        self.n_maps += mapped_chunks * self.pages_per_chunk
        self.n_unmaps += unmapped_chunks * self.pages_per_chunk

    def pages(self) -> np.ndarray:
        p, k, n = self.pages_per_chunk, self.planner.k, self.planner.num_chunks
        mapped = np.fromiter(self.planner.mapped, dtype=bool, count=n)
        offset = np.arange(p)[None, :]
        states = np.where(mapped[:, None], PageState.MAPPED, PageState.UNMAPPED).repeat(p, axis=1)
        if self.held_per_group is None:
            free = np.fromiter(self.planner.free, dtype=np.int64, count=n)
            held = [np.where(mapped, k - free, 0)]
        else:
            now = time.monotonic()
            if now - self._held_at >= GROUP_PERIOD:
                self._held_at = now
                self._held = [np.bincount(np.fromiter(ids, dtype=np.int64, count=len(ids)) // k, minlength=n)[:n]
                              for ids in self.held_per_group()]
            held = [np.where(mapped, blocks, 0) for blocks in self._held]  # a chunk unmapped since holds nothing
        # Group by group, each chunk's pages in proportion to the blocks each group holds there.
        upto = np.zeros(n, dtype=np.int64)
        bounds = [np.zeros(n, dtype=np.int64)]
        for blocks in held:
            upto = upto + blocks
            bounds.append(np.ceil(upto * p / k).astype(np.int64))
        for g in range(len(held) - 1, -1, -1):  # the lowest group wins a page two groups share
            inside = (offset >= bounds[g][:, None]) & (offset < bounds[g + 1][:, None])
            states = np.where(inside, PageState.USED + min(g, MAX_GROUPS - 1), states)
        return states.astype(np.uint8).ravel()

    def publish(self, force: bool = False) -> None:
        """Publish now if ``force`` (a map/unmap or a control change), else at most every ``min_period``."""
        now = time.monotonic()
        force = force or self._dirty
        if not force and now - self._last < self.min_period:
            return
        planner = self.planner
        used_blocks = planner.used_blocks()
        if not force and used_blocks == self._last_used:
            return
        self._last, self._last_used, self._dirty = now, used_blocks, False
        retained = planner.retained_chunks() * planner.chunk_bytes
        self.publisher.update(mapped=planner.n_mapped * planner.chunk_bytes, used=used_blocks * self.block_bytes,
                              retained=retained, limit=self.limit, min=self.min, n_maps=self.n_maps,
                              n_unmaps=self.n_unmaps, control_ack=self.control_seen, map_ns=self.map_ns(),
                              pages=self.pages())

    def heartbeat(self) -> None:
        self.publisher.heartbeat()

    def close(self) -> None:
        self.publisher.close()


def min_chunks(minimum: int, chunk_bytes: int) -> int:
    return math.ceil(minimum / chunk_bytes)
