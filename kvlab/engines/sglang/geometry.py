"""Where one chunk of SGLang KV slots lives in the arena: the page math of an elastic MHA pool.

SGLang's MHA pool (``MHATokenToKVPool``, NHD layout) keeps one buffer per layer, ``(2, P, heads,
head_dim)`` when K and V have the same shape (K in half 0, V in half 1), else one K and one V buffer
per layer of ``P`` rows. Row ``t`` is KV slot ``t``. A *chunk* is ``tokens_per_chunk`` consecutive
slots, the smallest whole number of SGLang pages whose rows fill whole arena pages in every buffer;
mapping a chunk maps those pages in every layer's K and V. ``P`` is the slot count rounded up to
whole chunks, so every buffer starts on an arena page and no two chunks share a page.

Pure arithmetic (numpy, no torch, no SGLang): tested on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Region:
    """One buffer in the arena: ``rows`` rows of ``row_bytes`` starting at byte ``offset``."""

    offset: int
    row_bytes: int


@dataclass(frozen=True)
class MHAGeometry:
    layers: int
    slots: int              # SGLang's rows: its size plus the padded page (slot 0's page)
    sgl_page: int           # SGLang's page size in tokens
    k_row_bytes: int
    v_row_bytes: int
    page_bytes: int         # the arena's mapping page

    def __post_init__(self):
        for name in ("layers", "slots", "sgl_page", "k_row_bytes", "v_row_bytes", "page_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def fused(self) -> bool:
        """K and V of a layer share one buffer, as SGLang allocates them when their shapes agree."""
        return self.k_row_bytes == self.v_row_bytes

    @property
    def tokens_per_chunk(self) -> int:
        p = self.page_bytes
        return math.lcm(self.sgl_page, p // math.gcd(p, self.k_row_bytes), p // math.gcd(p, self.v_row_bytes))

    @property
    def pages_per_chunk(self) -> int:
        """SGLang pages in one chunk."""
        return self.tokens_per_chunk // self.sgl_page

    @property
    def rows(self) -> int:
        """Rows of each buffer: the slots rounded up to whole chunks."""
        return -(-self.slots // self.tokens_per_chunk) * self.tokens_per_chunk

    @property
    def num_chunks(self) -> int:
        return self.rows // self.tokens_per_chunk

    @property
    def layer_bytes(self) -> int:
        return self.rows * (self.k_row_bytes + self.v_row_bytes)

    @property
    def capacity(self) -> int:
        return self.layers * self.layer_bytes

    @property
    def chunk_bytes(self) -> int:
        return self.tokens_per_chunk * (self.k_row_bytes + self.v_row_bytes) * self.layers

    def k_region(self, layer: int) -> Region:
        if self.fused:
            return Region(layer * self.layer_bytes, self.k_row_bytes)
        return Region(layer * self.rows * self.k_row_bytes, self.k_row_bytes)

    def v_region(self, layer: int) -> Region:
        if self.fused:
            return Region(layer * self.layer_bytes + self.rows * self.k_row_bytes, self.v_row_bytes)
        return Region(self.layers * self.rows * self.k_row_bytes + layer * self.rows * self.v_row_bytes,
                      self.v_row_bytes)

    def page_table(self) -> np.ndarray:
        """``table[c]``: the arena pages chunk ``c`` occupies, sorted (shape: chunks x pages per chunk)."""
        t, p = self.tokens_per_chunk, self.page_bytes
        chunks = np.arange(self.num_chunks, dtype=np.int64)[:, None]
        parts = []
        for layer in range(self.layers):
            for region in (self.k_region(layer), self.v_region(layer)):
                per_chunk = t * region.row_bytes // p
                first = (region.offset + chunks * t * region.row_bytes) // p
                parts.append(first + np.arange(per_chunk, dtype=np.int64)[None, :])
        return np.sort(np.concatenate(parts, axis=1), axis=1)

    def valid_pages(self) -> np.ndarray:
        """SGLang pages of each chunk that the allocator can hand out (page 0 and the rounding are not)."""
        k = self.pages_per_chunk
        n_pages = self.slots // self.sgl_page  # pages 1 .. n_pages - 1 are the allocator's
        first = np.arange(self.num_chunks, dtype=np.int64) * k
        valid = np.clip(n_pages - first, 0, k)
        valid[0] -= 1  # page 0 absorbs padded tokens' writes: never free, so chunk 0 stays mapped
        return valid
