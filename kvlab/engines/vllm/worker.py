"""What the elastic workers add to vLLM's CPU and GPU workers (see worker_cpu.py, worker_gpu.py).

* ``determine_available_memory``: the KV capacity the model could use alone (never refused for lack
  of free memory: it is virtual), rounded down to whole chunks so layers start on page boundaries.
* the KV allocation context (``compat.KVAllocationHook``): vLLM allocates the KV buffer inside it;
  ours hands out arena views instead of zero-filled memory.
* ``initialize_from_config``: reads the page table off the bound views, maps chunk 0.
* ``execute_model``: applies the step's page plan before vLLM touches the batch's blocks; during
  ``compile_or_warm_up_model`` it maps the blocks vLLM's own warm-up steps write (Model Runner V2),
  unmapped again when the warm-up ends.
* ``kvlab_stats``: for ``collective_rpc("kvlab_stats")``.
"""

from __future__ import annotations

import math

from . import compat
from .geometry import ChunkGeometry, block_layout
from .mapper import WorkerMapper
from .planner import PLAN_ATTR
from .settings import ElasticSettings


def utilization_that_fits(wanted: float, free: int, total: int) -> float:
    """The largest memory fraction <= ``wanted`` that the free memory satisfies (vLLM checks it at start).

    Elastic engines start next to models that hold most of the device: they reserve no KV memory up
    front, so the check is met with what is free now, and the wanted fraction is restored afterwards.
    """
    return max(0.001, min(wanted, math.floor(free / total * 1000) / 1000 - 0.001))


class ElasticWorkerMixin(compat.KVAllocationHook):
    kvlab_mapper: WorkerMapper | None = None
    _kvlab_warming = False

    @property
    def kvlab_settings(self) -> ElasticSettings:
        return ElasticSettings.from_vllm_config(self.vllm_config)

    def _kvlab_capacity(self) -> int:
        raise NotImplementedError

    def determine_available_memory(self) -> int:
        settings = self.kvlab_settings
        # The groups vLLM will form (several for hybrid models): a block costs its page in each layer slot.
        groups = compat.kv_cache_groups(self.vllm_config, self.get_kv_cache_spec())
        block_bytes, slots = block_layout(groups, compat.model_type(self.vllm_config))
        capacity = self._kvlab_capacity()
        return ChunkGeometry.round_memory(capacity, block_bytes, slots, settings.handle_bytes)

    def _kvlab_kv_allocation_context(self):
        if self.kvlab_mapper is not None and self.kvlab_mapper.table is None:
            return self.kvlab_mapper.allocation_context()
        return None

    def initialize_from_config(self, kv_cache_config) -> None:
        settings = self.kvlab_settings
        self.kvlab_mapper = WorkerMapper(settings, kv_cache_config, self.device, compat.model_type(self.vllm_config))
        super().initialize_from_config(kv_cache_config)
        self.kvlab_mapper.bind(compat.bound_kv_caches(self), settings.engine_id)

    def compile_or_warm_up_model(self, *args, **kwargs):
        self._kvlab_warming = True
        try:
            result = super().compile_or_warm_up_model(*args, **kwargs)
        finally:
            self._kvlab_warming = False
            if self.kvlab_mapper is not None:
                self.kvlab_mapper.end_warmup()
        if self.kvlab_mapper is not None:
            # Profiling and warm-up leave GBs of activations cached by torch's allocator, and the
            # sampler's workspace; an idle elastic engine should hold its weights and little else.
            self.kvlab_mapper.release_scratch()
        return result

    def execute_model(self, scheduler_output, *args, **kwargs):
        plan = getattr(scheduler_output, PLAN_ATTR, None)
        if plan is not None and self.kvlab_mapper is not None:
            self.kvlab_mapper.apply(plan)
        elif self._kvlab_warming and self.kvlab_mapper is not None:
            self.kvlab_mapper.map_for_warmup(compat.blocks_named_by(scheduler_output))
        return super().execute_model(scheduler_output, *args, **kwargs)

    def kvlab_stats(self) -> dict:
        return self.kvlab_mapper.stats() if self.kvlab_mapper is not None else {}

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            if self.kvlab_mapper is not None:
                self.kvlab_mapper.close()
