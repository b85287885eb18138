"""The elastic scheduler: vLLM's scheduler with the block pool's policy replaced and a page plan per step.

Selected through ``scheduler_config.scheduler_cls`` (kvlab's plugin sets it when elastic memory is on).
It runs in the engine-core process. Each ``schedule()`` returns vLLM's SchedulerOutput with one extra
attribute, ``kvlab_plan`` (a PagePlan or None): the chunks to unmap and map before this step's forward
pass. SchedulerOutput is a plain dataclass that vLLM pickles to the workers, so the attribute travels
with it in multi-process mode and is simply there in-process.
"""

from __future__ import annotations

import logging
import math
import time

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler

from . import mapper
from .free_queue import ElasticFreeQueue
from .geometry import ChunkGeometry
from .planner import PLAN_ATTR, ChunkPlanner
from .settings import ElasticSettings

logger = logging.getLogger("vllm.kvlab")  # under vLLM's logger, so its handlers print it


def _budget_chunks(settings: ElasticSettings, geo: ChunkGeometry, vllm_config) -> int | None:
    if settings.limit is None:
        return None
    # A limit below one longest request would leave it waiting forever: never go below that.
    max_len = vllm_config.model_config.max_model_len
    block_size = vllm_config.cache_config.block_size
    need = 1 + math.ceil((math.ceil(max_len / block_size) + 1) / geo.blocks_per_chunk)
    budget = settings.limit // geo.chunk_bytes
    if budget < need:
        logger.warning("kvlab: KV limit %d MiB is below one %d-token request (%d chunks of %d MiB); using %d MiB",
                       settings.limit >> 20, max_len, need, geo.chunk_bytes >> 20, (need * geo.chunk_bytes) >> 20)
        budget = need
    return budget


class ElasticSchedulerMixin:
    """Installs the elastic free queue and attaches each step's page plan to its SchedulerOutput."""

    def __init__(self, vllm_config, kv_cache_config, *args, **kwargs):
        super().__init__(vllm_config, kv_cache_config, *args, **kwargs)
        self.kvlab_settings = ElasticSettings.from_vllm_config(vllm_config)
        geo = ChunkGeometry.from_kv_cache_config(kv_cache_config, self.kvlab_settings.page_size)
        geo.require_aligned()
        self.kvlab_geometry = geo
        s = self.kvlab_settings
        self.kvlab_planner = ChunkPlanner(
            geo.num_chunks, geo.blocks_per_chunk, geo.chunk_bytes, budget_chunks=_budget_chunks(s, geo, vllm_config),
            reserve_chunks=math.ceil(s.reserve / geo.chunk_bytes), release_delay=s.release_delay)
        pool = self.kv_cache_manager.block_pool
        if len(pool.blocks) != geo.num_blocks:
            raise RuntimeError(f"kvlab: the block pool has {len(pool.blocks)} blocks, the KV config {geo.num_blocks}")
        self.kvlab_queue = ElasticFreeQueue(pool, self.kvlab_planner)
        pool.free_block_queue = self.kvlab_queue
        sched = vllm_config.scheduler_config
        # Unmapping outside a step is safe only when no step can be in flight.
        self._kvlab_sync_steps = not getattr(sched, "async_scheduling", False) and \
            getattr(vllm_config.parallel_config, "pipeline_parallel_size", 1) == 1
        logger.info("kvlab: elastic KV cache, %d chunks of %d blocks (%.1f MiB each), budget %d chunks",
                    geo.num_chunks, geo.blocks_per_chunk, geo.chunk_bytes / 2**20, self.kvlab_planner.budget_chunks)

    def _kvlab_release(self, idle: bool) -> None:
        planner = self.kvlab_planner
        for c in planner.release_candidates(idle):
            self.kvlab_queue.release(c)

    def schedule(self, *args, **kwargs):
        self.kvlab_planner.tick(time.monotonic())
        out = super().schedule(*args, **kwargs)
        self._kvlab_release(idle=not self.has_unfinished_requests())
        setattr(out, PLAN_ATTR, self.kvlab_planner.take_plan())
        return out

    def update_from_output(self, *args, **kwargs):
        result = super().update_from_output(*args, **kwargs)
        if self._kvlab_sync_steps and not self.has_unfinished_requests():
            # In-process engines stop stepping once the last request is done, so no later plan
            # would carry the release: hand it to the workers of this process directly.
            local = mapper.local_workers(self.kvlab_settings.engine_id)
            if local:
                self.kvlab_planner.tick(time.monotonic())
                self._kvlab_release(idle=True)
                plan = self.kvlab_planner.take_plan()
                if plan is not None:
                    for w in local:
                        w.apply(plan)
        return result

    def kvlab_stats(self) -> dict:
        stats = self.kvlab_planner.stats()
        stats["linked_free_blocks"] = self.kvlab_queue.num_linked_blocks
        return stats


class ElasticScheduler(ElasticSchedulerMixin, Scheduler):
    pass


class ElasticAsyncScheduler(ElasticSchedulerMixin, AsyncScheduler):
    pass
