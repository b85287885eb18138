"""Every use of SGLang's internals by kvlab, in one place, with the SGLang versions each was checked on.

kvlab hooks into SGLang through SGLang's own plugin system: the ``sglang.srt.plugins`` entry point
group, whose functions SGLang calls in every scheduler process (``run_scheduler_process`` calls
``load_plugins()`` first thing) and whose ``HookRegistry`` wraps SGLang's functions and methods by
dotted name (checked: sglang 0.5.23). The hooks below name SGLang methods that are internal; a new
SGLang version means checking this file and ``CHECKED``.
"""

from __future__ import annotations

import dataclasses
import logging
import re

logger = logging.getLogger("sglang.kvlab")

CHECKED = ("0.5.23",)       # SGLang releases the adapter was run against (CPU, in-process)
SUPPORTED = "SGLang 0.5.23"  # what the error for any other version says


class UnsupportedSGLang(RuntimeError):
    """The installed SGLang is not one kvlab's elastic adapter was checked on."""


def release(version: str) -> tuple[int, int, int]:
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)", version)
    if not m:
        raise UnsupportedSGLang(f"cannot read SGLang version {version!r}; kvlab elastic KV supports {SUPPORTED}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def check(version: str) -> tuple[int, int, int]:
    rel = release(version)
    if rel[:2] == (0, 5) and rel[2] == 23:
        return rel
    raise UnsupportedSGLang(f"SGLang {version} is not supported by kvlab elastic KV: kvlab supports {SUPPORTED}. "
                            "Install it, or unset KVLAB_ELASTIC to run SGLang with its static KV cache.")


def installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sglang")
    except PackageNotFoundError:
        return None


# -- small internals the allocators use ------------------------------------------------------------------

def num_new_pages(seq_lens_cpu, page_size: int, *, prefix_lens=None, decode: bool = False) -> int:
    """Pages an extend or decode step takes (checked: sglang 0.5.23, ``sglang.srt.utils.get_num_new_pages``)."""
    from sglang.srt.utils import get_num_new_pages

    return int(get_num_new_pages(seq_lens=seq_lens_cpu, page_size=page_size, prefix_lens=prefix_lens, decode=decode))


def evict_tokens(tree_cache, num_tokens: int) -> int:
    """Evict up to ``num_tokens`` unlocked tokens from a prefix cache; returns how many went
    (checked: sglang 0.5.23, ``RadixCache.evict(EvictParams)``)."""
    from sglang.srt.mem_cache.base_prefix_cache import EvictParams

    if num_tokens <= 0 or tree_cache is None or not tree_cache.supports_prefix_sharing():
        return 0
    return int(tree_cache.evict(EvictParams(num_tokens=int(num_tokens))).num_tokens_evicted)


def evictable_tokens(tree_cache) -> int:
    return int(tree_cache.evictable_size()) if tree_cache is not None else 0


def scheduler_model(scheduler) -> tuple[str, int]:
    """(served model name, context length) of a Scheduler (checked: sglang 0.5.23)."""
    args = scheduler.server_args
    name = getattr(args, "served_model_name", None) or args.model_path
    return str(name), int(scheduler.model_config.context_len)


def scheduler_idle(scheduler) -> bool:
    return bool(scheduler.is_fully_idle())


# -- the hooks -------------------------------------------------------------------------------------------
# Targets, by dotted name (checked: sglang 0.5.23).
BUILD_MHA_POOL = "sglang.srt.mem_cache.kv_cache_configurator.KVCacheConfigurator._build_mha_kv_pool"
BUILD_ALLOCATOR = "sglang.srt.mem_cache.kv_cache_configurator.KVCacheConfigurator._build_token_to_kv_pool_allocator"
ON_IDLE = "sglang.srt.managers.scheduler.Scheduler.on_idle"
AFTER_BATCH = "sglang.srt.managers.scheduler.Scheduler.process_batch_result"
CHECK_FULL_POOL = "sglang.srt.managers.scheduler_components.invariant_checker.SchedulerInvariantChecker._check_full_pool"


def _build_mha_pool(original, configurator, *args, **kwargs):
    """Build the standalone MHA pool as kvlab's elastic subclass (only that pool: SWA, MLA, hybrid and
    quantized pools keep SGLang's class, and their allocators are refused below)."""
    from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool
    from sglang.srt.runtime_context import get_server_args

    from .pool import ElasticMHATokenToKVPool

    sargs = get_server_args()
    if sargs.tp_size > 1 or sargs.pp_size > 1:
        # Each rank runs its own scheduler over its own pool; their free-token counts must agree or their
        # schedules diverge, and this adapter does not share one decision across ranks yet.
        raise RuntimeError(f"kvlab elastic KV supports SGLang with tensor and pipeline parallel size 1, not "
                           f"tp={sargs.tp_size} pp={sargs.pp_size}; turn elastic memory off for this engine")
    if kwargs.get("mha_pool_class") is MHATokenToKVPool and kwargs.get("quant_method") is None \
            and getattr(configurator, "kv_shard_rank", None) is None \
            and not getattr(configurator, "post_capture_kv_active", False):
        kwargs["mha_pool_class"] = ElasticMHATokenToKVPool
    return original(configurator, *args, **kwargs)


def _build_allocator(original, configurator, *args, **kwargs):
    from .allocator import ElasticAllocatorMixin, elastic_allocator_for

    stock = original(configurator, *args, **kwargs)
    if isinstance(stock, ElasticAllocatorMixin):
        return stock
    pool = kwargs.get("token_to_kv_pool")
    if not getattr(pool, "kvlab_elastic", False):
        raise RuntimeError("kvlab elastic KV supports SGLang's plain MHA KV pool (models with full attention, "
                           "unquantized KV); this model's pool is another kind. Turn elastic memory off for it.")
    return elastic_allocator_for(stock, pool)


def _on_idle(result, scheduler, *args, **kwargs):
    from .controller import controller_of

    ctl = controller_of(scheduler)
    if ctl is not None:
        ctl.step(scheduler, idle=True)


def _after_batch(result, scheduler, *args, **kwargs):
    from .controller import controller_of

    ctl = controller_of(scheduler)
    if ctl is not None:
        ctl.step(scheduler, idle=False)


def _check_full_pool(original, checker, ps, *args, **kwargs):
    """SGLang's idle conservation check counts free tokens; a limit hides some of them from
    ``available_size``, so they are added back here."""
    withheld = getattr(checker.token_to_kv_pool_allocator, "kvlab_withheld_tokens", None)
    if withheld is not None:
        ps = dataclasses.replace(ps, full_available_size=ps.full_available_size + withheld())
    return original(checker, ps, *args, **kwargs)


def register_hooks() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(BUILD_MHA_POOL, _build_mha_pool, HookType.AROUND)
    HookRegistry.register(BUILD_ALLOCATOR, _build_allocator, HookType.AROUND)
    HookRegistry.register(ON_IDLE, _on_idle, HookType.AFTER)
    HookRegistry.register(AFTER_BATCH, _after_batch, HookType.AFTER)
    HookRegistry.register(CHECK_FULL_POOL, _check_full_pool, HookType.AROUND)
