"""kvlab.lab: drive LLM servers from a notebook — start engines, send workloads, measure every request.

>>> from kvlab.lab import Server, bursty, run_workload
>>> with Server(model, memory="elastic") as s:
...     records = run_workload(bursty(n_bursts=3, burst_size=8, pause=5, max_tokens=64), s)
"""

from .client import Client, RequestRecord
from .errors import (EngineDied, InvalidEngineArgs, LabError, ModelNotFound, PortInUse, RunInterrupted,
                     ServerError, StartTimeout, TraceError, UnsupportedSetup, WorkloadError)
from .experiments import ElasticVsStatic, ExperimentFailed, MultiModel
from .fleet import Fleet
from .result import Result
from .runner import arun_workload, run_workload
from .server import Server, running, stop_all
from .telemetry import DeviceSample, PoolSample, Sample, Telemetry
from .trace import Trace, trace
from .workloads import Alternating, Bursty, Poisson, Request, Workload, alternating, bursty, poisson

__all__ = [
    "Server", "Fleet", "Client", "RequestRecord", "running", "stop_all",
    "Telemetry", "Sample", "PoolSample", "DeviceSample", "ElasticVsStatic", "MultiModel", "Result",
    "ExperimentFailed",
    "Workload", "Request", "Bursty", "Poisson", "Alternating", "Trace",
    "bursty", "poisson", "alternating", "trace", "run_workload", "arun_workload",
    "LabError", "ServerError", "EngineDied", "InvalidEngineArgs", "ModelNotFound", "PortInUse",
    "StartTimeout", "UnsupportedSetup", "WorkloadError", "TraceError", "RunInterrupted",
]
