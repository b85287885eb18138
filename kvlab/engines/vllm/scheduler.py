"""The elastic scheduler: vLLM's scheduler with the block pool's policy replaced and a page plan per step.

Selected through ``scheduler_config.scheduler_cls`` (kvlab's plugin sets it when elastic memory is on).
It runs in the engine-core process. Each ``schedule()`` returns vLLM's SchedulerOutput with one extra
attribute, ``kvlab_plan`` (a PagePlan or None): the chunks to unmap and map before this step's forward
pass. SchedulerOutput is a plain dataclass that vLLM pickles to the workers, so the attribute travels
with it in multi-process mode and is simply there in-process.

It also owns the pool's registry record (pool_record.py) and a watcher thread (watcher.py). A limit set
from another process must bind even while the engine is idle, and so must the end of the idle grace
(``idle_release``: the reserve goes once the engine has been idle that long); but an idle multi-process
engine core does not step: ``EngineCoreProc.run_busy_loop`` blocks on its input queue while
``has_work()`` is false. So the watcher, on a control change or when the grace is over, sets
``_kvlab_wake_pending`` and puts a no-op message on that queue (``compat.wake_busy_loop``);
``has_requests()`` is true while a wake is pending, so the loop takes one (empty) step whose
``schedule()`` applies the limit, releases the chunks that must go and sends the workers the plan, as
the step after a burst does. In-process engines (no busy loop) release from the watcher thread
directly to their local workers, under the scheduler's lock.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
import weakref

from kvlab.registry import RecordExists

from . import compat, headroom, mapper
from .free_queue import ElasticFreeQueue
from .geometry import ChunkGeometry
from .planner import PLAN_ATTR, ChunkPlanner
from .pool_record import PoolRecord, served_model
from .ranks import FAILURE_ATTR, MISSES_ATTR, MapFailure
from .settings import from_vllm_config
from .watcher import PoolWatcher

logger = logging.getLogger("vllm.kvlab")  # under vLLM's logger, so its handlers print it


def _floor_chunks(geo: ChunkGeometry, vllm_config, kv_cache_config) -> int:
    """Chunks one longest request needs (plus chunk 0): a budget below it would leave it waiting forever.
    It holds blocks in every KV cache group: all its tokens' in full attention, a window's in sliding."""
    blocks = sum(n + 1 for n in compat.request_blocks_per_group(vllm_config, kv_cache_config))
    return 1 + math.ceil(blocks / geo.blocks_per_chunk)


def _budget_chunks(limit: int | None, geo: ChunkGeometry, vllm_config, kv_cache_config,
                   chunk_bytes: int) -> int | None:
    """Chunks a limit of ``limit`` bytes of the whole engine allows (``chunk_bytes``: a chunk on all ranks)."""
    if limit is None:
        return None
    need = _floor_chunks(geo, vllm_config, kv_cache_config)
    budget = limit // chunk_bytes
    if budget < need:
        logger.warning("kvlab: KV limit %d MiB is below one %d-token request (%d chunks of %d MiB); using %d MiB",
                       limit >> 20, vllm_config.model_config.max_model_len, need, chunk_bytes >> 20,
                       (need * chunk_bytes) >> 20)
        budget = need
    return min(budget, geo.num_chunks)


def _local_map_ns(engine_id: str) -> int:
    """Time this engine's in-process workers spent mapping (0 in the scheduler of a multi-process engine)."""
    return max((w.arena.stats()["map"]["total_ns"] for w in mapper.local_workers(engine_id)), default=0)


class ElasticSchedulerMixin:
    """Installs the elastic free queue, attaches each step's page plan to its SchedulerOutput, publishes
    the pool's registry record and obeys its control block."""

    def __init__(self, vllm_config, kv_cache_config, *args, **kwargs):
        super().__init__(vllm_config, kv_cache_config, *args, **kwargs)
        self.kvlab_settings = from_vllm_config(vllm_config)
        geo = ChunkGeometry.from_kv_cache_config(kv_cache_config, self.kvlab_settings.handle_bytes,
                                                 compat.model_type(vllm_config))
        geo.require_aligned()
        self.kvlab_geometry = geo
        self._kvlab_vllm_config = vllm_config
        self._kvlab_kv_cache_config = kv_cache_config
        # Every rank maps its shard of the same chunks: the planner and the registry count bytes of the
        # whole engine (limits, reserve and minimum are set in them), the device rule bytes per rank.
        self.kvlab_ranks = compat.engine_ranks(vllm_config)
        chunk_bytes = geo.chunk_bytes * self.kvlab_ranks
        s = self.kvlab_settings
        self.kvlab_planner = ChunkPlanner(
            geo.num_chunks, geo.blocks_per_chunk, chunk_bytes,
            budget_chunks=_budget_chunks(s.limit, geo, vllm_config, kv_cache_config, chunk_bytes),
            reserve_chunks=math.ceil(s.reserve / chunk_bytes), release_delay=s.release_delay,
            idle_release=s.idle_release)
        self.kvlab_misses: list[MapFailure] = []
        pool = compat.block_pool(self)
        if len(compat.pool_blocks(pool)) != geo.num_blocks:
            raise RuntimeError(f"kvlab: the block pool has {len(compat.pool_blocks(pool))} blocks, "
                               f"the KV config {geo.num_blocks}")
        self.kvlab_queue = ElasticFreeQueue(pool, self.kvlab_planner)
        compat.install_free_queue(pool, self.kvlab_queue)
        # Scheduler state is the engine thread's; the lock matters only for in-process engines, whose
        # idle release runs on the watcher thread (multi-process engines are woken and release on their own).
        self._kvlab_lock = threading.RLock()
        self._kvlab_wake_pending = False
        self._kvlab_start_pool(vllm_config, geo)
        logger.info("kvlab: elastic KV cache, %d chunks of %d blocks (%.1f MiB each), budget %d chunks, "
                    "reserve %d chunks (%s), pool %s", geo.num_chunks, geo.blocks_per_chunk,
                    self.kvlab_planner.chunk_bytes / 2**20,
                    self.kvlab_planner.budget_chunks, self.kvlab_planner.reserve_chunks,
                    "kept while idle" if s.idle_release is None else f"released after {s.idle_release:g} s idle",
                    self.kvlab_pool.name)

    # -- the registry --------------------------------------------------------------------------------
    def _kvlab_start_pool(self, vllm_config, geo: ChunkGeometry) -> None:
        s, planner = self.kvlab_settings, self.kvlab_planner
        device, uuid, probe = headroom.device_probe(vllm_config.device_config.device_type)
        limit = None if s.limit is None else planner.budget_chunks * planner.chunk_bytes
        try:
            held = functools.partial(_held_per_group, weakref.ref(self)) if geo.num_groups > 1 else None
            self.kvlab_pool = PoolRecord(planner, model=served_model(vllm_config), page_size=s.page_size,
                                         name=s.pool_name, device=device, device_uuid=uuid, limit=limit,
                                         minimum=s.min, held_per_group=held, ranks=self.kvlab_ranks,
                                         map_ns=lambda: _local_map_ns(s.engine_id))
        except RecordExists:
            raise RecordExists(f"kvlab: pool name {s.pool_name!r} (KVLAB_POOL_NAME) is taken by another live "
                               f"engine; give each engine its own name, or leave it unset for a unique one") from None
        # Host ranks share one memory; GPU ranks hold one shard each on their own device (rank 0's measured).
        device_chunk = planner.chunk_bytes if device == "cpu" else geo.chunk_bytes
        # vLLM hands the scheduler nothing that leads back to its engine; looked up once, held weakly.
        core, me = compat.engine_core_of_caller(), weakref.ref(self)
        if core is not None and compat.has_busy_loop(core()):
            waker = functools.partial(compat.wake_busy_loop, core)
            how = "wakes the engine core's busy loop"
        else:  # in-process (LLM): nobody blocks on a queue; release from the watcher thread, under the lock
            waker = functools.partial(_release_in_process, me)
            how = "releases to in-process workers"
        logger.info("kvlab: pool %s on %s%s; a limit set while idle %s", self.kvlab_pool.name, device,
                    f" ({uuid})" if uuid else "", how)
        self._kvlab_watcher = PoolWatcher(self.kvlab_pool, planner, functools.partial(_wake, me, waker), probe=probe,
                                          device=device, device_uuid=uuid, headroom_spec=s.headroom,
                                          is_cuda=device != "cpu", device_chunk_bytes=device_chunk).start()
        self._kvlab_finalizer = weakref.finalize(self, _close_pool, self._kvlab_watcher, self.kvlab_pool)

    def _kvlab_apply_control(self) -> None:
        """Apply a changed limit/minimum from the registry."""
        pool = self.kvlab_pool
        ctl = pool.pending_control()
        if ctl is None:
            return
        geo, planner = self.kvlab_geometry, self.kvlab_planner
        budget = _budget_chunks(ctl.limit, geo, self._kvlab_vllm_config, self._kvlab_kv_cache_config,
                                planner.chunk_bytes)
        planner.budget_chunks = budget
        pool.applied(ctl, None if budget is None else planner.budget_chunks * planner.chunk_bytes, ctl.min)
        logger.info("kvlab: pool %s limit %s, min %d MiB (control revision %d)", pool.name,
                    "none" if budget is None else f"{planner.budget_chunks * planner.chunk_bytes >> 20} MiB",
                    ctl.min >> 20, ctl.revision)

    def has_requests(self) -> bool:
        # True while a wake is pending, so that vLLM's busy loop, once woken, takes one step to apply it.
        return super().has_requests() or self._kvlab_wake_pending

    def _kvlab_release_in_process(self) -> None:  # the watcher thread, in-process engines only
        with self._kvlab_lock:
            local = mapper.local_workers(self.kvlab_settings.engine_id)
            if not local or self.has_unfinished_requests():
                return  # the next step applies it
            self._kvlab_wake_pending = False
            plan = self._kvlab_policy(idle=True)
            if plan is not None:
                for w in local:
                    w.apply(plan)

    # -- policy, once per step -------------------------------------------------------------------------
    def _kvlab_begin(self) -> None:
        """Start a step's policy: the planner's clock, and a changed limit (one control-block read)."""
        self.kvlab_planner.tick(time.monotonic())
        self._kvlab_apply_control()

    def _kvlab_finish(self, idle: bool):
        """Release what may go, publish; returns the plan the workers must apply."""
        planner = self.kvlab_planner
        planner.note_idle(idle)  # starts (or ends) the idle grace after which the reserve goes too
        for c in planner.release_candidates(idle):
            self.kvlab_queue.release(c)
        plan = planner.take_plan(idle)
        if plan is not None:
            self.kvlab_pool.count(len(plan.map), len(plan.unmap))
        # A control change applied in _kvlab_begin marked the record dirty: it goes out whatever else happened.
        # An idle engine may not step again for a long while: its record must not wait for the throttle
        # (a short request ends within 1/MAX_RATE s of the previous publication).
        self.kvlab_pool.publish(force=plan is not None or idle)
        return plan

    def _kvlab_policy(self, idle: bool):
        """The whole policy at once, for the in-process idle paths (no schedule() runs there)."""
        self._kvlab_begin()
        return self._kvlab_finish(idle)

    def schedule(self, *args, **kwargs):
        with self._kvlab_lock:
            self._kvlab_wake_pending = False  # before the control is read: a later change wakes again
            self._kvlab_begin()  # before vLLM schedules: a lower limit must bind before this step grows
            out = super().schedule(*args, **kwargs)
            setattr(out, PLAN_ATTR, self._kvlab_finish(idle=not self.has_unfinished_requests()))
            setattr(out, MISSES_ATTR, len(self.kvlab_misses))
            return out

    def _kvlab_map_missed(self, failure: MapFailure) -> None:
        """A rank could not map this step's chunks; every rank undid them and none ran the step. A
        scheduling miss: the running requests go back to waiting and are recomputed (their in-flight
        output dropped, as vLLM's own forced preemption does), the chunks are forgotten, growth waits
        for the device's next measurement. Rare (another process took the memory the budget counted on),
        so the recovery is plain rather than fast."""
        planner = self.kvlab_planner
        preempted = compat.preempt_running(self)
        # Blocks this step filled and cached hold no KV (no forward pass ran): no cache entry may outlive it.
        compat.forget_cached_free_blocks(compat.block_pool(self))
        lost = [c for c in failure.chunks if planner.mapped[c]]
        for c in lost:
            self.kvlab_queue.release(c)
        planner.forget_unmaps(lost)  # the workers undid these maps themselves
        self.kvlab_pool.count(-len(lost), 0)
        planner.device_cap = planner.n_mapped  # no growth until the watcher measures the device again
        self.kvlab_misses.append(failure)
        logger.warning("kvlab: scheduling miss: %s. No rank ran the step; %d running request(s) go back to "
                       "waiting", failure.describe(), preempted)
        self.kvlab_pool.publish(force=True)

    def update_from_output(self, scheduler_output, model_runner_output, *args, **kwargs):
        with self._kvlab_lock:
            failure = getattr(model_runner_output, FAILURE_ATTR, None)
            if failure is not None:
                self._kvlab_map_missed(failure)
            result = super().update_from_output(scheduler_output, model_runner_output, *args, **kwargs)
            if not self.has_unfinished_requests():
                # An in-process engine (LLM, or a single-GPU engine core with the uni executor) stops
                # stepping once the last request is done, so no later plan would carry the release:
                # hand it to this process's workers now. Safe: the uni executor runs each step's
                # execute_model synchronously on this thread, so only the GPU can still be reading a
                # step (async scheduling) and the worker synchronizes the device before unmapping.
                local = mapper.local_workers(self.kvlab_settings.engine_id)
                if local:
                    plan = self._kvlab_policy(idle=True)  # publishes the idle record too
                    if plan is not None:
                        for w in local:
                            w.apply(plan)
                else:
                    # Multi-process: this update freed the last requests' blocks, after the last schedule()
                    # published (async scheduling frees a request's blocks after its last step), and the
                    # idle engine core may not step again: the record shows the freed blocks now.
                    self.kvlab_pool.publish(force=True)
            return result

    def kvlab_stats(self) -> dict:
        stats = self.kvlab_planner.stats()
        stats["linked_free_blocks"] = self.kvlab_queue.num_linked_blocks
        stats["pool_name"] = self.kvlab_pool.name
        stats["device_cap_chunks"] = self.kvlab_planner.device_cap
        stats["ranks"] = self.kvlab_ranks
        stats["map_misses"] = [m.describe() for m in self.kvlab_misses]
        return stats

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            self._kvlab_finalizer()


# The watcher holds these (weak references to the scheduler), so a scheduler dropped without
# shutdown() is still collected, and its finalizer stops the watcher and removes the record.
def _wake(scheduler_ref, waker) -> None:
    scheduler = scheduler_ref()
    if scheduler is not None:
        scheduler._kvlab_wake_pending = True
        waker()


def _release_in_process(scheduler_ref) -> None:
    scheduler = scheduler_ref()
    if scheduler is not None:
        scheduler._kvlab_release_in_process()


def _held_per_group(scheduler_ref) -> list:
    scheduler = scheduler_ref()
    return compat.blocks_held_per_group(scheduler) if scheduler is not None else []


def _close_pool(watcher: PoolWatcher, pool: PoolRecord) -> None:
    watcher.stop()
    pool.close()


_Scheduler, _AsyncScheduler = compat.scheduler_bases()


class ElasticScheduler(ElasticSchedulerMixin, _Scheduler):
    pass


class ElasticAsyncScheduler(ElasticSchedulerMixin, _AsyncScheduler):
    pass
