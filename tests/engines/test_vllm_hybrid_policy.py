"""Several KV cache groups without an engine: geometry from vLLM's own specs, the refusal of what kvlab cannot
serve (naming the model type), and the registry's pages per group."""

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402
from vllm.v1.kv_cache_interface import (  # noqa: E402
    FullAttentionSpec,
    KVCacheConfig,
    KVCacheGroupSpec,
    MambaSpec,
    SlidingWindowSpec,
)

from kvlab.engines.vllm.geometry import ChunkGeometry, UnsupportedModel  # noqa: E402
from kvlab.engines.vllm.planner import ChunkPlanner  # noqa: E402
from kvlab.engines.vllm.pool_record import PoolRecord  # noqa: E402
from kvlab.registry import PageState, list_records  # noqa: E402
from tests.registry.conftest import root  # noqa: E402, F401

KiB, MiB = 1 << 10, 1 << 20


def _full(block=128):
    return FullAttentionSpec(block_size=block, num_kv_heads=2, head_size=64, dtype=torch.bfloat16)


def _sliding(window=128, block=128):
    return SlidingWindowSpec(block_size=block, num_kv_heads=2, head_size=64, dtype=torch.bfloat16,
                             sliding_window=window)


def _config(*groups, num_blocks=512):
    return KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[],
                         kv_cache_groups=[KVCacheGroupSpec(names, spec) for names, spec in groups])


def test_groups_share_layer_slots_and_one_page_size():
    # Gemma-3-like: 4 sliding layers in two groups of two, 2 full layers in one: 2 layer slots per block.
    cfg = _config((["l0", "l1"], _sliding()), (["l3", "l4"], _sliding()), (["l2", "l5"], _full()))
    geo = ChunkGeometry.from_kv_cache_config(cfg, 2 * MiB, "gemma3_text")
    assert (geo.block_bytes, geo.num_layers, geo.num_groups) == (64 * KiB, 2, 3)
    assert geo.blocks_per_chunk == 32 and geo.chunk_bytes == 2 * 2 * MiB and geo.num_chunks == 16
    # A padded group (fewer layers than the others) uses the same slots.
    cfg = _config((["l0", "l1", "l2"], _sliding()), (["l3"], _full()))
    assert ChunkGeometry.from_kv_cache_config(cfg, 2 * MiB).num_layers == 3


def test_mamba_hybrids_are_refused_naming_the_model_type():
    mamba = MambaSpec(block_size=128, shapes=((16, 64),), dtypes=(torch.float32,))
    cfg = _config((["attn"], _full()), (["ssm"], mamba))
    with pytest.raises(UnsupportedModel, match=r"'jamba'.*MambaSpec.*turn elastic memory off"):
        ChunkGeometry.from_kv_cache_config(cfg, 2 * MiB, "jamba")


def test_layers_of_different_page_sizes_are_refused():
    small = FullAttentionSpec(block_size=128, num_kv_heads=1, head_size=64, dtype=torch.bfloat16)
    cfg = _config((["a"], _full()), (["b"], small))
    with pytest.raises(UnsupportedModel, match=r"'odd'.*different sizes \(\[32768, 65536\]"):
        ChunkGeometry.from_kv_cache_config(cfg, 2 * MiB, "odd")


def test_attention_free_models_are_refused():
    with pytest.raises(UnsupportedModel, match="'mamba' has no KV cache"):
        ChunkGeometry.from_kv_cache_config(_config(), 2 * MiB, "mamba")


def test_record_counts_pages_per_group(root, monkeypatch):
    from kvlab.engines.vllm import pool_record

    monkeypatch.setattr(pool_record, "GROUP_PERIOD", 0.0)  # read the groups at every publication
    planner = ChunkPlanner(4, 4, 4 * MiB)  # 4 blocks a chunk, 2 pages of 2 MiB (one per block pair)
    held = [set(), set()]
    record = PoolRecord(planner, model="m", page_size=2 * MiB, name="groups", device="cpu", device_uuid="",
                        limit=None, minimum=0, held_per_group=lambda: held)
    try:
        c = planner.grow()
        planner.on_free(range(c * 4, c * 4 + 4))
        planner.on_taken(range(c * 4, c * 4 + 3))
        held[:] = [{4, 5}, {6}]  # chunk 1: two blocks of the full-attention group, one of the sliding one
        record.publish(force=True)
        rec = list_records(root)[0]
        assert list(rec.page_states()[2:4]) == [PageState.USED, PageState.USED + 1]
        assert list(rec.page_states()[:2]) == [PageState.MAPPED, PageState.MAPPED]  # chunk 0: the null block, no group's
        assert rec.used_pages_per_group() == [1, 1]
        held[:] = [{4, 5}, set()]  # the sliding window moved on: its block is free again
        record.publish(force=True)
        assert list_records(root)[0].used_pages_per_group() == [1]
        monkeypatch.setattr(pool_record, "GROUP_PERIOD", 3600.0)
        held[:] = [{4, 5}, {6}]
        record.publish(force=True)  # read less often than published: the last reading stands
        assert list_records(root)[0].used_pages_per_group() == [1]
    finally:
        record.close()
