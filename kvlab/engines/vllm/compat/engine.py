"""The engine core's side: vLLM's version and platform, the plugin's config hook, the scheduler and its
block pool, the free-block queue. (see compat/__init__.py)."""

from __future__ import annotations

import sys
import weakref

# -- versions and platform ---------------------------------------------------------------------------


def installed_version() -> str:
    """``vllm.__version__`` (checked: GPU 0.24-0.26, cpu 0.32, source 0.33)."""
    import vllm

    return vllm.__version__


def device_type() -> str:
    """"cuda" or "cpu": the platform vLLM detected (checked: GPU 0.24-0.26, cpu 0.32, source 0.33)."""
    from vllm.platforms import current_platform

    return current_platform.device_type


def config_runner(vllm_config) -> str:
    """"v2" when the engine will run Model Runner V2, else "v1" (``VllmConfig.use_v2_model_runner``, a
    property since 0.24; checked: GPU 0.24-0.26, cpu 0.32, source 0.33)."""
    return "v2" if getattr(vllm_config, "use_v2_model_runner", False) else "v1"


# -- the plugin's hook into config building -------------------------------------------------------------

# Stock classes that elastic mode may replace; anything else set by the user is a conflict.
# (checked: GPU 0.24-0.26, cpu 0.32, source 0.33)
STOCK_WORKERS = {"cpu": "vllm.v1.worker.cpu_worker.CPUWorker", "cuda": "vllm.v1.worker.gpu_worker.Worker"}
STOCK_SCHEDULERS = (None, "vllm.v1.core.sched.scheduler.Scheduler",
                    "vllm.v1.core.sched.async_scheduler.AsyncScheduler")


def engine_args_class():
    """vLLM's EngineArgs, whose ``create_engine_config`` the plugin wraps (checked: GPU 0.24-0.26, cpu 0.32,
    source 0.33)."""
    from vllm.engine.arg_utils import EngineArgs

    return EngineArgs


# -- the scheduler side -------------------------------------------------------------------------------


def scheduler_bases() -> tuple[type, type]:
    """(Scheduler, AsyncScheduler): the classes the elastic scheduler extends (checked: GPU 0.24-0.26,
    cpu 0.32, source 0.33)."""
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler

    return Scheduler, AsyncScheduler


def block_pool(scheduler):
    """The scheduler's BlockPool (checked: GPU 0.24-0.26, cpu 0.32, source 0.33)."""
    return scheduler.kv_cache_manager.block_pool


def pool_blocks(pool) -> list:
    """All KVCacheBlocks of a pool, indexed by block id (checked: GPU 0.24-0.26, cpu 0.32, source 0.33)."""
    return pool.blocks


def install_free_queue(pool, queue) -> None:
    """Make ``queue`` the pool's free-block queue (checked: GPU 0.24-0.26, cpu 0.32, source 0.33)."""
    pool.free_block_queue = queue


def engine_core_of_caller(depth: int = 2):
    """A weak reference to the vLLM EngineCore whose constructor is on the stack, or None.

    vLLM passes the scheduler nothing that leads back to its engine; the waker needs the engine's input
    queue. EngineCore.__init__ builds the scheduler, so the engine is ``self`` in a caller's frame
    (checked: GPU 0.24-0.26, cpu 0.32, source 0.33). The walk starts ``depth`` frames up (1: the caller;
    the default 2 skips the helper that calls this from the scheduler's constructor).
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
    cpu 0.32, source 0.33). An in-process EngineCore has none."""
    return hasattr(core, "input_queue")


def wake_busy_loop(core_ref) -> None:
    """Make an idle EngineCoreProc take one step: a no-op message on its input queue unblocks
    ``input_queue.get()`` (checked: GPU 0.24-0.26, cpu 0.32, source 0.33)."""
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
    between two sentinels; the elastic queue subclasses it (checked: GPU 0.24-0.26, cpu 0.32, source 0.33)."""
    from vllm.v1.core.kv_cache_utils import FreeKVCacheBlockQueue

    return FreeKVCacheBlockQueue


def unlink_all(blocks) -> None:
    """Drop the free-list links a block carries (parking it; checked: GPU 0.24-0.26, cpu 0.32, source 0.33)."""
    for b in blocks:
        b.prev_free_block = b.next_free_block = None


def is_linked(block) -> bool:
    """Whether a free block sits in a free queue (checked: GPU 0.24-0.26, cpu 0.32, source 0.33)."""
    return block.prev_free_block is not None


def first_linked(queue, n: int):
    """The first ``n`` blocks of a free queue, head first, without taking them (checked: GPU 0.24-0.26,
    cpu 0.32, source 0.33)."""
    tail, block = queue.fake_free_list_tail, queue.fake_free_list_head.next_free_block
    for _ in range(n):
        if block is tail or block is None:
            return
        yield block
        block = block.next_free_block


def forget_blocks(pool, blocks) -> None:
    """Stop every reader of the blocks' current contents: notify the pool's reuse watchers (readers of
    unpinned blocks, vLLM >= 0.30), then evict the blocks' prefix-cache entries.
    (checked: GPU 0.24-0.26, cpu 0.32, source 0.33)"""
    watchers = getattr(pool, "_reuse_watchers", None)
    if watchers:
        pool._notify_reuse([b for b in blocks if b.block_id in watchers])
    for b in blocks:
        pool._maybe_evict_cached_block(b)
