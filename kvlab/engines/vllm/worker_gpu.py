"""The elastic worker for CUDA GPUs (vLLM 0.24-0.26): cuda-backend arenas over the driver's VMM API."""

from __future__ import annotations

import math

import torch
from vllm.v1.worker.gpu_worker import Worker

from .worker import ElasticWorkerMixin, utilization_that_fits


class ElasticGPUWorker(ElasticWorkerMixin, Worker):
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
        self.requested_memory = math.ceil(self.init_snapshot.total_memory * wanted)

    def _kvlab_capacity(self) -> int:
        return int(Worker.determine_available_memory(self))
