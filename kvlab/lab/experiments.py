"""Experiments: the same workload on each setup, measured the same way, returned as one Result.

>>> r = ElasticVsStatic(model, bursty(3, 8, pause=5, max_tokens=64), kv_cache_memory_bytes=1 << 30).run()
>>> r.summary()                                  # idle/peak/flex memory, latency, throughput per setup
>>> r = MultiModel([model_a, model_b], lambda servers: alternating(servers, rounds=2)).run()

Setups run one after another (engines measured alone, not competing for the machine). Each: start
the server(s), sample telemetry, wait ``idle_before`` seconds (the idle level), run the workload
(bursts are marked), mark "workload end", wait ``idle_after`` seconds (memory coming back down),
stop. ``workload`` is a Workload or a function ``servers -> Workload`` (for workloads that name
servers, like ``alternating``).

When something fails (a server that does not start, an engine that dies mid-workload, a bad
workload), ``run()`` stops there, stops every server and raises ``ExperimentFailed``, whose
``.result`` keeps everything measured so far (timeline, partial request records, the error per
setup) and whose ``__cause__`` is the original error. An interrupt (Ctrl-C) is re-raised as it is,
with the partial Result attached as ``err.result``.
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import pandas as pd

from .errors import EngineDied, LabError, RunInterrupted
from .fleet import Fleet
from .result import Result, wide_to_long
from .runner import run_workload
from .server import Server
from .telemetry import Telemetry, server_keys


class ExperimentFailed(LabError):
    """An experiment stopped early; ``result`` holds what was measured, ``__cause__`` the reason."""

    def __init__(self, message: str, result: Result):
        super().__init__(message)
        self.result = result


class _Experiment:
    kind = "Experiment"

    def __init__(self, workload, *, interval: float = 0.2, metrics_interval: float = 1.0, idle_before: float = 3.0,
                 idle_after: float = 5.0, progress: bool = True, **server_kw):
        if not callable(workload) and not hasattr(workload, "requests") and not isinstance(workload, list):
            raise TypeError(f"workload must be a Workload, a list of Request or a function servers -> Workload, "
                            f"got {workload!r}")
        for name, v in (("idle_before", idle_before), ("idle_after", idle_after)):
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {v!r}")
        self.workload, self.interval, self.metrics_interval = workload, interval, metrics_interval
        self.idle_before, self.idle_after, self.progress = float(idle_before), float(idle_after), progress
        self.server_kw = server_kw

    def _setups(self) -> list[tuple[str, list[Server]]]:
        raise NotImplementedError

    def _config(self) -> dict:
        return {"workload": repr(self.workload), "interval": self.interval, "idle_before": self.idle_before,
                "idle_after": self.idle_after, "server": {k: repr(v) if not isinstance(v, (int, float, str, bool))
                                                          else v for k, v in self.server_kw.items()}}

    def _say(self, text: str) -> None:
        if self.progress:
            print(f"[kvlab {self.kind}] {text}", file=sys.stderr, flush=True)

    def run(self, observer=None) -> Result:
        """Run every setup; return the Result (see the module docstring for failures).

        observer: called as ``observer(servers, telemetry)`` once each setup's servers are up; what it
            returns gets ``record(request_record)`` for each finished request and ``stop(reason)`` at the
            setup's end. ``kvlab.views.run_live(experiment)`` passes a live Dashboard this way.
        """
        parts = {"setups": [], "timeline": [], "events": [], "requests": []}
        meta = {"kind": self.kind, "config": self._config(), "environment": _environment(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        setups = self._setups()  # servers are built (and their arguments checked) before anything starts
        for i, (name, servers) in enumerate(setups):
            self._say(f"setup {i + 1}/{len(setups)}: {name} ({', '.join(s.name for s in servers)})")
            try:
                self._run_setup(name, servers, parts, observer)
            except KeyboardInterrupt as e:
                e.result = self._result(parts, meta)
                raise
            except Exception as e:
                result = self._result(parts, meta)
                raise ExperimentFailed(f"{self.kind} stopped in setup {name!r}: {type(e).__name__}: {e}\n"
                                       f"(what was measured is in err.result)", result) from e
        return self._result(parts, meta)

    def _run_setup(self, name: str, servers: list[Server], parts: dict, observer) -> None:
        keys = server_keys(servers)
        setup = {"name": name, "memory": servers[0].memory, "device": servers[0].device, "error": None,
                 "servers": [{"key": k, "model": s.model, "url": None, "memory": s.memory, "pool_name": s.pool_name}
                             for k, s in zip(keys, servers)]}
        parts["setups"].append(setup)
        fleet = Fleet(servers, start=False)
        tel = Telemetry(servers, interval=self.interval, metrics_interval=self.metrics_interval)
        records, view = [], None
        try:
            t0 = time.monotonic()
            try:
                fleet.start()
            finally:  # also for a start that failed: its log and process group say what happened
                for s, info in zip(servers, setup["servers"]):
                    info.update(url=s.url if s.port else None, pgid=s.pgid, log=str(s.log_path) if s.log_path else None)
            self._say(f"{name}: ready in {time.monotonic() - t0:.0f} s; measuring idle for {self.idle_before:g} s")
            tel.start()
            view = _observe(observer, servers, tel)
            time.sleep(self.idle_before)
            workload = self.workload(servers) if callable(self.workload) else self.workload
            self._say(f"{name}: running {workload!r}")
            try:
                records = run_workload(workload, servers, telemetry=tel,
                                       on_record=view.record if view is not None else None)
            except (EngineDied, RunInterrupted) as e:
                records = e.records
                raise
            tel.mark("workload end")
            ok = sum(r.ok for r in records)
            self._say(f"{name}: {ok}/{len(records)} requests ok; measuring the way down for {self.idle_after:g} s")
            time.sleep(self.idle_after)
        except BaseException as e:
            setup["error"] = f"{type(e).__name__}: {e}"
            raise
        finally:
            tel.stop()
            if view is not None:  # keep the setup's final picture on screen; only stop following
                view.stop("setup finished")
            try:
                fleet.stop()
            finally:
                parts["timeline"].append(wide_to_long(tel.table(), name))
                parts["events"].append(pd.DataFrame([(name, t, label) for t, label in tel.events],
                                                    columns=["setup", "t", "label"]))
                parts["requests"].append(_records_frame(records, name))
                setup["telemetry_errors"] = list(tel.errors)

    def _result(self, parts: dict, meta: dict) -> Result:
        meta = {**meta, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        return Result(self.kind, meta, [dict(s) for s in parts["setups"]],
                      _concat(parts["timeline"], ["setup", "t", "metric", "key", "value"]),
                      _concat(parts["events"], ["setup", "t", "label"]),
                      _concat([p for p in parts["requests"] if len(p)], ["setup", "url", "status"]))


class ElasticVsStatic(_Experiment):
    """One model, one server per memory mode in ``memories``, the same workload on each.

    ``elastic=ElasticSettings(...)`` (with the other Server arguments) configures the elastic setup only."""

    kind = "ElasticVsStatic"

    def __init__(self, model, workload, memories=("elastic", "static"), **kw):
        super().__init__(workload, **kw)
        if isinstance(memories, str) or not memories:
            raise ValueError(f"memories must be a non-empty list of memory modes, got {memories!r}")
        if len(set(memories)) != len(memories):
            raise ValueError(f"memories must not repeat a mode (each names one setup), got {memories!r}")
        self.model, self.memories = model, tuple(memories)

    def _config(self) -> dict:
        return {**super()._config(), "model": os.fspath(self.model), "memories": list(self.memories)}

    def _setups(self):
        def kw(mem):
            return {k: v for k, v in self.server_kw.items() if k != "elastic" or mem == "elastic"}

        return [(mem, [Server(self.model, memory=mem, start=False, progress=self.progress, **kw(mem))])
                for mem in self.memories]


class MultiModel(_Experiment):
    """Several models served at once (one server each, same memory mode) under one workload."""

    kind = "MultiModel"

    def __init__(self, models, workload, memory: str = "elastic", names=None, **kw):
        super().__init__(workload, **kw)
        models = list(models)
        if len(models) < 1:
            raise ValueError("MultiModel needs at least one model")
        if names is not None and len(list(names)) != len(models):
            raise ValueError(f"names: {len(list(names))} given for {len(models)} models")
        self.models, self.memory = models, memory
        self.names = list(names) if names is not None else [None] * len(models)

    def _config(self) -> dict:
        return {**super()._config(), "models": [os.fspath(m) for m in self.models], "memory": self.memory}

    def _setups(self):
        return [(self.memory, [Server(m, memory=self.memory, start=False, progress=self.progress, name=n,
                                      **self.server_kw) for m, n in zip(self.models, self.names)])]


def _concat(frames: list, columns: list[str]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _records_frame(records, setup: str) -> pd.DataFrame:
    rows = [r.as_dict() for r in records]
    df = pd.DataFrame(rows)
    if len(df):
        df.insert(0, "setup", setup)
    return df


def _environment() -> dict:
    from kvlab.sysinfo import environment_or_error, package_version

    env = environment_or_error()
    env.setdefault("versions", {})["pandas"] = package_version("pandas")
    return env


def _observe(observer, servers, tel):
    if observer is None:
        return None
    try:
        return observer(servers, tel)
    except Exception as e:  # a live view is a nicety: the measurement goes on without it
        warnings.warn(f"live view unavailable: {e!r}", RuntimeWarning)
        return None
