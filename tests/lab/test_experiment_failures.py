"""Experiments that go wrong: a clear error, what was measured kept, nothing left behind."""

import os
import signal
import socket
import threading
import time

import pytest

pytest.importorskip("vllm")

from kvlab.lab import (ElasticVsStatic, EngineDied, ExperimentFailed, ModelNotFound, PortInUse, Result,  # noqa: E402
                       WorkloadError, alternating, bursty)
from kvlab.lab.process import group_pids  # noqa: E402
from kvlab.lab.server import running  # noqa: E402
from kvlab.registry import list_records  # noqa: E402

from .conftest import ENGINE_ARGS  # noqa: E402

LOAD = dict(burst_size=4, max_tokens=200, prompt_len=16)


def test_unknown_model_and_port_in_use_fail_before_anything_starts(tiny_model, tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        ElasticVsStatic(tmp_path / "no-such-model", bursty(1, 1, pause=0), progress=False).run()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=str(port)):
            ElasticVsStatic(tiny_model, bursty(1, 1, pause=0), port=port, progress=False, **ENGINE_ARGS).run()
    assert running() == []


def _left_behind(result: Result) -> tuple[list, set]:
    pools = {s["pool_name"] for setup in result.setups for s in setup["servers"]} - {None}
    procs = [p for setup in result.setups for s in setup["servers"] for p in group_pids(s["pgid"])]
    return procs, pools & {r.name for r in list_records()}


@pytest.mark.slow
def test_engine_crash_mid_workload_keeps_measurements(tiny_model, tmp_path):
    exp = ElasticVsStatic(tiny_model, bursty(3, pause=0.5, **LOAD), memories=("elastic", "static"),
                          idle_before=1.0, idle_after=1.0, progress=False, **ENGINE_ARGS)

    def kill_in_second_burst():  # the access log has a line per stream as it opens: 8 = the second burst
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            live = running()
            if live and live[0].log_path.read_text().count('"POST /v1/completions HTTP/1.1" 200') >= 8:
                time.sleep(0.3)
                os.kill(live[0].pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_in_second_burst, daemon=True)
    killer.start()
    with pytest.raises(ExperimentFailed, match="setup 'elastic'") as e:
        exp.run()
    killer.join(5)
    assert isinstance(e.value.__cause__, EngineDied)
    r = e.value.result
    assert [s["name"] for s in r.setups] == ["elastic"]  # stopped there: static never started
    assert "EngineDied" in r.setups[0]["error"] and r.error == r.setups[0]["error"]
    req = r.requests
    # Where exactly the kill lands depends on the machine's speed; what must hold: the first burst was
    # measured, something failed, and everything after the first failing burst failed too.
    failed_phases = sorted(set(req[req.status == "error"].phase))
    assert len(req) == 12 and set(req[req.phase == 0].status) == {"ok"} and failed_phases
    first_failed = failed_phases[0]
    assert set(req[req.phase >= first_failed].status) == {"error"}
    assert set(req[req.phase < first_failed].status) == {"ok"}
    n_errors = int((req.status == "error").sum())
    assert r.windows("elastic")[0] is not None  # the first burst's marker was kept
    assert len(r.series("elastic", "mem", r.setups[0]["servers"][0]["key"])) > 5  # memory up to the crash
    saved = Result.load(r.save(tmp_path / "crashed"))
    assert saved.error == r.error and len(saved.requests) == 12
    assert saved.summary().loc[0, "errors"] == n_errors
    procs, pools = _left_behind(r)
    assert procs == [] and pools == set()  # the watchdog took the group; the dead pool's record was reaped


@pytest.mark.slow
def test_workload_error_after_start_stops_servers_and_keeps_idle_timeline(tiny_model):
    exp = ElasticVsStatic(tiny_model, lambda servers: alternating(servers, rounds=0), memories=("elastic",),
                          idle_before=1.0, progress=False, **ENGINE_ARGS)
    with pytest.raises(ExperimentFailed) as e:
        exp.run()
    assert isinstance(e.value.__cause__, WorkloadError) and "rounds" in str(e.value)
    r = e.value.result
    assert len(r.requests) == 0 and "WorkloadError" in r.error
    assert len(r.series("elastic", "mem", r.setups[0]["servers"][0]["key"])) >= 3  # the idle second measured
    procs, pools = _left_behind(r)
    assert procs == [] and pools == set() and running() == []
