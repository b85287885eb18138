"""kvlab: elastic KV-cache memory for LLM serving, and a Jupyter lab to watch it happen.

The lab's objects are exported lazily (``kvlab.Server`` imports kvlab.lab on first use), so
``import kvlab`` stays light: no httpx, pandas or vLLM until they are needed.
"""

__version__ = "0.1.0"

_LAB = ("Server", "ElasticSettings", "Fleet", "bursty", "poisson", "alternating", "trace", "run_workload", "Telemetry",
        "ElasticVsStatic", "MultiModel", "Result")
__all__ = ["__version__", *_LAB]


def __getattr__(name: str):
    if name in _LAB:
        from kvlab import lab

        return getattr(lab, name)
    raise AttributeError(f"module 'kvlab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAB))
