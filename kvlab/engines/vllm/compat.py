"""vLLM internals the adapter uses, one function each, with the versions each was checked on.

(The lead's compat layer, issue 15, gathers every such use here; these are the ones the support of
several KV cache groups needs.)
"""

from __future__ import annotations


def kv_cache_groups(vllm_config, kv_cache_spec: dict) -> list:
    """vLLM's KV cache groups of a worker's layer specs (KVCacheGroupSpec: ``layer_names``, ``kv_cache_spec``),
    as its KV sizing will form them: hybrid models get one group per attention type (and per run of
    layers), with pages unified to one size. Called on a copy: vLLM may rewrite the specs it is given.
    (checked: cpu 0.32; the same function and signature in GPU 0.24, kv_cache_utils.get_kv_cache_groups)
    """
    from vllm.v1.core.kv_cache_utils import get_kv_cache_groups

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
