"""The ``vllm.general_plugins`` entry point: turns elastic settings into an elastic engine config.

vLLM calls ``register()`` once in every process it starts (the API server, the engine core, each
worker) before it builds or uses a config. ``register`` wraps ``EngineArgs.create_engine_config``
once; the wrapper reads the settings for each engine it builds (settings.py: the engine's
``additional_config["kvlab"]``, else ``KVLAB_ELASTIC=1`` and the other ``KVLAB_*`` variables). With elastic memory off it returns
vLLM's config untouched, so vLLM behaves as stock. With it on it

* checks the vLLM version and model runner (a clear error outside the supported range),
* selects kvlab's scheduler and worker subclasses (``scheduler_cls`` / ``worker_cls``, plain vLLM
  config fields), and
* stores the settings in ``additional_config["kvlab"]``, which travels to every process.
"""

from __future__ import annotations

import logging

from kvlab.settings import ElasticSettings

from . import compat
from .compat import STOCK_SCHEDULERS, STOCK_WORKERS
from .settings import carry, for_engine_args

logger = logging.getLogger("vllm.kvlab")  # under vLLM's logger, so its handlers print it

_PKG = "kvlab.engines.vllm"
WORKERS = {"cpu": f"{_PKG}.worker_cpu.ElasticCPUWorker", "cuda": f"{_PKG}.worker_gpu.ElasticGPUWorker"}
SCHEDULERS = {False: f"{_PKG}.scheduler.ElasticScheduler", True: f"{_PKG}.scheduler.ElasticAsyncScheduler"}


def make_elastic(vllm_config, settings: ElasticSettings) -> None:
    """Point an engine config at kvlab's scheduler and worker, carrying ``settings`` along."""
    from . import versions

    runner = compat.config_runner(vllm_config)
    versions.check_installed(runner)
    device = compat.device_type()
    if device not in WORKERS:
        raise RuntimeError(f"kvlab elastic memory runs on CPU or CUDA, not {device}")
    parallel, sched = vllm_config.parallel_config, vllm_config.scheduler_config
    if parallel.worker_cls not in ("auto", STOCK_WORKERS[device], WORKERS[device]):
        raise ValueError(f"kvlab elastic memory replaces the worker class, but worker_cls={parallel.worker_cls!r} "
                         "is set; unset it or turn elastic memory off")
    current = sched.scheduler_cls if isinstance(sched.scheduler_cls, (str, type(None))) else "custom"
    if current not in STOCK_SCHEDULERS + tuple(SCHEDULERS.values()):
        raise ValueError(f"kvlab elastic memory replaces the scheduler, but scheduler_cls={current!r} is set")
    if getattr(vllm_config.cache_config, "num_gpu_blocks_override", None):
        logger.warning("kvlab: num_gpu_blocks_override must be a multiple of the chunk size, or the engine "
                       "will refuse to start")
    parallel.worker_cls = WORKERS[device]
    sched.scheduler_cls = SCHEDULERS[bool(getattr(sched, "async_scheduling", False))]
    carry(vllm_config, settings)
    logger.info("kvlab: elastic KV memory on (%s model runner, page %d KiB, handle %d KiB, limit %s, reserve %d MiB)",
                runner.upper(), settings.page_size >> 10, settings.handle_bytes >> 10,
                "none" if settings.limit is None else f"{settings.limit >> 20} MiB", settings.reserve >> 20)


_original_create_engine_config = None


def _create_engine_config(engine_args, *args, **kwargs):
    """EngineArgs.create_engine_config, made elastic when the settings say so."""
    settings = for_engine_args(engine_args)
    if settings.elastic:
        from . import versions

        versions.check_installed()  # before vLLM spends time building the config
    config = _original_create_engine_config(engine_args, *args, **kwargs)
    if settings.elastic:
        make_elastic(config, settings)
    return config


def register() -> None:
    """Entry point of the ``vllm.general_plugins`` group (idempotent, cheap, safe in every process)."""
    global _original_create_engine_config
    EngineArgs = compat.engine_args_class()
    if EngineArgs.create_engine_config is _create_engine_config:
        return
    _original_create_engine_config = EngineArgs.create_engine_config
    EngineArgs.create_engine_config = _create_engine_config
