"""Result's arithmetic and files on a known timeline (no engine: tests/lab/test_demo.py runs real ones)."""

import json
import math

import pandas as pd
import pytest

from kvlab.lab import RequestRecord, Result
from kvlab.lab.result import wide_to_long

MiB = 1 << 20


def _result() -> Result:
    # 10 Hz samples over 10 s: 100 MiB idle, 180 MiB in the burst (t in [3, 6)), 120 MiB after.
    t = [i / 10 for i in range(100)]
    mem = [(100 if x < 3 else 180 if x < 6 else 120) * MiB for x in t]
    kv = [(8 if x < 3 else 72 if x < 6 else 40) * MiB for x in t]
    table = pd.DataFrame({"t": t, "time": t, "mem:srv": mem, "kv_mapped:srv": kv, "dev_used:cpu": mem,
                          "event": [None] * 100})
    events = pd.DataFrame({"setup": ["elastic", "elastic"], "t": [3.0, 6.5], "label": ["burst 0", "workload end"]})
    recs = []
    for i in range(10):  # ttft 0.1..1.0 s, e2e 1..10 s; request 9 failed
        r = RequestRecord("m", "http://127.0.0.1:1", index=i, start=3.0, ttft=(i + 1) / 10, e2e=float(i + 1),
                          tokens_out=10, itl=[0.01 * i], status="ok")
        if i == 9:
            r.fail("HTTP 500: boom")
        recs.append(r.as_dict())
    requests = pd.DataFrame(recs)
    requests.insert(0, "setup", "elastic")
    setups = [{"name": "elastic", "memory": "elastic", "device": "cpu", "error": None,
               "servers": [{"key": "srv", "model": "m", "url": "http://127.0.0.1:1", "memory": "elastic",
                            "pool_name": "srv-1", "pgid": 1, "log": None}]}]
    return Result("ElasticVsStatic", {"config": {"x": 1}}, setups, wide_to_long(table, "elastic"), events, requests)


def test_summary_levels_latency_and_throughput():
    row = _result().summary().iloc[0]
    assert (row["idle MiB"], row["peak MiB"], row["after MiB"], row["flex MiB"]) == (100, 180, 120, 80)
    assert (row["KV idle MiB"], row["KV peak MiB"], row["KV after MiB"]) == (8, 72, 40)
    ok_ttft = pd.Series([(i + 1) / 10 for i in range(9)])
    assert row["TTFT p50 ms"] == pytest.approx(ok_ttft.quantile(0.5) * 1000)
    assert row["TTFT p99 ms"] == pytest.approx(ok_ttft.quantile(0.99) * 1000)
    assert row["e2e p90 ms"] == pytest.approx(pd.Series(range(1, 10)).quantile(0.9) * 1000)
    # 9 successful requests, all sent at t=3, the last ending at t=12: 90 tokens in 9 s.
    assert row["output tok/s"] == pytest.approx(10.0) and row["req/s"] == pytest.approx(1.0)
    assert row["requests"] == 10 and row["errors"] == 1 and "RSS" in row["memory source"]


def test_device_memory_stands_in_when_no_process_figure():
    r = _result()
    r.timeline = r.timeline[r.timeline["metric"] != "mem"]
    row = r.summary().iloc[0]
    assert row["idle MiB"] == 100 and "device's used memory" in row["memory source"]


def test_save_load_round_trip_and_no_half_written_folder(tmp_path):
    r = _result()
    path = r.save(tmp_path / "res")
    doc = json.loads((path / "result.json").read_text())
    assert doc["kind"] == "ElasticVsStatic" and doc["summary"][0]["peak MiB"] == 180
    back = Result.load(path)
    pd.testing.assert_frame_equal(back.summary(), r.summary())
    assert back.requests["itl"].tolist() == r.requests["itl"].tolist() and back.setups == r.setups
    assert (path / "report.html").read_text().count("<script") >= 2 and (path / "memory.png").stat().st_size > 1000
    r.events = pd.DataFrame({"setup": ["elastic"], "t": [object()], "label": ["bad"]})  # cannot be written
    with pytest.raises(Exception):
        r.save(tmp_path / "res")
    pd.testing.assert_frame_equal(Result.load(path).events, back.events)  # the earlier result is intact
    assert [p.name for p in tmp_path.iterdir()] == ["res"]
    with pytest.raises(FileNotFoundError, match="no kvlab result"):
        Result.load(tmp_path)


def test_empty_result_still_summarises_and_saves(tmp_path):
    setups = [{"name": "static", "memory": "static", "device": "cpu", "error": "EngineDied: boom",
               "servers": [{"key": "s", "model": "m", "url": None, "memory": "static", "pool_name": None}]}]
    empty = Result("ElasticVsStatic", {}, setups, wide_to_long(pd.DataFrame(), "static"),
                   pd.DataFrame(columns=["setup", "t", "label"]), pd.DataFrame(columns=["setup", "url", "status"]))
    row = empty.summary().iloc[0]
    assert math.isnan(row["idle MiB"]) and row["requests"] == 0 and empty.error == "EngineDied: boom"
    back = Result.load(empty.save(tmp_path / "e"))
    assert back.error == "EngineDied: boom" and not back.ok
