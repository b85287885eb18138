"""Limits on an in-process vLLM engine (LLM): no busy loop to wake, so the pool's watcher thread releases
directly to the engine's local worker, under the scheduler's lock. The limit comes from `kvlab ctl`,
another process; the record goes when the engine shuts down."""

import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("vllm")

from kvlab import registry  # noqa: E402
from tests.engines.vllm_batch import KV_BYTES, MAX_TOKENS, generate, prompts  # noqa: E402
from tests.engines.vllm_helpers import close_llm, make_llm, resident_bytes, worker_stats  # noqa: E402

pytestmark = pytest.mark.slow

MiB = 1 << 20
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_idle_in_process_engine_obeys_a_limit_from_another_process(tiny_model, root):
    # The limit is to take the idle engine's reserve: the idle grace must not take it first ("off").
    llm = make_llm(tiny_model, KV_BYTES, kvlab={"elastic": True, "reserve": "48MiB", "pool_name": "inproc",
                                                "idle_release": "off"})
    try:
        rec = registry.read("inproc")
        assert rec.pid == os.getpid() and rec.mapped == 8 * MiB and rec.device == "cpu"
        outputs = generate(llm, prompts())
        assert all(len(o) == MAX_TOKENS for o in outputs)
        stats = worker_stats(llm)
        arena = (os.getpid(), stats["base"], stats["capacity"])
        assert stats["mapped_bytes"] == 56 * MiB == registry.read("inproc").mapped  # chunk 0 + the reserve
        rec = registry.read("inproc")
        assert rec.n_maps > 0 and rec.n_unmaps > 0 and rec.retained == 48 * MiB and rec.used < MiB

        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "kvlab.cli.main", "ctl", "limit", "inproc", "32MiB"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        while resident_bytes(*arena) > 32 * MiB and time.monotonic() - t0 < 5:
            time.sleep(0.02)
        assert resident_bytes(*arena) == worker_stats(llm)["mapped_bytes"] == 32 * MiB
        print(f"in-process engine: 56 -> 32 MiB in {(time.monotonic() - t0) * 1000:.0f} ms (including the CLI)")
        rec = registry.read("inproc")
        assert rec.limit == 32 * MiB and rec.mapped == 32 * MiB and rec.control_ack == rec.control.revision
    finally:
        close_llm(llm)
    assert registry.list_records() == []  # the engine removed its record on shutdown


def test_no_room_on_the_device_means_waiting_not_a_crash(tiny_model, root):
    # A headroom of the whole device leaves no room at all: the pool may only use its own guarantee
    # (32 MiB, one longest request). The batch needs ~64 MiB: requests wait or are preempted, all complete.
    llm = make_llm(tiny_model, KV_BYTES, kvlab={"elastic": True, "reserve": 0, "pool_name": "full",
                                                "headroom": "100%", "min": "32MiB"})
    try:
        outputs = generate(llm, prompts())
        stats = worker_stats(llm)
        rec = registry.read("full")
    finally:
        close_llm(llm)
    assert all(len(o) == MAX_TOKENS for o in outputs)
    assert stats["peak_mapped_bytes"] == 32 * MiB and rec.min == 32 * MiB


def test_a_taken_pool_name_refuses_to_start_and_leaves_nothing(tiny_model, root):
    import threading

    from kvlab.registry import Publisher, RecordExists

    with Publisher("someone/else", 1 << 30, 2 * MiB, name="taken"):
        with pytest.raises(RecordExists, match="'taken' .*KVLAB_POOL_NAME.* is taken"):
            make_llm(tiny_model, KV_BYTES, kvlab={"elastic": True, "pool_name": "taken"})
        assert [r.name for r in registry.list_records()] == ["taken"]  # the other owner's record is intact
    assert not [t for t in threading.enumerate() if t.name == "kvlab-pool-watcher"]
