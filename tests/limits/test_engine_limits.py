"""Limits on a real, idle, multi-process elastic vLLM server (the OpenAI server started by kvlab.lab).

The engine core (scheduler) and the worker are separate processes, and an idle engine core is blocked
on its input queue. A limit written into the pool's registry record from this (third) process must
still shrink the pool within a second: the record's mapped bytes AND the kernel's count of resident
bytes in the worker's KV arena (/proc/PID/smaps). A later burst under that limit completes every request
without growing past it; removing the limit lets the next burst grow again.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("vllm")

from kvlab import limits, registry  # noqa: E402
from kvlab.meminfo import host_memory  # noqa: E402
from kvlab.settings import ElasticSettings  # noqa: E402
from tests.engines.vllm_batch import prompts  # noqa: E402
from tests.engines.vllm_helpers import PeakResidency, resident_bytes  # noqa: E402
from tests.waiting import until  # noqa: E402

pytestmark = pytest.mark.slow

MiB = 1 << 20
CHUNK = 8 * MiB       # the tiny model's chunk with 2 MiB pages (see tests/engines/vllm_batch.py)
RESERVE = 48 * MiB    # a large reserve, so that an idle pool keeps a lot mapped for the limit to take
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BURST = [1900] * 24   # ~24 x 1900 tokens x 2 KiB/token: about 90 MiB of KV at once
# Each request decodes long enough to still hold its KV when the last one arrives: with 4 tokens, a CI
# machine whose client threads sent the 24 requests spread out saw them overlap only to 48 MiB.
OUTPUT_TOKENS = 32


def _post(url, body, timeout=300):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def _burst(server, seed):
    def one(p):
        body = {"model": server.model, "prompt": p["prompt_token_ids"], "max_tokens": OUTPUT_TOKENS, "temperature": 0,
                "ignore_eos": True}
        return _post(server.url + "/v1/completions", body)["choices"][0]
    with ThreadPoolExecutor(len(BURST)) as pool:
        return list(pool.map(one, prompts(BURST, seed=seed)))


def _kvlab(*args):
    out = subprocess.run([sys.executable, "-m", "kvlab.cli.main", *args], capture_output=True, text=True, timeout=60,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr
    return out.stdout




@pytest.fixture
def server(tiny_model, root):
    from kvlab.lab import Server

    # The limit is to take the idle pool's reserve: the idle grace must not take it first on a slow machine.
    env = {"VLLM_SERVER_DEV_MODE": "1", "KVLAB_REGISTRY_DIR": root, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    elastic = ElasticSettings(reserve=RESERVE, idle_release="off")
    with Server(tiny_model, memory="elastic", device="cpu", elastic=elastic, env=env, progress=False, max_model_len=2048,
                kv_cache_memory_bytes=1 << 30, max_num_seqs=32, seed=0,
                distributed_executor_backend="mp") as s:
        yield s
    assert registry.list_records(root) == []  # the engine removed its record when it stopped


def test_limit_shrinks_an_idle_multiprocess_engine_and_unlimit_lets_it_grow(server, root):
    rec = registry.read(server.pool_name, root)
    assert rec.model == server.model and rec.mapped == CHUNK and rec.capacity >= 1000 * MiB
    assert rec.pid in server.pids()  # published by the engine core, a process of the server's group
    stats = _post(server.url + "/collective_rpc", {"method": "kvlab_stats"})["results"][0]
    arena = (stats["pid"], stats["base"], stats["capacity"])
    assert stats["pid"] != rec.pid  # a worker process maps (executor "mp"); the engine core publishes

    with PeakResidency(*arena) as sampled:
        _burst(server, seed=1)
    print(f"first burst peak {sampled.peak >> 20} MiB")
    # The burst must fill chunk 0 and the reserve, which the limit then takes. How far past them it grows
    # depends on how many of the 24 requests overlap: 88-96 MiB here, 72 in a CI run.
    assert sampled.peak >= CHUNK + RESERVE, f"the burst peaked at {sampled.peak >> 20} MiB"
    # Idle after the burst: chunk 0 plus the reserve stay mapped.
    assert until(lambda: registry.read(server.pool_name, root).mapped == CHUNK + RESERVE, 10), \
        registry.read(server.pool_name, root).as_dict()
    assert until(lambda: resident_bytes(*arena) == CHUNK + RESERVE, 10)

    # `kvlab ctl` and `kvlab top` see it, and the limit comes from that third process.
    listed = json.loads(_kvlab("ctl", "list", "--json"))
    assert [(p["name"], p["mapped"]) for p in listed] == [(server.pool_name, CHUNK + RESERVE)]
    top = json.loads(_kvlab("top", "--once", "--json", "--interval", "0.1"))
    assert [p["name"] for p in top["pools"]] == [server.pool_name]
    t0 = time.monotonic()
    _kvlab("ctl", "limit", server.pool_name, "24MiB", "--wait", "0")
    written = time.monotonic()  # the engine's second starts when the request is in its record
    assert until(lambda: resident_bytes(*arena) <= 24 * MiB, 1.0), \
        f"resident {resident_bytes(*arena) >> 20} MiB 1 s after the limit"
    print(f"idle engine shrank {(CHUNK + RESERVE) >> 20} -> 24 MiB resident {(time.monotonic() - written) * 1000:.0f} "
          f"ms after the limit was written ({(written - t0) * 1000:.0f} ms to run `kvlab ctl`)")
    rec = registry.read(server.pool_name, root)
    assert rec.limit == 24 * MiB and rec.mapped == 24 * MiB and rec.control_ack == rec.control.revision

    # A burst that needs ~90 MiB under a 24 MiB limit: every request completes (waiting, preemption).
    with PeakResidency(*arena) as sampled:
        out = _burst(server, seed=2)
    assert len(out) == len(BURST) and all(c["finish_reason"] == "length" for c in out)
    assert sampled.peak <= 24 * MiB

    limits.unlimit(server.pool_name, wait=2)
    assert registry.read(server.pool_name, root).limit is None
    maps_before = registry.read(server.pool_name, root).n_maps
    with PeakResidency(*arena) as sampled:
        _burst(server, seed=3)
    print(f"burst after unlimit peaked at {sampled.peak >> 20} MiB")
    # Free to grow again: past the old limit, with new maps. Not how far: the pool reuses the blocks of
    # finished requests (cache entries older than half the release delay) instead of growing for them, so
    # the peak depends on how many of the 24 requests overlap. A CI run peaked at 32 MiB where this machine
    # reaches 96 (cause not found; the message below tells a low device cap from little overlap).
    after = registry.read(server.pool_name, root).as_dict()
    after.pop("pages")
    why = f"peak {sampled.peak >> 20} MiB, MemAvailable {host_memory().free >> 20} MiB after; record {after}"
    assert sampled.peak > 24 * MiB and after["n_maps"] > maps_before, why
    # Idle again: chunk 0 plus the reserve, or less where this burst mapped less (the peaks above vary),
    # every other chunk unmapped and every kept one entirely free.
    def settled():
        rec = registry.read(server.pool_name, root)
        return resident_bytes(*arena) == rec.mapped <= CHUNK + RESERVE and rec.retained == rec.mapped - CHUNK
    assert until(settled, 10), {k: v for k, v in registry.read(server.pool_name, root).as_dict().items()
                                if k != "pages"}

    # A limit lowered in the middle of a burst: no more growth from then on, the chunks in use go as
    # their requests finish, and every request still completes.
    with ThreadPoolExecutor(1) as ex:
        running = ex.submit(_burst, server, 4)
        assert until(lambda: resident_bytes(*arena) >= 48 * MiB, 60), "the burst did not grow"
        limits.set_limit(server.pool_name, "24MiB", wait=5)
        at_ack, busy = resident_bytes(*arena), not running.done()
        with PeakResidency(*arena) as after:
            out = running.result()
    assert busy, "the burst ended before the limit was applied: nothing was tested"
    assert len(out) == len(BURST) and all(c["finish_reason"] == "length" for c in out)
    assert after.peak <= at_ack
    assert until(lambda: resident_bytes(*arena) <= 24 * MiB, 5)
    print(f"limit lowered mid-burst at {at_ack >> 20} MiB resident: peak after it {after.peak >> 20} MiB")
