"""Elastic token-to-KV allocators: SGLang's own allocators whose free lists hold only mapped pages.

``free_pages`` (and the staged or released pages SGLang keeps beside it) only ever hold pages of mapped
chunks. Before an allocation takes pages, ``_kvlab_ensure`` maps the lowest unmapped chunks that the
budget allows and appends their pages; ``available_size`` counts those growable pages too, so SGLang's
admission, eviction and retraction see the budget (a limit, the device's room) as a smaller pool and a
limit becomes waiting or retraction, never a crash. Releasing a chunk takes its pages out of the free
lists first and unmaps them after, so nothing SGLang can hand out, and nothing its RadixCache holds
(cached pages are allocated, not free), ever points at an unmapped page. RadixCache eviction frees
through ``free``/``free_page_ids`` as usual; the pages it frees go back to the free lists, and the
chunks they empty are released by the policy (controller.py).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from sglang.srt.mem_cache.allocator import PagedTokenToKVPoolAllocator, TokenToKVPoolAllocator

from kvlab.memory import KvlabMemoryError

from . import compat
from .book import ChunkBook

logger = logging.getLogger("sglang.kvlab")


class ElasticAllocatorMixin:
    """The elastic half of both allocators; the SGLang base class keeps every other behaviour."""

    kvlab_controller = None

    def _kvlab_init(self, kvcache) -> None:
        geo = kvcache.kvlab_geometry
        if geo.sgl_page != self.page_size:
            raise RuntimeError(f"kvlab: the KV pool's page ({geo.sgl_page}) is not the allocator's ({self.page_size})")
        s = kvcache.kvlab_settings
        self.kvlab_pool = kvcache
        self.kvlab_book = ChunkBook(geo.valid_pages(), geo.pages_per_chunk, geo.chunk_bytes,
                                    reserve_chunks=-(-s.reserve // geo.chunk_bytes), release_delay=s.release_delay,
                                    idle_release=s.idle_release)
        self._kvlab_chunk_of = None
        self._kvlab_keep_mapped()

    # -- free lists ------------------------------------------------------------------------------------
    def _kvlab_free_lists(self) -> list[str]:
        """Names of the attributes that hold free page ids (tensors, or lists of them)."""
        return ["free_pages", "release_pages", "staged_pages"]

    def _kvlab_filter(self, keep) -> None:
        """Keep in every free list only the pages for which ``keep(page_ids)`` is true."""
        for name in self._kvlab_free_lists():
            value = getattr(self, name, None)
            if isinstance(value, torch.Tensor):
                setattr(self, name, value[keep(value)])
            elif isinstance(value, list) and value:
                kept = [t[keep(t)] for t in value]
                setattr(self, name, kept)
                if name == "staged_pages":
                    self.num_staged_pages = sum(t.numel() for t in kept)

    def kvlab_free_page_ids(self) -> np.ndarray:
        parts = []
        for name in self._kvlab_free_lists():
            value = getattr(self, name, None)
            if isinstance(value, torch.Tensor):
                parts.append(value)
            elif isinstance(value, list):
                parts += value
        if not parts:
            return np.empty(0, dtype=np.int64)
        return torch.cat([p.reshape(-1) for p in parts]).cpu().numpy()

    def _kvlab_mapped_mask(self) -> torch.Tensor:
        return torch.as_tensor(self.kvlab_book.mapped, device=self.device)

    def _kvlab_keep_mapped(self) -> None:
        mask, k = self._kvlab_mapped_mask(), self.kvlab_book.k
        self._kvlab_filter(lambda ids: mask[ids // k])

    def _kvlab_have(self) -> int:
        n = len(self.free_pages)
        if getattr(self, "release_pages", None) is not None:
            n += len(self.release_pages)
        return n + getattr(self, "num_staged_pages", 0)

    # -- growth and release --------------------------------------------------------------------------
    def _kvlab_ensure(self, pages: int) -> None:
        """Map chunks until at least ``pages`` pages are free and mapped, as far as the budget allows."""
        short = pages - self._kvlab_have()
        if short <= 0:
            return
        book = self.kvlab_book
        chunks = book.grow(short)
        if not chunks:
            return
        try:
            self.kvlab_pool.kvlab_map(chunks)
        except KvlabMemoryError as e:
            book.unmark(chunks)
            logger.warning("kvlab: could not map %d KV chunk(s) (%s); SGLang will wait or retract", len(chunks), e)
            return
        k, last = book.k, self.size // self.page_size
        ids = np.concatenate([np.arange(max(c * k, 1), min((c + 1) * k, last + 1)) for c in chunks])
        self.free_pages = torch.cat((self.free_pages, torch.as_tensor(ids, dtype=torch.int64, device=self.device)))
        if self.kvlab_controller is not None:
            self.kvlab_controller.mapped(len(chunks))

    def kvlab_release(self, chunks) -> int:
        """Take ``chunks``' pages out of the free lists, then unmap them. Only fully free chunks."""
        chunks = [int(c) for c in chunks]
        if not chunks:
            return 0
        book = self.kvlab_book
        if not book.fully_free()[chunks].all():
            raise RuntimeError(f"kvlab: chunks {chunks} are not all fully free; releasing them would lose KV")
        gone = torch.zeros(book.num_chunks, dtype=torch.bool, device=self.device)
        gone[chunks] = True
        k = book.k
        self._kvlab_filter(lambda ids: ~gone[ids // k])
        book.unmark(chunks)
        self.kvlab_pool.kvlab_unmap(chunks)
        if self.kvlab_controller is not None:
            self.kvlab_controller.unmapped(len(chunks))
        return len(chunks)

    def kvlab_withheld_tokens(self) -> int:
        """Free tokens the budget hides from SGLang (its conservation check adds them back)."""
        return self.kvlab_book.withheld_pages() * self.page_size

    def available_size(self):
        return super().available_size() + self.kvlab_book.growable_pages() * self.page_size

    def clear(self):
        super().clear()
        if getattr(self, "kvlab_book", None) is not None:
            self._kvlab_keep_mapped()


class ElasticTokenToKVPoolAllocator(ElasticAllocatorMixin, TokenToKVPoolAllocator):
    """SGLang's page-size-1 allocator over an elastic pool (pages are single tokens)."""

    def __init__(self, size, dtype, device, kvcache, need_sort, *args, **kwargs):
        super().__init__(size, dtype, device, kvcache, need_sort, *args, **kwargs)
        self._kvlab_init(kvcache)

    def alloc(self, need_size: int):
        self._kvlab_ensure(need_size)
        return super().alloc(need_size)


class ElasticPagedTokenToKVPoolAllocator(ElasticAllocatorMixin, PagedTokenToKVPoolAllocator):
    """SGLang's paged allocator over an elastic pool."""

    def __init__(self, size, page_size, dtype, device, kvcache, need_sort, *args, **kwargs):
        super().__init__(size, page_size, dtype, device, kvcache, need_sort, *args, **kwargs)
        self._kvlab_init(kvcache)

    def alloc(self, need_size: int):
        self._kvlab_ensure(need_size // self.page_size)
        return super().alloc(need_size)

    def alloc_extend(self, prefix_lens, prefix_lens_cpu, seq_lens, seq_lens_cpu, last_loc, extend_num_tokens,
                     num_new_pages=None):
        if num_new_pages is None:
            num_new_pages = compat.num_new_pages(seq_lens_cpu, self.page_size, prefix_lens=prefix_lens_cpu)
        self._kvlab_ensure(num_new_pages)
        return super().alloc_extend(prefix_lens, prefix_lens_cpu, seq_lens, seq_lens_cpu, last_loc,
                                    extend_num_tokens, num_new_pages)

    def alloc_decode(self, seq_lens, seq_lens_cpu, last_loc):
        self._kvlab_ensure(compat.num_new_pages(seq_lens_cpu, self.page_size, decode=True))
        return super().alloc_decode(seq_lens, seq_lens_cpu, last_loc)


def elastic_allocator_for(stock, kvcache):
    """The elastic twin of the allocator SGLang built for ``kvcache`` (same arguments), or a clear error."""
    if type(stock) is TokenToKVPoolAllocator:
        return ElasticTokenToKVPoolAllocator(stock.size, stock.dtype, stock.device, kvcache, stock.need_sort)
    if type(stock) is PagedTokenToKVPoolAllocator:
        return ElasticPagedTokenToKVPoolAllocator(stock.size, stock.page_size, stock.dtype, stock.device, kvcache,
                                                  stock.need_sort)
    raise RuntimeError(f"kvlab elastic KV supports SGLang's TokenToKVPoolAllocator and PagedTokenToKVPoolAllocator, "
                       f"not {type(stock).__name__} (hybrid, sparse or sharded KV); turn elastic memory off for "
                       f"this model")
