"""Worker side: the KV buffer as an Arena view, and the page plans applied before each forward pass.

vLLM allocates the KV cache inside its worker's memory-pool context for "kv_cache" (see
``compat.KVAllocationHook``). The elastic worker returns ``allocation_context()`` there: a TorchFunctionMode that
answers exactly the expected ``torch.zeros(n, dtype=int8)`` calls with views of one reserved,
unmapped arena, so the buffer is never zero-filled and costs no memory until chunks are mapped.
Allocations are handle-aligned; what vLLM then binds to its layers is read back by ``layout.page_table``,
in handle slots (the chunk arithmetic's unit, ``settings.handle_bytes``), which ``_pages`` turns into the
arena's pages (``settings.page_size``, the page map's granularity).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from kvlab.memory import Arena, KvlabMemoryError
from kvlab.settings import ElasticSettings

from . import compat
from .geometry import ChunkGeometry
from .layout import page_table
from .planner import PagePlan
from .ranks import MapFailure, RankMapError, agree

logger = logging.getLogger("vllm.kvlab")  # under vLLM's logger, so its handlers print it

_local_lock = threading.Lock()
_local: dict[str, list[weakref.ref]] = {}


def local_workers(engine_id: str) -> list["WorkerMapper"]:
    """Mappers of ``engine_id`` that live in this process (in-process engines); empty in the scheduler of a
    multi-process engine."""
    with _local_lock:
        return [m for m in (r() for r in _local.get(engine_id, ())) if m is not None and not m.closed]


class _ArenaAllocation(TorchFunctionMode):
    def __init__(self, owner: "WorkerMapper"):
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.zeros and kwargs.get("dtype") is torch.int8 and args:
            size = args[0] if len(args) == 1 else args
            n = size[0] if isinstance(size, (tuple, list, torch.Size)) and len(size) == 1 else size
            if isinstance(n, int) and n in self.owner.pending:
                return self.owner.take(n)
        return func(*args, **kwargs)


class WorkerMapper:
    def __init__(self, settings: ElasticSettings, kv_cache_config, device: torch.device, model_type: str = "?"):
        self.settings = settings
        handle = settings.handle_bytes
        self.geometry = ChunkGeometry.from_kv_cache_config(kv_cache_config, handle, model_type)
        self.geometry.require_aligned()
        self.pending = compat.kv_buffer_sizes(kv_cache_config)
        capacity = sum(-(-n // handle) * handle for n in self.pending)
        self.arena = Arena(capacity, device="cpu" if device.type == "cpu" else f"cuda:{device.index or 0}",
                           page_size=settings.page_size, handle_size=handle)
        self._page_offsets = np.arange(self.arena.pages_per_handle, dtype=np.int64)
        self._cursor = 0
        self.table: np.ndarray | None = None
        self.closed = False
        self.is_cuda = device.type == "cuda"
        self.plans_applied = 0
        self.misses = 0  # plans any rank failed to map (and every rank undid)
        self.chunks_mapped = self.chunks_unmapped = 0
        self.peak_mapped_bytes = 0
        self._warm_chunks: set[int] = set()  # mapped for vLLM's warm-up only (see map_for_warmup)
        # The worker's own idle buffers that its next use rebuilds (release_scratch calls each; bytes freed).
        self.scratch_releasers: list[Callable[[], int]] = []
        self.scratch_released_bytes = 0
        # In-process engines may apply an idle release from the scheduler's watcher thread while the
        # engine thread applies a step's plan (always disjoint chunks); the arena calls take turns.
        self._apply_lock = threading.Lock()

    # -- allocation --------------------------------------------------------------------------------
    def allocation_context(self) -> TorchFunctionMode:
        return _ArenaAllocation(self)

    def take(self, n: int) -> torch.Tensor:
        self.pending.remove(n)
        t = self.arena.torch("int8", (n,), offset=self._cursor)
        handle = self.settings.handle_bytes
        self._cursor += -(-n // handle) * handle
        return t

    def bind(self, kv_caches, engine_id: str) -> None:
        """Read the page table off the bound views; map chunk 0 (it holds vLLM's null block)."""
        if self.pending:
            raise RuntimeError(f"kvlab: vLLM did not allocate its KV cache through torch.zeros as expected "
                               f"({len(self.pending)} allocation(s) missing); this vLLM build is not supported")
        # In handle slots: the geometry's unit is the handle.
        self.table = page_table(list(kv_caches), self.arena.base, self.arena.capacity, self.geometry)
        self._map((0,))
        with _local_lock:
            _local.setdefault(engine_id, []).append(weakref.ref(self))
        logger.info("kvlab: KV arena of %.1f MiB reserved, %d chunks x %d pages, chunk 0 mapped",
                    self.arena.capacity / 2**20, *self.table.shape)

    # -- warm-up -----------------------------------------------------------------------------------
    def map_for_warmup(self, block_ids) -> None:
        """Map the chunks of blocks a warm-up step writes.

        Model Runner V2 warms its kernels before the scheduler exists, with made-up requests on blocks
        1..N (up to max_num_seqs of them), through the worker's execute_model; those blocks' pages must
        be there, or the step faults on unmapped memory. ``end_warmup`` unmaps them again, so the
        scheduler starts, as it assumes, with chunk 0 alone mapped.
        """
        k, n = self.geometry.blocks_per_chunk, self.geometry.num_chunks
        chunks = sorted({b // k for b in block_ids} - {0} - self._warm_chunks)
        if not chunks or self.table is None:
            return
        if chunks[-1] >= n:
            raise RuntimeError(f"kvlab: a warm-up step names block {max(block_ids)}, past the {n * k} blocks of the "
                               "KV cache")
        with self._apply_lock:
            self._map(chunks)
            self._warm_chunks.update(chunks)

    def end_warmup(self) -> None:
        """Unmap what ``map_for_warmup`` mapped (after the device has finished with it)."""
        with self._apply_lock:
            if not self._warm_chunks:
                return
            chunks = sorted(self._warm_chunks)
            if self.is_cuda:
                torch.cuda.synchronize(self.arena.device.index)
            self.arena.unmap(self._pages(chunks))
            self.arena.pool.trim(0)
            self._warm_chunks.clear()
            logger.info("kvlab: %d chunk(s) mapped for vLLM's kernel warm-up unmapped again", len(chunks))

    # -- plans -------------------------------------------------------------------------------------
    def _pages(self, chunks) -> np.ndarray:
        """The arena pages of ``chunks``: every page of each of their handles."""
        slots = self.table[np.asarray(chunks, dtype=np.int64)].ravel()
        per = self.arena.pages_per_handle
        return np.sort((slots[:, None] * per + self._page_offsets).ravel()) if per > 1 else np.sort(slots)

    def _map(self, chunks) -> None:
        try:
            self.arena.map(self._pages(chunks))
            self.chunks_mapped += len(chunks)
            self.peak_mapped_bytes = max(self.peak_mapped_bytes, self.arena.mapped_bytes)
        except KvlabMemoryError as e:
            raise type(e)(f"kvlab could not map KV chunks {list(chunks)} ({e}); the scheduler's budget should "
                          "prevent this, so another process is probably using the device's memory") from e

    def apply(self, plan: PagePlan) -> None:
        with self._apply_lock:
            self._apply(plan)

    def apply_agreed(self, plan: PagePlan, group) -> MapFailure | None:
        """Apply ``plan`` on this rank and agree with the other ranks (``ranks.agree``; ``group`` as there).

        Returns None when every rank applied it. Otherwise every rank has undone this plan's maps (its
        unmaps stand: every rank made them) and the lowest failing rank's MapFailure is returned, for the
        step to end without a forward pass. A failure that is not a refused map raises RankMapError on
        every rank: its state is unknown, the engine must stop.
        """
        rank, ranks = (0, 1) if group is None else group[:2]
        with self._apply_lock:
            mapped_before = self.chunks_mapped
            try:
                self._apply(plan)
                local = None
            except KvlabMemoryError as e:  # the arena rolled this call back: nothing of plan.map is mapped
                local = MapFailure(rank, ranks, plan.seq, plan.map, str(e.__cause__ or e))
            except Exception as e:  # noqa: BLE001 - the peers must hear of it, or they wait forever
                local = MapFailure(rank, ranks, plan.seq, plan.map, f"{type(e).__name__}: {e}", recoverable=False)
            failure = agree(local, group)
            if failure is None:
                return None
            if local is None and plan.map and self.chunks_mapped > mapped_before:
                self.arena.unmap(self._pages(plan.map))  # a peer failed: undo ours, so no rank is half-mapped
                self.chunks_mapped -= len(plan.map)
                self.arena.pool.trim(0)
            if not failure.recoverable:
                raise RankMapError(failure)
            self.misses += 1
            logger.warning("kvlab: %s; every rank undid the plan's maps, none runs this step's forward pass",
                           failure.describe())
            return failure

    def _apply(self, plan: PagePlan) -> None:
        if self.closed or self.table is None:
            return
        if plan.unmap:
            if self.is_cuda:  # earlier steps' kernels may still read these pages
                torch.cuda.synchronize(self.arena.device.index)
            self.arena.unmap(self._pages(plan.unmap))
            self.chunks_unmapped += len(plan.unmap)
            self.arena.pool.trim(0)  # give the physical pages back to the device, not just to our pool
        if plan.map:
            self._map(plan.map)
        if plan.trim:
            self.release_scratch()
        elif plan.idle and self.is_cuda:
            # Idle: also give back the activations torch's caching allocator keeps from the burst.
            torch.cuda.empty_cache()
        self.plans_applied += 1

    def release_scratch(self) -> None:
        """Give back what an idle engine holds beyond weights and mapped KV pages, where the next step
        rebuilds it: vLLM's sampler workspace, the worker's ``scratch_releasers`` (MRV2's penalty
        statistics), then everything torch's caching allocator keeps unused."""
        if not self.is_cuda:
            return
        # vLLM's Triton top-k/top-p sampler keeps a (SMs x vocabulary) fp32 workspace for the engine's
        # life: 76.5 MiB on an H100 with a 151936-token vocabulary, the largest non-weight buffer of an
        # idle engine (benchmarks/vllm_elastic_gpu.py --breakdown); the next sampling step allocates it
        # again. Some versions also empty torch's cache there; the call below does it whatever the version.
        compat.reset_sampler_workspace()
        for release in self.scratch_releasers:
            self.scratch_released_bytes += release()
        torch.cuda.empty_cache()

    # -- state -------------------------------------------------------------------------------------
    def stats(self) -> dict:
        s = {"mapped_bytes": self.arena.mapped_bytes, "capacity": self.arena.capacity, "base": self.arena.base,
             "pid": os.getpid(), "device": str(self.arena.device), "chunk_bytes": self.geometry.chunk_bytes,
             "chunks": self.geometry.num_chunks, "plans_applied": self.plans_applied,
             "chunks_mapped": self.chunks_mapped, "chunks_unmapped": self.chunks_unmapped,
             "peak_mapped_bytes": self.peak_mapped_bytes, "handle_size": self.arena.handle_size,
             "map_ns": self.arena.stats()["map"]["total_ns"], "scratch_released_bytes": self.scratch_released_bytes,
             **self._chunk_states()}
        if self.is_cuda:
            dev = self.arena.device.index
            s["torch_allocated"] = torch.cuda.memory_allocated(dev)
            s["torch_reserved"] = torch.cuda.memory_reserved(dev)
        return s

    def _chunk_states(self) -> dict:
        """Chunks whose pages are all mapped, and any only partly mapped (never, if plans are all-or-nothing)."""
        if self.table is None:
            return {"mapped_chunks": [], "partial_chunks": []}
        per_chunk = np.asarray(self.arena.mapped, dtype=bool)[self.table].sum(axis=1)
        full = self.table.shape[1]
        return {"mapped_chunks": np.flatnonzero(per_chunk == full).tolist(),
                "partial_chunks": np.flatnonzero((per_chunk > 0) & (per_chunk < full)).tolist()}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.arena.close()
