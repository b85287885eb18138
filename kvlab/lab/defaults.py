"""Sensible defaults for notebooks and demos: which model, which device, how big the load.

The notebooks run unchanged on a 2-core CPU machine (CI), on Colab (T4/L4) and on an H100, so
every choice that depends on the machine is made here, once, and printed:

>>> from kvlab.lab import defaults
>>> setup = defaults.choose()           # model, device, engine arguments, workload sizes
>>> print(setup)                        # what was chosen and why
>>> server = Server(setup.model, memory="elastic", **setup.engine_args)
>>> run_workload(setup.bursty(), server)

Rules:
* ``KVLAB_MODEL`` (a local directory or a hub id) wins.
* On the CPU (vLLM's CPU build) the tiny synthetic Qwen2: a real model is too slow on a few cores, and
  no network is touched at all.
* On a GPU: a hub model already in the local cache, else the hub model if the hub answers within a
  couple of seconds (and ``HF_HUB_OFFLINE`` is not set), else a synthetic model of its shape.
* ``KVLAB_QUICK=1`` shrinks bursts and pauses so that CI runs every notebook in minutes; the
  phenomena (memory growing in a burst and shrinking after it) stay visible.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, replace

from .engine import hub_offline, resolve_device
from .workloads import Alternating, Bursty, alternating, bursty

HUB_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"  # small, open, and the shape kvlab's synthetic "qwen2.5-0.5b" copies
HUB_HOST = ("huggingface.co", 443)
_TRUE = {"1", "true", "yes", "on"}


def quick() -> bool:
    """True when ``KVLAB_QUICK`` asks for the short version (CI, or a first look)."""
    return os.environ.get("KVLAB_QUICK", "").strip().lower() in _TRUE


@dataclass(frozen=True)
class Load:
    """Workload sizes: a burst is ``burst_size`` requests of ``prompt_len`` tokens, each generating
    ``max_tokens``; ``pause`` idle seconds between bursts (longer than the engine's 1 s release delay,
    so memory visibly goes back down)."""

    n_bursts: int
    burst_size: int
    prompt_len: int
    max_tokens: int
    pause: float
    rounds: int  # rounds of alternating bursts in the multi-model experiment
    idle_before: float = 3.0  # experiments: seconds of idle measured before the workload
    idle_after: float = 5.0   # ... and after it (memory coming back down)


# KV bytes per token: the tiny model ~2 KiB, Qwen2.5-0.5B ~12 KiB. A CPU burst of 16 x 1536 tokens
# needs ~50 MiB of KV, above the engine's 32 MiB reserve, so every burst grows and shrinks; ~3 s on 2 cores.
# The peak lasts while all 16 requests decode: 32 tokens keep it on for several 0.2 s telemetry samples
# (with 16 a busy 2-core runner sampled it once or missed it, and the burst looked one chunk smaller).
CPU_LOAD = Load(n_bursts=3, burst_size=16, prompt_len=1536, max_tokens=32, pause=4.0, rounds=2)
CPU_QUICK = Load(n_bursts=2, burst_size=16, prompt_len=1536, max_tokens=32, pause=2.0, rounds=1,
                 idle_before=2.0, idle_after=3.0)
GPU_LOAD = Load(n_bursts=4, burst_size=64, prompt_len=2048, max_tokens=128, pause=6.0, rounds=3)
GPU_QUICK = Load(n_bursts=2, burst_size=32, prompt_len=1024, max_tokens=32, pause=2.0, rounds=1,
                 idle_before=2.0, idle_after=3.0)


@dataclass(frozen=True)
class Setup:
    """What a notebook runs with. ``engine_args`` go to ``Server(...)`` as they are."""

    model: str
    source: str  # "env" (KVLAB_MODEL), "hub", "hub-cache" or "synthetic"
    device: str  # "cpu" or "cuda:N"
    quick: bool
    load: Load
    engine_args: dict = field(default_factory=dict)
    reason: str = ""

    def bursty(self, **overrides) -> Bursty:
        """The bursty workload of this setup (any of ``bursty``'s arguments can be overridden)."""
        kw = dict(n_bursts=self.load.n_bursts, burst_size=self.load.burst_size, pause=self.load.pause,
                  max_tokens=self.load.max_tokens, prompt_len=self.load.prompt_len)
        return bursty(**{**kw, **overrides})

    def alternating(self, servers, **overrides) -> Alternating:
        """Alternating bursts over ``servers`` (the multi-model experiment)."""
        kw = dict(rounds=self.load.rounds, burst_size=self.load.burst_size, pause=self.load.pause,
                  max_tokens=self.load.max_tokens, prompt_len=self.load.prompt_len)
        return alternating(servers, **{**kw, **overrides})

    def experiment_kw(self, **overrides) -> dict:
        """Keyword arguments for ``ElasticVsStatic``/``MultiModel``: idle windows and engine arguments."""
        return {"idle_before": self.load.idle_before, "idle_after": self.load.idle_after, **self.engine_args,
                **overrides}

    def models(self, n: int) -> list[str]:
        """``n`` models to serve side by side: distinct synthetic models (seeds 0..n-1) when this setup's
        model is synthetic, else the chosen model ``n`` times (one server each)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if self.source != "synthetic":
            return [self.model] * n
        from kvlab.models import synthetic

        size = "tiny" if self.device == "cpu" else "qwen2.5-0.5b"
        return [self.model] + [str(synthetic("qwen2", size, seed=i)) for i in range(1, n)]

    def with_load(self, **changes) -> "Setup":
        return replace(self, load=replace(self.load, **changes))

    def __str__(self) -> str:
        mode = "quick mode (KVLAB_QUICK=1)" if self.quick else "full mode"
        ld = self.load
        return (f"model   {self.model}  [{self.source}: {self.reason}]\n"
                f"device  {self.device}, {mode}\n"
                f"load    {ld.n_bursts} bursts of {ld.burst_size} requests x {ld.prompt_len} prompt tokens "
                f"-> {ld.max_tokens} tokens, {ld.pause:g} s apart\n"
                f"engine  {', '.join(f'{k}={v}' for k, v in self.engine_args.items())}")


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the model hub answers a TCP connection within ``timeout`` (never when HF_HUB_OFFLINE is set)."""
    if hub_offline():
        return False
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def hub_cached(model_id: str) -> bool:
    """Whether ``model_id``'s config is already in the local hub cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # no huggingface_hub, or a cache it cannot read: treat as not cached
        return False


def pick_model(device: str | None = None, hub_model: str = HUB_MODEL, allow_hub: bool = True) -> tuple[str, str, str]:
    """``(model, source, reason)`` for ``device`` ('cpu' or 'cuda:N'; None picks as Server does)."""
    env = os.environ.get("KVLAB_MODEL", "").strip()
    if env:
        return env, "env", "KVLAB_MODEL is set"
    device = device or resolve_device(None)
    from kvlab.models import synthetic

    if device == "cpu":
        return str(synthetic("qwen2", "tiny")), "synthetic", "CPU engine: the tiny random-weight Qwen2 keeps 2 cores fast"
    if allow_hub and hub_cached(hub_model):
        return hub_model, "hub-cache", "GPU, and the model is in the local hub cache"
    if allow_hub and hub_reachable():
        return hub_model, "hub", "GPU, and the model hub is reachable"
    return (str(synthetic("qwen2", "qwen2.5-0.5b")), "synthetic",
            "GPU without hub access: random weights in Qwen2.5-0.5B's shape (same memory behaviour)")


def engine_args(device: str) -> dict:
    """Engine arguments that suit ``device``; the KV cache size is what a static engine holds from the start."""
    if device == "cpu":
        # The CPU build needs an explicit KV size; 512 MiB is resident from the start for a static engine.
        return dict(max_model_len=2048, kv_cache_memory_bytes=512 << 20, max_num_seqs=16)
    # Eager mode: elastic memory with CUDA graphs is not verified yet. 0.4 of the GPU lets two static
    # engines share one device, as the multi-model comparison needs.
    return dict(max_model_len=4096, gpu_memory_utilization=0.4, max_num_seqs=64, enforce_eager=True)


def choose(device: str | None = None, allow_hub: bool = True, quick_mode: bool | None = None) -> Setup:
    """Model, device, engine arguments and load for this machine (see the module docstring).
    ``quick_mode``: the short load; None reads ``KVLAB_QUICK``."""
    device = device or resolve_device(None)
    model, source, reason = pick_model(device, allow_hub=allow_hub)
    is_quick = quick() if quick_mode is None else quick_mode
    if device == "cpu":
        load = CPU_QUICK if is_quick else CPU_LOAD
    else:
        load = GPU_QUICK if is_quick else GPU_LOAD
    return Setup(model=model, source=source, device=device, quick=is_quick, load=load,
                 engine_args=engine_args(device), reason=reason)


def memory_device() -> str:
    """The device kvlab's memory layer should demonstrate on: the first GPU with VMM, else the host."""
    try:
        from kvlab.memory._native_loader import native

        if any(d["vmm_supported"] for d in native().cuda_devices()):
            return "cuda:0"
    except Exception:  # no driver, or a driver without VMM: the host backend always works
        pass
    return "cpu"


__all__ = ["Setup", "Load", "choose", "pick_model", "engine_args", "quick", "hub_reachable", "hub_cached",
           "memory_device", "HUB_MODEL"]
