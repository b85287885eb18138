"""What the elastic workers add to vLLM's CPU and GPU workers (see worker_cpu.py, worker_gpu.py).

* ``determine_available_memory``: the KV capacity the model could use alone (never refused for lack
  of free memory: it is virtual), rounded down to whole chunks so layers start on page boundaries.
* the KV allocation context (``compat.KVAllocationHook``): vLLM allocates the KV buffer inside it;
  ours hands out arena views instead of zero-filled memory.
* ``initialize_from_config``: reads the page table off the bound views, maps chunk 0.
* ``execute_model``: applies the step's page plan before vLLM touches the batch's blocks; with several
  ranks, they agree on the outcome first (ranks.py). When a rank could not map, no rank runs the
  forward pass: vLLM's runner only updates its request states, and the step returns an empty output
  carrying the MapFailure, which the scheduler turns into a scheduling miss. During
  ``compile_or_warm_up_model`` it maps the blocks vLLM's own warm-up steps write (Model Runner V2),
  unmapped again when the warm-up ends.
* ``kvlab_stats``: for ``collective_rpc("kvlab_stats")``.
"""

from __future__ import annotations

import math

from kvlab.settings import ElasticSettings

from . import compat
from .geometry import ChunkGeometry, block_layout
from .mapper import WorkerMapper
from .planner import PLAN_ATTR
from .ranks import FAILURE_ATTR, MISSES_ATTR
from .settings import from_vllm_config


def utilization_that_fits(wanted: float, free: int, total: int) -> float:
    """The largest memory fraction <= ``wanted`` that the free memory satisfies (vLLM checks it at start).

    Elastic engines start next to models that hold most of the device: they reserve no KV memory up
    front, so the check is met with what is free now, and the wanted fraction is restored afterwards.
    """
    return max(0.001, min(wanted, math.floor(free / total * 1000) / 1000 - 0.001))


class ElasticWorkerMixin(compat.KVAllocationHook):
    kvlab_mapper: WorkerMapper | None = None
    _kvlab_warming = False
    _kvlab_skipped_output = None  # the output of a step that ran no forward pass, for sample_tokens()

    @property
    def kvlab_settings(self) -> ElasticSettings:
        return from_vllm_config(self.vllm_config)

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
        self.kvlab_mapper.scratch_releasers.append(lambda: compat.release_penalty_statistics(self))
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
        mapper = self.kvlab_mapper
        if mapper is None:
            return super().execute_model(scheduler_output, *args, **kwargs)
        plan = getattr(scheduler_output, PLAN_ATTR, None)
        if plan is None and self._kvlab_warming:
            mapper.map_for_warmup(compat.blocks_named_by(scheduler_output))
        failure = mapper.apply_agreed(plan, compat.world_cpu_group()) if plan is not None else None
        # Steps scheduled before the scheduler saw an earlier miss (async scheduling, pipeline batches in
        # flight) may use the chunks that were undone: they run no forward pass either. Their requests
        # were preempted with their in-flight output dropped, so an empty output is what the scheduler
        # expects of them.
        if failure is None and getattr(scheduler_output, MISSES_ATTR, 0) >= mapper.misses:
            return super().execute_model(scheduler_output, *args, **kwargs)
        super().execute_model(compat.state_only(scheduler_output), *args, **kwargs)
        output = compat.empty_runner_output()
        if failure is not None:
            setattr(output, FAILURE_ATTR, failure)
        if not scheduler_output.total_num_scheduled_tokens:
            return output  # vLLM takes this step's output from execute_model and samples nothing
        # vLLM asks sample_tokens() for the output of a step that scheduled tokens (synchronous engines
        # only after execute_model returned None; the batch queue always): hand it over there.
        self._kvlab_skipped_output = output
        return None

    def sample_tokens(self, *args, **kwargs):
        output, self._kvlab_skipped_output = self._kvlab_skipped_output, None
        return output if output is not None else super().sample_tokens(*args, **kwargs)

    def kvlab_stats(self) -> dict:
        return self.kvlab_mapper.stats() if self.kvlab_mapper is not None else {}

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            if self.kvlab_mapper is not None:
                self.kvlab_mapper.close()
