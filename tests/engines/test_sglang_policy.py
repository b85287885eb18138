"""The SGLang adapter's page math and release policy, without SGLang (pure numpy)."""

import numpy as np
import pytest

from kvlab.engines.sglang.book import ChunkBook
from kvlab.engines.sglang.geometry import MHAGeometry


def geo(**kw):
    args = dict(layers=2, slots=256 + 4, sgl_page=4, k_row_bytes=128, v_row_bytes=128, page_bytes=4096)
    args.update(kw)
    return MHAGeometry(**args)


@pytest.mark.parametrize("kw", [{}, {"v_row_bytes": 64}, {"sgl_page": 1, "slots": 301}, {"k_row_bytes": 96}])
def test_chunks_tile_every_buffer_with_whole_pages(kw):
    g = geo(**kw)
    table = g.page_table()
    assert table.shape == (g.num_chunks, g.chunk_bytes // g.page_bytes)
    flat = np.sort(table.ravel())
    assert np.array_equal(flat, np.arange(g.capacity // g.page_bytes))  # each page in exactly one chunk
    assert g.rows >= g.slots and g.rows % g.tokens_per_chunk == 0 and g.tokens_per_chunk % g.sgl_page == 0
    # slot t of layer 1's V sits in the pages of chunk t // tokens_per_chunk
    t = g.slots - 1
    byte = g.v_region(1).offset + t * g.v_row_bytes
    assert byte // g.page_bytes in table[t // g.tokens_per_chunk]


def test_valid_pages_leave_out_page_zero_and_the_rounding():
    g = geo(slots=100 + 4)  # 26 SGLang pages (0..25): 1..25 are the allocator's
    valid = g.valid_pages()
    assert g.pages_per_chunk == 8 and valid.tolist() == [7, 8, 8, 2]


def book(**kw):
    g = geo()
    return ChunkBook(g.valid_pages(), g.pages_per_chunk, g.chunk_bytes, **kw)


def free_all_mapped(b):
    k = b.k
    ids = np.concatenate([np.arange(max(c * k, 1), (c + 1) * k) for c in np.flatnonzero(b.mapped)])
    b.sync(ids)


def test_growth_stops_at_the_budget_and_the_device_cap():
    b = book(budget_chunks=3)
    assert b.grow(100) == [1, 2] and b.n_mapped == 3 and b.growable_pages() == 0
    b.budget_chunks = None
    b.device_cap = 4
    assert b.growable_chunks() == 1 and b.grow(1) == [3]
    assert b.withheld_pages() == b.valid[4:].sum()


def test_idle_releases_beyond_the_reserve_then_the_reserve_after_the_grace():
    b = book(reserve_chunks=1, idle_release=5.0)
    b.grow(24)  # chunks 1, 2, 3
    b.tick(10.0)
    free_all_mapped(b)
    b.note_idle(True)
    assert b.release_candidates(idle=True) == [3, 2]  # chunk 1 stays as the reserve; chunk 0 is pinned
    b.unmark([3, 2])
    b.tick(15.0)
    assert b.release_candidates(idle=True) == [1]


def test_busy_release_waits_for_the_delay_unless_over_budget():
    b = book(release_delay=1.0)
    b.grow(16)
    b.tick(1.0)
    free_all_mapped(b)
    assert b.release_candidates(idle=False) == []
    b.tick(2.5)
    assert b.release_candidates(idle=False) == [2, 1]
    b.budget_chunks = 2
    b.tick(1.0)
    b.sync(np.arange(8, 16))  # chunk 1 fully free again just now
    assert b.release_candidates(idle=False) == [1]


def test_used_pages_are_never_release_candidates():
    b = book()
    b.grow(16)
    b.sync(np.r_[1:8, 9:16])  # page 8 (chunk 1) in use, chunk 2 wholly
    b.note_idle(True)
    assert b.release_candidates(idle=True) == []
    assert b.used_blocks() == 1 + 1 + 8  # page 0, page 8, and all of chunk 2
