"""SGLang on kvlab's elastic KV, on one GPU: greedy identity and idle VRAM (static vs elastic), then a vLLM
and an SGLang model sharing the GPU under alternating bursts.

    python benchmarks/sglang_gpu.py [--out benchmarks/results/sglang_gpu_<gpu>.json] [--fraction 0.45]
        [--grace 5] [--rounds 4] [--burst 16] [--skip-pair]

Every engine is a real OpenAI-compatible server started through ``kvlab.lab.Server`` over kvlab's
random-weight Qwen2.5-0.5B-shaped model. Phase 1 runs SGLang static, then elastic (one at a time, so
NVML's numbers are the engine's): a batch of greedy requests (token-id prompts of 64-3000 tokens, 32
output tokens, ignore_eos) through SGLang's native /generate, the output token ids compared between
the two; idle VRAM is NVML's used memory once the engine has answered a warm-up request and stayed
idle past kvlab's idle grace (``--grace`` s, KVLAB_IDLE_RELEASE), minus what the GPU used before it
started. Phase 2 starts vLLM (elastic) and SGLang (elastic) side by side and sends bursts to each in
turn, recording every request's outcome, NVML's used memory and each pool's mapped bytes (registry).

Needs: an NVIDIA GPU, nvidia-ml-py, SGLang 0.5.23 (torch 2.14.1) and, for phase 2, a GPU vLLM that
kvlab supports in the same Python. The top level of the JSON is
``{"sglang": <version>, "identical": bool, "idle_MiB": {"static": .., "elastic": ..}, ...}``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

LENGTHS = [3000, 2000, 1000] + [64 + 61 * i for i in range(13)]
MAX_TOKENS = 32
VOCAB = 32000  # prompt token ids are drawn below this (the model's vocabulary is larger)


def prompts(lengths, seed=0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(100, VOCAB) for _ in range(n)] for n in lengths]


def used_mib(nv, index: int) -> float:
    return nv.memory(index)[1] / 2**20


def generate(url: str, ids: list[int], max_tokens: int = MAX_TOKENS) -> list[int]:
    """Greedy output token ids through SGLang's native /generate."""
    body = {"input_ids": ids, "return_logprob": True, "logprob_start_len": -1,
            "sampling_params": {"temperature": 0.0, "max_new_tokens": max_tokens, "ignore_eos": True}}
    r = httpx.post(f"{url}/generate", json=body, timeout=600)
    r.raise_for_status()
    out = r.json()
    if "output_ids" in out:
        return list(out["output_ids"])
    return [int(t[1]) for t in out["meta_info"]["output_token_logprobs"]]


def completion(url: str, model: str, ids: list[int], max_tokens: int = MAX_TOKENS) -> bool:
    """One OpenAI /v1/completions request (both engines serve it); True when it returned its tokens."""
    body = {"model": model, "prompt": ids, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True}
    r = httpx.post(f"{url}/v1/completions", json=body, timeout=600)
    return r.status_code == 200 and r.json()["usage"]["completion_tokens"] == max_tokens


def sglang_server(model, memory: str, args, name: str, device: str):
    from kvlab.lab import Server

    env = {"KVLAB_IDLE_RELEASE": str(args.grace)}
    return Server(model, engine="sglang", memory=memory, device=device, name=name, env=env,
                  mem_fraction_static=args.fraction, context_length=4096, progress=False)


def phase_identity(model, args, nv, index: int, device: str) -> dict:
    batch = prompts(LENGTHS)
    out = {}
    for memory in ("static", "elastic"):
        before = used_mib(nv, index)
        with sglang_server(model, memory, args, f"sglang-{memory}", device) as s:
            generate(s.url, batch[-1], 4)  # warm-up
            time.sleep(args.grace + 2)
            idle = used_mib(nv, index) - before
            t0 = time.monotonic()
            with ThreadPoolExecutor(len(batch)) as pool:
                tokens = list(pool.map(lambda ids: generate(s.url, ids), batch))
            seconds = time.monotonic() - t0
            after_burst = used_mib(nv, index) - before
            time.sleep(args.grace + 2)
            released = used_mib(nv, index) - before
        out[memory] = {"tokens": tokens, "idle_MiB": round(idle, 1), "after_burst_MiB": round(after_burst, 1),
                       "after_grace_MiB": round(released, 1), "batch_seconds": round(seconds, 2)}
        print(f"{memory}: idle {idle:.0f} MiB, after burst {after_burst:.0f} MiB, after grace {released:.0f} MiB",
              flush=True)
    return out


def phase_pair(model, args, nv, index: int, device: str) -> dict:
    from kvlab import registry
    from kvlab.lab import Server

    env = {"KVLAB_IDLE_RELEASE": str(args.grace)}
    before = used_mib(nv, index)
    timeline, outcomes = [], {"vllm": [], "sglang": []}
    with Server(model, memory="elastic", device=device, name="vllm-pair", env=env, progress=False,
                gpu_memory_utilization=args.fraction, max_model_len=4096) as v, \
            sglang_server(model, "elastic", args, "sglang-pair", device) as s:
        servers = {"vllm": v, "sglang": s}

        def sample(label: str) -> None:
            row = {"t": round(time.monotonic() - t0, 2), "label": label, "used_MiB": round(used_mib(nv, index) - before, 1)}
            for key, srv in servers.items():
                try:
                    row[f"{key}_mapped_MiB"] = round(registry.read(srv.pool_name).mapped / 2**20, 1)
                except registry.RegistryError:
                    row[f"{key}_mapped_MiB"] = None
            timeline.append(row)

        t0 = time.monotonic()
        sample("start")
        for r in range(args.rounds):
            for key, srv in servers.items():
                batch = prompts([256 + 97 * i for i in range(args.burst)], seed=r)
                with ThreadPoolExecutor(args.burst) as pool:
                    ok = list(pool.map(lambda ids: completion(srv.url, srv.model, ids), batch))
                outcomes[key].append(sum(ok))
                sample(f"round {r} {key} burst")
                time.sleep(args.grace + 1)
                sample(f"round {r} {key} idle")
    return {"timeline": timeline, "completed": outcomes, "requests_per_burst": args.burst,
            "all_completed": all(n == args.burst for ns in outcomes.values() for n in ns),
            "peak_used_MiB": max(row["used_MiB"] for row in timeline)}


def main() -> None:
    from kvlab import models
    from kvlab.engines.sglang import compat
    from kvlab.nvml import Nvml
    from kvlab.results import write_json_atomic
    from kvlab.sysinfo import environment, package_version

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="default: benchmarks/results/sglang_gpu_<gpu>.json")
    p.add_argument("--fraction", type=float, default=0.45, help="mem_fraction_static / gpu_memory_utilization")
    p.add_argument("--grace", type=float, default=5.0, help="KVLAB_IDLE_RELEASE seconds")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--burst", type=int, default=16)
    p.add_argument("--gpu", type=int, default=0)
    p.add_argument("--skip-pair", action="store_true", help="phase 1 only (no vLLM in this Python)")
    args = p.parse_args()
    nv = Nvml.open()
    if nv is None:
        raise SystemExit("sglang_gpu needs an NVIDIA GPU and nvidia-ml-py (NVML)")
    version = compat.installed_version()
    if version is None:
        raise SystemExit("sglang_gpu needs SGLang (pip install sglang==0.5.23)")
    index = nv.index_of_cuda(args.gpu, os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    gpu = nv.name(index)
    short = (re.search(r"[A-Z]\d{2,3}", gpu) or re.search(r"\w+", gpu)).group(0).lower()
    out = args.out or f"benchmarks/results/sglang_gpu_{short}.json"
    model = models.synthetic("qwen2", "qwen2.5-0.5b")
    device = f"cuda:{args.gpu}"

    ident = phase_identity(model, args, nv, index, device)
    identical = ident["static"]["tokens"] == ident["elastic"]["tokens"]
    result = {"sglang": version, "identical": identical,
              "idle_MiB": {m: ident[m]["idle_MiB"] for m in ("static", "elastic")},
              "benchmark": "sglang_gpu", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "gpu": gpu,
              "versions": {"sglang": version, "vllm": package_version("vllm"), "torch": package_version("torch"),
                           "sglang-kernel": package_version("sglang-kernel")},
              "settings": vars(args), "model": "random-weight Qwen2.5-0.5B shape (kvlab.models.synthetic)",
              "identity": {m: {k: v for k, v in ident[m].items() if k != "tokens"} for m in ident},
              "mismatched_prompts": [i for i, (a, b) in enumerate(zip(ident["static"]["tokens"],
                                                                      ident["elastic"]["tokens"])) if a != b]}
    print(f"identical greedy tokens: {identical}", flush=True)
    if not args.skip_pair:
        result["pair"] = phase_pair(model, args, nv, index, device)
        print(f"pair: all completed {result['pair']['all_completed']}, peak {result['pair']['peak_used_MiB']} MiB")
    result["system_info"] = environment()
    write_json_atomic(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
