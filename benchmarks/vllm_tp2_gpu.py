"""Static vs elastic vLLM at tensor_parallel_size=2 on two GPUs: greedy identity and each GPU's idle VRAM.

    python benchmarks/vllm_tp2_gpu.py [--util 0.5] [--grace 2] [--out benchmarks/results/tp2_gpu_<gpu>.json]

Each mode runs in its own process (clean NVML numbers): vLLM (``LLM``, its multi-process engine core and
two TP workers) over kvlab's random-weight Qwen2.5-0.5B-shaped model (14 heads, 2 KV heads: one KV head
per rank), a batch of greedy requests (prompts of 64-6000 tokens), then the idle grace
(``idle_release``). VRAM of GPUs 0 and 1 (NVML, over each GPU's own baseline) at idle after start and
once the elastic engine's grace has ended; each rank's kvlab stats. Writes
``{"tp": 2, "identical": bool, "idle_MiB": {"static": [gpu0, gpu1], "elastic": [...]}, ...}`` with the
hardware, versions and date. Needs two NVIDIA GPUs, a supported GPU vLLM and nvidia-ml-py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

TP = 2
LENGTHS = [6000, 4500, 3000] + [64 + 97 * i for i in range(13)]
MAX_TOKENS = 32


def _vram() -> list[int]:
    """Used bytes of GPUs 0 and 1 (NVML indices of CUDA devices 0 and 1)."""
    from kvlab.nvml import Nvml

    nv = Nvml.open()
    if nv is None or len(nv) < TP:
        raise SystemExit(f"vllm_tp2_gpu needs {TP} NVIDIA GPUs and nvidia-ml-py (NVML)")
    try:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        return [nv.memory(nv.index_of_cuda(i, visible))[1] for i in range(TP)]
    finally:
        nv.close()


def _child(mode: str, model: str, util: float, grace: float) -> dict:
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    import vllm
    from vllm import LLM, SamplingParams

    import kvlab.engines.vllm as kv

    kv.register()
    before = _vram()
    t0 = time.perf_counter()
    llm = LLM(model=model, dtype="bfloat16", enforce_eager=True, gpu_memory_utilization=util,
              tensor_parallel_size=TP, max_model_len=8192, seed=0,
              additional_config={"kvlab": {"elastic": mode == "elastic", "idle_release": grace}})
    started = time.perf_counter() - t0
    time.sleep(2)
    idle = _vram()
    rng = random.Random(0)
    prompts = [{"prompt_token_ids": [rng.randrange(10, 150000) for _ in range(n)]} for n in LENGTHS]
    sampling = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    t0 = time.perf_counter()
    outs = llm.generate(prompts, sampling, use_tqdm=False)
    burst_s = time.perf_counter() - t0
    after = _vram()
    stats_busy = llm.collective_rpc("kvlab_stats") if mode == "elastic" else []
    time.sleep(grace + 3)  # the engine core's watcher wakes it when the grace ends; each rank unmaps
    later = _vram()
    stats_idle = llm.collective_rpc("kvlab_stats") if mode == "elastic" else []
    llm.llm_engine.engine_core.shutdown()
    return {"mode": mode, "vllm": vllm.__version__, "start_s": round(started, 1), "burst_s": round(burst_s, 2),
            "vram_before": before, "vram_idle": idle, "vram_after_burst": after, "vram_after_grace": later,
            "ranks_after_burst": stats_busy, "ranks_after_grace": stats_idle,
            "outputs": [list(o.outputs[0].token_ids) for o in outs]}


def _mib(run: dict, point: str) -> list[int]:
    return [(v - b) >> 20 for v, b in zip(run[f"vram_{point}"], run["vram_before"])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="default: benchmarks/results/tp2_gpu_<gpu>.json")
    ap.add_argument("--util", type=float, default=0.5)
    ap.add_argument("--grace", type=float, default=2.0, help="idle_release of the elastic run (seconds)")
    ap.add_argument("--child", choices=["static", "elastic"])
    ap.add_argument("--model")
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(_child(args.child, args.model, args.util, args.grace)), flush=True)
        return
    from kvlab.models import synthetic

    model = str(synthetic("qwen2", "qwen2.5-0.5b"))
    runs = {}
    for mode in ("static", "elastic"):
        cmd = [sys.executable, __file__, "--child", mode, "--model", model, "--util", str(args.util),
               "--grace", str(args.grace)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if p.returncode or not lines:
            print(p.stdout[-3000:], p.stderr[-8000:], sep="\n")
            raise SystemExit(f"{mode} run failed ({p.returncode})")
        runs[mode] = json.loads(lines[-1][7:])
    gpus = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True).stdout.strip().splitlines()
    static, elastic = runs["static"], runs["elastic"]
    summary = {
        "tp": TP,
        "identical": static["outputs"] == elastic["outputs"],
        "idle_MiB": {"static": _mib(static, "idle"), "elastic": _mib(elastic, "after_grace")},
        "elastic_idle_after_start_MiB": _mib(elastic, "idle"),
        "after_burst_MiB": {m: _mib(r, "after_burst") for m, r in runs.items()},
        "mismatched_requests": [i for i, (a, b) in enumerate(zip(static["outputs"], elastic["outputs"])) if a != b],
        "gpus": gpus,
        "vllm": elastic["vllm"],
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {"util": args.util, "grace_s": args.grace, "lengths": LENGTHS, "max_tokens": MAX_TOKENS},
        "runs": {m: {k: v for k, v in r.items() if k != "outputs"} for m, r in runs.items()},
    }
    slug = (gpus[0].split(",")[0] if gpus else "gpu").replace("NVIDIA ", "").strip().replace(" ", "-").lower()
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"tp2_gpu_{slug}.json")
    with open(out, "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    print("wrote", out)


if __name__ == "__main__":
    main()
