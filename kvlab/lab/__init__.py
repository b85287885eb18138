"""kvlab.lab: drive LLM servers from a notebook — start engines, send workloads, measure every request.

>>> from kvlab.lab import ElasticSettings, Server, bursty, run_workload
>>> with Server(model, memory="elastic", elastic=ElasticSettings(limit="2G", idle_release=30)) as s:
...     records = run_workload(bursty(n_bursts=3, burst_size=8, pause=5, max_tokens=64), s)

The experiments and their Result need pandas (~0.3 s to import): they are exported lazily, so
``from kvlab.lab import Server`` does not pay for them.
"""

from kvlab.settings import ElasticSettings, InvalidSettings

from .client import Client, RequestRecord
from .errors import (EngineDied, InvalidEngineArgs, LabError, ModelNotFound, PortInUse, RunInterrupted,
                     ServerError, StartTimeout, TraceError, UnsupportedSetup, WorkloadError)
from .fleet import Fleet
from .runner import arun_workload, run_workload
from .server import Server, running, stop_all
from .telemetry import DeviceSample, PoolSample, Sample, Telemetry
from .trace import Trace, trace
from .workloads import Alternating, Bursty, Poisson, Request, Workload, alternating, bursty, poisson

__all__ = [
    "Server", "ElasticSettings", "InvalidSettings", "Fleet", "Client", "RequestRecord", "running", "stop_all",
    "Telemetry", "Sample", "PoolSample", "DeviceSample", "ElasticVsStatic", "MultiModel", "Result",
    "ExperimentFailed",
    "Workload", "Request", "Bursty", "Poisson", "Alternating", "Trace",
    "bursty", "poisson", "alternating", "trace", "run_workload", "arun_workload",
    "LabError", "ServerError", "EngineDied", "InvalidEngineArgs", "ModelNotFound", "PortInUse",
    "StartTimeout", "UnsupportedSetup", "WorkloadError", "TraceError", "RunInterrupted",
]

_LAZY = {"ElasticVsStatic": "experiments", "MultiModel": "experiments", "ExperimentFailed": "experiments",
         "Result": "result"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'kvlab.lab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
