"""`kvlab demo --quick --json` end to end on vLLM's CPU build, and what its two Results show.

One run of the demo (4 real engine starts) feeds every test here: elastic idle memory well below
static, KV memory flexing up in bursts and back down, each model's pool growing while it is driven,
Result save/load, and nothing left behind.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow

from kvlab.lab import Result  # noqa: E402
from kvlab.lab.process import group_pids  # noqa: E402
from kvlab.registry import list_records  # noqa: E402

MiB = 1 << 20
# The tiny model's chunk (a 2 MiB page in each of its 4 layers' KV tensors): "shrinks" means at least one chunk unmapped. After a
# burst the engine keeps its 32 MiB reserve mapped, so a burst that peaked one chunk above it drops by one.
CHUNK_MiB = 8


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "results"
    env = {k: v for k, v in os.environ.items() if k != "KVLAB_MODEL"}
    proc = subprocess.run([sys.executable, "-m", "kvlab.cli.main", "demo", "--quick", "--json", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(proc.stdout), proc.stderr


def _kv(result, setup, key):
    s = result.series(setup, "kv_mapped", key)
    assert len(s) > 10, f"no registry pool samples for {key}: the engine published no record"
    return s


def test_demo_prints_json_and_writes_reports(demo):
    out, doc, stderr = demo
    assert doc["device"] == "cpu" and len(doc["models"]) == 2
    for name in ("elastic-vs-static", "multi-model"):
        exp = doc["experiments"][name]
        assert exp["ok"] and exp["error"] is None
        folder = out / name
        assert sorted(p.name for p in folder.iterdir()) == [
            "events.parquet", "latency.png", "memory.png", "report.html", "requests.parquet", "result.json",
            "timeline.parquet"]
        html = (folder / "report.html").read_text()
        assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js embedded: opens offline
        assert 'src="https://cdn.plot.ly' not in html  # no script fetched from the network
        for png in ("memory.png", "latency.png"):
            assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert all(row["errors"] == 0 and row["requests"] > 0 for row in exp["summary"])
    assert "setup 1/2: elastic" in stderr and "ready in" in stderr  # progress went to stderr
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_elastic_idle_well_below_static_and_flexes(demo):
    out, _, _ = demo
    r = Result.load(out / "elastic-vs-static")
    s = r.summary().set_index("setup")
    el, st = s.loc["elastic"], s.loc["static"]
    # The static engine holds its whole KV cache (kv_cache_memory_bytes, 512 MiB) from the start.
    assert el["idle MiB"] < st["idle MiB"] - 256, s[["idle MiB", "peak MiB"]]
    assert np.isnan(st["KV idle MiB"])  # stock vLLM has no kvlab pool
    assert el["KV peak MiB"] >= el["KV idle MiB"] + 16, s.filter(like="KV")
    assert el["KV after MiB"] <= el["KV peak MiB"] - CHUNK_MiB
    kv = _kv(r, "elastic", s.loc["elastic", "server"])
    bursts = r.events[(r.events.setup == "elastic") & r.events.label.str.startswith("burst")]["t"].tolist()
    assert len(bursts) == 2
    # Up in each burst: from its first request to the next burst (or the end). Not within a fixed time of
    # its start: 16 prompts of 1536 tokens are prefilled one a step, and a CI run on a busy machine had
    # grown one chunk 1.5 s into a burst.
    idle = kv[kv.t < bursts[0]]["value"].median()
    for t, until_t in zip(bursts, bursts[1:] + [np.inf]):
        during = kv[(kv.t >= t) & (kv.t < until_t)]["value"]
        assert during.max() >= idle + 16 * MiB, during.tolist()
    assert kv["value"].iloc[-1] <= kv["value"].max() - CHUNK_MiB * MiB
    for col in ("TTFT p50 ms", "e2e p99 ms", "output tok/s", "req/s"):
        assert (s[col] > 0).all(), col
    assert "RSS" in s["memory source"].iloc[0] and "registry" in r.summary().attrs["sources"]["KV * MiB"]


def test_each_model_grows_while_driven_and_shrinks_after(demo):
    out, _, _ = demo
    r = Result.load(out / "multi-model")
    keys = [v["key"] for v in r.setups[0]["servers"]]
    assert keys == ["model-a", "model-b"]
    ev = r.events[r.events.label.str.startswith("burst")].sort_values("t")
    assert [lbl.split(" -> ")[1] for lbl in ev.label] == ["model-a", "model-b"]
    end = r.windows("elastic")[1]
    edges = ev.t.tolist() + [end]
    kv = {k: _kv(r, "elastic", k) for k in keys}
    for i, driven in enumerate(keys):
        other = keys[1 - i]
        lo, hi = edges[i], edges[i + 1]
        mine = kv[driven][(kv[driven].t >= lo) & (kv[driven].t < hi)]["value"]
        idle = kv[driven][kv[driven].t < edges[0]]["value"].median()
        assert mine.max() >= idle + 16 * MiB, f"{driven} did not grow while driven"
        theirs = kv[other][(kv[other].t >= lo) & (kv[other].t < hi)]["value"]
        assert theirs.max() < mine.max() - 8 * MiB, f"{other} grew while {driven} was driven"
        assert kv[driven]["value"].iloc[-1] <= mine.max() - CHUNK_MiB * MiB, f"{driven} did not shrink after"


def test_nothing_left_behind(demo):
    out, _, _ = demo
    pools = set()
    for name in ("elastic-vs-static", "multi-model"):
        for setup in Result.load(out / name).setups:
            for srv in setup["servers"]:
                assert srv["pgid"] and group_pids(srv["pgid"]) == [], srv
                pools.add(srv["pool_name"])
    pools.discard(None)
    assert len(pools) == 3
    assert not pools & {rec.name for rec in list_records()}


def test_result_round_trip_and_atomic_save(demo, tmp_path):
    out, _, _ = demo
    r = Result.load(out / "elastic-vs-static")
    again = Result.load(r.save(tmp_path / "copy"))
    pd.testing.assert_frame_equal(again.summary(), r.summary())
    pd.testing.assert_frame_equal(again.timeline, r.timeline)
    pd.testing.assert_frame_equal(again.events, r.events)
    assert again.requests["itl"].tolist() == r.requests["itl"].tolist()
    assert again.meta == r.meta and again.setups == r.setups and again.kind == "ElasticVsStatic"
    assert set(again.figures()) == {"memory", "latency"}
    # A save that fails half-way leaves the earlier result as it was, and no temporary folder.
    before = {p.name: p.read_bytes() for p in (tmp_path / "copy").iterdir()}
    r.requests["unsavable"] = [object()] * len(r.requests)
    with pytest.raises(Exception):
        r.save(tmp_path / "copy")
    assert {p.name: p.read_bytes() for p in (tmp_path / "copy").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a kvlab result"):
        again.save(tmp_path / "other")
