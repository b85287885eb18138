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
import time

from gpu_runs import gpu_names, gpu_slug, random_prompts, report, run_children, used_bytes

TP = 2
LENGTHS = [6000, 4500, 3000] + [64 + 97 * i for i in range(13)]
MAX_TOKENS = 32


def _vram() -> list[int]:
    """Used bytes of CUDA devices 0 and 1."""
    return used_bytes(TP, "vllm_tp2_gpu")


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
    sampling = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    t0 = time.perf_counter()
    outs = llm.generate(random_prompts(LENGTHS), sampling, use_tqdm=False)
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
        report(_child(args.child, args.model, args.util, args.grace))
        return
    from kvlab.models import synthetic
    from kvlab.results import write_json_atomic

    model = str(synthetic("qwen2", "qwen2.5-0.5b"))
    runs = run_children(__file__, ("static", "elastic"),
                        lambda mode: ["--model", model, "--util", str(args.util), "--grace", str(args.grace)])
    gpus = gpu_names()
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
    slug = gpu_slug(gpus[0]) if gpus else "gpu"
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"tp2_gpu_{slug}.json")
    write_json_atomic(out, summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    print("wrote", out)


if __name__ == "__main__":
    main()
