"""Hybrid models (several KV cache groups: sliding-window and full-attention layers) served elastically.

kvlab's gemma3 "tiny" has two sliding-window layers (a 128-token window) and two full-attention ones:
vLLM gives them two KV cache groups over one block pool. Its attention is sharp, so a corrupted block in
either group changes the tokens. In-process engines, float32 (batch-invariant on CPU), prompts far
longer than the window.
"""

import random

import numpy as np
import pytest

pytest.importorskip("vllm")

from tests.engines.vllm_helpers import close_llm, make_llm, resident_bytes, scheduler_of, worker_stats  # noqa: E402
from tests.registry.conftest import root  # noqa: E402, F401  (a private registry directory)

pytestmark = pytest.mark.slow

KiB, MiB = 1 << 10, 1 << 20
KV_BYTES = 64 * MiB
WINDOW = 128
LENGTHS = [1500, 700, 300, 130, 64]  # all but the last cross the window
MAX_TOKENS = 16
LONG_TOKENS = 24


@pytest.fixture(scope="module")
def gemma3_tiny(tmp_path_factory):
    pytest.importorskip("tokenizers")
    from kvlab.models import synthetic

    return synthetic("gemma3", "tiny", out_dir=tmp_path_factory.mktemp("models") / "gemma3-tiny")


@pytest.fixture(scope="module")
def gemma3_static(gemma3_tiny):
    """Stock vLLM's tokens for the batch and for the long prompt alone, and its KV cache groups' windows."""
    static = _engine(gemma3_tiny)
    try:
        groups = scheduler_of(static).kv_cache_config.kv_cache_groups
        return {"windows": sorted(str(getattr(g.kv_cache_spec, "sliding_window", None)) for g in groups),
                "batch": _generate(static, _prompts(LENGTHS)),
                "long": _generate(static, [LONG_PROMPT], max_tokens=LONG_TOKENS)[0]}
    finally:
        close_llm(static)


def _prompts(lengths, seed=0):
    rng = random.Random(seed)
    return [{"prompt_token_ids": [rng.randrange(10, 4000) for _ in range(n)]} for n in lengths]


LONG_PROMPT = _prompts([2000], seed=7)[0]


def _generate(llm, batch, max_tokens=MAX_TOKENS):
    from vllm import SamplingParams

    outs = llm.generate(batch, SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True), use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


def _engine(model, kvlab=None):
    return make_llm(model, KV_BYTES, kvlab=kvlab, dtype="float32", max_model_len=4096, max_num_seqs=8)


def _worker(llm):
    return llm.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker


def _assert_consistent(llm):
    """The scheduler's mapped chunks are the worker's mapped pages; no block a request holds is unmapped."""
    sched, mapper = scheduler_of(llm), _worker(llm).kvlab_mapper
    planner = sched.kvlab_planner
    expected = np.zeros(mapper.arena.n_pages, dtype=bool)
    expected[mapper.table[[c for c in range(planner.num_chunks) if planner.mapped[c]]].ravel()] = True
    assert np.array_equal(mapper.arena.mapped, expected)
    for b in sched.kv_cache_manager.block_pool.blocks:
        if b.ref_cnt > 0 or b.block_hash is not None:
            assert planner.mapped[b.block_id // planner.k], f"block {b.block_id} is live in an unmapped chunk"


def test_greedy_outputs_identical_to_static_across_the_window(gemma3_tiny, gemma3_static):
    reference = gemma3_static["batch"]
    assert gemma3_static["windows"] == [str(WINDOW), "None"]  # a sliding-window group, a full-attention one
    assert len({tuple(o) for o in reference}) == len(LENGTHS)

    llm = _engine(gemma3_tiny, {"elastic": True, "page_size": "64KiB", "reserve": 0})
    try:
        geo = scheduler_of(llm).kvlab_geometry
        outputs = _generate(llm, _prompts(LENGTHS))
        stats = worker_stats(llm)
        _assert_consistent(llm)
    finally:
        close_llm(llm)
    assert geo.num_groups == 2 and geo.num_layers == 2  # two layer slots, shared by both groups
    assert outputs == reference
    assert stats["peak_mapped_bytes"] > 8 * stats["chunk_bytes"] and stats["mapped_bytes"] == stats["chunk_bytes"]


def test_sliding_window_blocks_are_released_while_the_request_decodes(gemma3_tiny, gemma3_static, root,
                                                                      monkeypatch):
    """One long request: after its prefill, the blocks its sliding-window layers no longer see go back to
    the pool; kvlab unmaps them while the request is still decoding (release_delay 0)."""
    from vllm import SamplingParams

    from kvlab import registry
    from kvlab.engines.vllm import pool_record

    monkeypatch.setattr(pool_record, "GROUP_PERIOD", 0.0)  # pages per group read at every publication

    prompt = LONG_PROMPT
    llm = _engine(gemma3_tiny, {"elastic": True, "page_size": "64KiB", "reserve": 0, "release_delay": 0,
                                "pool_name": "hybrid"})
    engine = llm.llm_engine
    try:
        chunk = worker_stats(llm)["chunk_bytes"]  # one 128-token block in both layer slots: 128 KiB
        engine.add_request("long", prompt, SamplingParams(temperature=0, max_tokens=LONG_TOKENS, ignore_eos=True))
        tokens, during = [], []
        while engine.has_unfinished_requests():
            for out in engine.step():
                tokens = list(out.outputs[0].token_ids)
            if engine.has_unfinished_requests() and 2 <= len(tokens) < LONG_TOKENS:
                stats = worker_stats(llm)
                during.append((stats["mapped_bytes"], stats["peak_mapped_bytes"], stats["chunks_unmapped"],
                               resident_bytes(stats["pid"], stats["base"], stats["capacity"]),
                               registry.read("hybrid")))
        _assert_consistent(llm)
    finally:
        close_llm(llm)
    assert tokens == gemma3_static["long"]
    assert during, "the request finished before a decoding step could be watched"
    mapped, peak, unmapped, resident, rec = during[0]
    full_blocks = -(-2000 // 128)
    # The prefill mapped both groups' blocks for all 2000 tokens; by the second decoding step only the
    # full-attention blocks, the window's and chunk 0 are left: the rest was unmapped mid-request.
    assert peak >= 2 * full_blocks * chunk
    assert unmapped >= full_blocks - 4 and mapped <= (full_blocks + 4) * chunk
    assert resident == mapped and rec.mapped == mapped
    assert rec.used == mapped  # every block still mapped is held: chunk 0, the full-attention blocks, the window
    # The record's pages per group (two pages a block, one per layer slot): the sliding-window group (vLLM's
    # group 0 here) holds the window's blocks, the full-attention group all the prompt's.
    sliding, full = rec.used_pages_per_group()
    assert sliding <= 2 * 4 and full >= 2 * full_blocks
