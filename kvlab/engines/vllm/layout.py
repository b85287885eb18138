"""Page table of a bound KV cache: which arena pages each chunk owns, read off vLLM's own views.

Layouts are data: rather than re-deriving each backend's shape rules, the worker inspects the
per-layer tensors vLLM bound to its attention layers (any shape, stride order or kernel-block
split), finds the block dimension, and computes the byte ranges a run of blocks occupies. The
result is validated against the scheduler's arithmetic (ChunkGeometry): every chunk must own exactly
``pages_per_chunk`` pages and no page may belong to two chunks; otherwise elastic memory refuses to
start rather than map the wrong memory.
"""

from __future__ import annotations

import itertools

import numpy as np

from .geometry import ChunkGeometry


class LayoutError(RuntimeError):
    """vLLM's KV cache views do not fit kvlab's chunk arithmetic."""


def _block_dim(shape, strides, num_blocks: int) -> tuple[int, int]:
    """(dim, kernel blocks per block): the dimension that indexes blocks, the outermost if ambiguous."""
    best = None
    for d, (size, stride) in enumerate(zip(shape, strides)):
        if size >= num_blocks and size % num_blocks == 0:
            ratio = size // num_blocks
            if ratio & (ratio - 1) == 0 and (best is None or stride > strides[best]):
                best = d
    if best is None:
        raise LayoutError(f"no dimension of a KV view {tuple(shape)} indexes the {num_blocks} blocks")
    return best, shape[best] // num_blocks


def _runs(shape, strides, itemsize: int) -> tuple[list[int], int]:
    """Byte offsets and common length of the contiguous runs of a strided tensor."""
    dims = sorted(((st * itemsize, sz) for sz, st in zip(shape, strides) if sz > 1), reverse=True)
    length = itemsize
    while dims and dims[-1][0] == length:
        stride, size = dims.pop()
        length = stride * size
    grid = itertools.product(*(range(sz) for _, sz in dims))
    offsets = [sum(i * st for i, (st, _) in zip(idx, dims)) for idx in grid]
    return offsets, length


def page_table(views, base: int, capacity: int, geo: ChunkGeometry) -> np.ndarray:
    """int64 array [num_chunks, pages_per_chunk] of arena page indices, sorted per chunk."""
    if not views:
        raise LayoutError("vLLM bound no KV cache tensors")
    page, k, n = geo.page_size, geo.blocks_per_chunk, geo.num_chunks
    chunk_index = np.arange(n, dtype=np.int64)
    columns, seen = [], set()
    for v in views:
        key = (v.data_ptr(), tuple(v.shape), tuple(v.stride()))
        if key in seen:  # layers sharing one KV cache (cross-layer sharing) appear twice
            continue
        seen.add(key)
        start = v.data_ptr() - base
        if not 0 <= start < capacity:
            raise LayoutError("a KV view lies outside kvlab's arena: vLLM allocated it some other way")
        d, ratio = _block_dim(v.shape, v.stride(), geo.num_blocks)
        itemsize = v.element_size()
        shape, strides = list(v.shape), list(v.stride())
        step = strides[d] * itemsize  # bytes between consecutive kernel blocks
        del shape[d], strides[d]
        offsets, length = _runs(shape, strides, itemsize)
        span = (k * ratio - 1) * step + length  # bytes one chunk's blocks cover in one run
        for off in offsets:
            lo = start + off + chunk_index * (k * ratio * step)
            first, last = lo // page, (lo + span - 1) // page
            width = last - first + 1
            if width.min() != width.max():
                raise LayoutError("chunks cover different numbers of pages: the KV layout is not page-aligned")
            columns.append(first[:, None] + np.arange(int(width[0]), dtype=np.int64))
    table = np.sort(np.concatenate(columns, axis=1), axis=1)
    rows = [np.unique(r) for r in table]
    if any(len(r) != geo.pages_per_chunk for r in rows):
        raise LayoutError(f"a chunk covers {sorted({len(r) for r in rows})} pages, kvlab's scheduler counts "
                          f"{geo.pages_per_chunk}: this vLLM KV layout is not supported")
    table = np.stack(rows)
    if len(np.unique(table)) != table.size:
        raise LayoutError("two chunks share a page: the KV layout is not page-aligned")
    if table.max() * page + page > capacity:
        raise LayoutError("the KV views reach past kvlab's arena")
    return table
