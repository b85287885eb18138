"""KV cache groups (hybrid models) and several ranks (tensor/pipeline parallel, the scheduling miss). (see compat/__init__.py)."""

from __future__ import annotations

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
