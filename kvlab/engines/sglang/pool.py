"""The elastic KV pool: SGLang's ``MHATokenToKVPool`` with its buffers carved out of one kvlab Arena.

Only the buffers' backing changes. ``_create_buffers_normal`` (the method SGLang's own platform seam
``get_kv_pool_cls`` tells out-of-tree pools to override) returns views of a reserved, unmapped arena
laid out as SGLang lays them out (per layer ``(2, rows, heads, head_dim)``, K then V; see
geometry.py), so addressing, kernels and PD registration stay SGLang's. Which chunks are mapped is
the allocator's decision (allocator.py); this class maps and unmaps what it is told. Touching an
unmapped chunk faults, on the GPU and on the host backend alike.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool

from kvlab.memory import Arena, KvlabMemoryError

from .geometry import MHAGeometry
from .settings import pool_settings

logger = logging.getLogger("sglang.kvlab")


def _arena_device(device) -> str:
    dev = torch.device(device)
    if dev.type == "cpu":
        return "cpu"
    if dev.type != "cuda":
        raise RuntimeError(f"kvlab elastic KV runs on CUDA GPUs or the CPU, not {dev.type}")
    return f"cuda:{dev.index if dev.index is not None else torch.cuda.current_device()}"


class ElasticMHATokenToKVPool(MHATokenToKVPool):
    """``MHATokenToKVPool`` whose KV buffers are views of a kvlab Arena, mapped chunk by chunk."""

    kvlab_elastic = True

    def _create_buffers_normal(self):
        if self.kv_cache_layout != "nhd":
            raise RuntimeError(f"kvlab elastic KV supports SGLang's NHD KV layout, not {self.kv_cache_layout!r}; "
                               "unset SGLANG_USE_HND_KVCACHE or turn elastic memory off")
        self.kvlab_settings = settings = pool_settings()
        if settings.handle_bytes != settings.page_size:
            raise RuntimeError("kvlab: KVLAB_HANDLE_SIZE (physical handles larger than pages) is a vLLM adapter "
                               "setting; SGLang's elastic pool maps one handle per KVLAB_PAGE_SIZE page: unset it")
        item = self.store_dtype.itemsize
        self.kvlab_geometry = geo = MHAGeometry(
            layers=self.layer_num, slots=self.size + self.page_size, sgl_page=self.page_size,
            k_row_bytes=self.head_num * self.head_dim * item, v_row_bytes=self.head_num * self.v_head_dim * item,
            page_bytes=settings.page_size)
        self.kvlab_arena = Arena(geo.capacity, device=_arena_device(self.device), page_size=geo.page_bytes)
        self.kvlab_table = geo.page_table()
        rows, slots = geo.rows, geo.slots
        dtype = self.store_dtype
        if geo.fused:
            fused = [self.kvlab_arena.torch(dtype, (2, rows, self.head_num, self.head_dim), geo.k_region(layer).offset)
                     for layer in range(self.layer_num)]
            self.k_buffer = [buf[0, :slots] for buf in fused]
            self.v_buffer = [buf[1, :slots] for buf in fused]
        else:
            self.k_buffer = [self.kvlab_arena.torch(dtype, (slots, self.head_num, self.head_dim),
                                                    geo.k_region(layer).offset) for layer in range(self.layer_num)]
            self.v_buffer = [self.kvlab_arena.torch(dtype, (slots, self.head_num, self.v_head_dim),
                                                    geo.v_region(layer).offset) for layer in range(self.layer_num)]
        self.kvlab_map([0])  # chunk 0 holds page 0, where SGLang writes padded tokens
        logger.info("kvlab: KV arena of %.1f MiB reserved (%d chunks of %d tokens, %.2f MiB each), chunk 0 mapped",
                    geo.capacity / 2**20, geo.num_chunks, geo.tokens_per_chunk, geo.chunk_bytes / 2**20)

    # -- mapping (the allocator decides) ------------------------------------------------------------
    def _pages(self, chunks) -> np.ndarray:
        return np.sort(self.kvlab_table[np.asarray(list(chunks), dtype=np.int64)].ravel())

    def kvlab_map(self, chunks) -> None:
        """Back ``chunks`` with physical pages (all or nothing; raises a KvlabMemoryError)."""
        self.kvlab_arena.map(self._pages(chunks))

    def kvlab_unmap(self, chunks) -> None:
        if self.kvlab_arena.device.backend == "cuda":
            torch.cuda.synchronize(self.kvlab_arena.device.index)  # kernels of earlier steps may still read them
        self.kvlab_arena.unmap(self._pages(chunks))
        self.kvlab_arena.pool.trim(0)  # give the pages back to the device, not just to our page pool

    def kvlab_chunk_mapped(self, chunk: int) -> bool:
        return bool(self.kvlab_arena.mapped[self.kvlab_table[chunk]].all())

    @property
    def kvlab_mapped_bytes(self) -> int:
        return self.kvlab_arena.mapped_bytes

    def _clear_buffers(self):
        super()._clear_buffers()
        self.kvlab_arena.close()


__all__ = ["ElasticMHATokenToKVPool", "KvlabMemoryError"]
