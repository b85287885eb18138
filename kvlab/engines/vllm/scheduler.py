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
        logger.info("kvlab: elastic KV cache, %d chunks of %d blocks (%.1f MiB each), budget %d chunks",
                    geo.num_chunks, geo.blocks_per_chunk, geo.chunk_bytes / 2**20, self.kvlab_planner.budget_chunks)

    def _kvlab_release(self, idle: bool) -> None:
        planner = self.kvlab_planner
        for c in planner.release_candidates(idle):
            self.kvlab_queue.release(c)

    def schedule(self, *args, **kwargs):
        self.kvlab_planner.tick(time.monotonic())
        out = super().schedule(*args, **kwargs)
        idle = not self.has_unfinished_requests()
        self._kvlab_release(idle)
        setattr(out, PLAN_ATTR, self.kvlab_planner.take_plan(idle))
        return out

    def update_from_output(self, *args, **kwargs):
        result = super().update_from_output(*args, **kwargs)
        if not self.has_unfinished_requests():
            # An in-process engine (LLM, or a single-GPU engine core with the uni executor) stops
            # stepping once the last request is done, so no later plan would carry the release:
            # hand it to this process's workers now. Safe: the uni executor runs each step's
            # execute_model synchronously on this thread, so only the GPU can still be reading a
            # step (async scheduling) and the worker synchronizes the device before unmapping.
            local = mapper.local_workers(self.kvlab_settings.engine_id)
            if local:
                self.kvlab_planner.tick(time.monotonic())
                self._kvlab_release(idle=True)
                plan = self.kvlab_planner.take_plan(idle=True)
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
