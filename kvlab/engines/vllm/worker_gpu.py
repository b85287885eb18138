"""The elastic worker for CUDA GPUs (vLLM 0.24-0.33, V1 or Model Runner V2): cuda-backend arenas over the
driver's VMM API."""

from __future__ import annotations

import math

import torch

from . import compat
from .worker import ElasticWorkerMixin, utilization_that_fits


_Worker = compat.gpu_worker_base()


class ElasticGPUWorker(ElasticWorkerMixin, _Worker):
    def init_device(self):
        # Worker.init_device refuses to start unless gpu_memory_utilization x total is free *now*;
        # an elastic engine reserves no KV memory up front, so it starts next to other models.
        cache = self.cache_config
        wanted = cache.gpu_memory_utilization
        free, total = torch.cuda.mem_get_info(self.local_rank)
        cache.gpu_memory_utilization = utilization_that_fits(wanted, free, total)
        try:
            super().init_device()
        finally:
            cache.gpu_memory_utilization = wanted
        # The KV capacity is then what the model could use alone, as with stock vLLM on an empty GPU.
        compat.set_gpu_requested_memory(self, math.ceil(compat.gpu_total_memory(self) * wanted))

    def _kvlab_capacity(self) -> int:
        return int(_Worker.determine_available_memory(self))
