"""Static vs elastic vLLM at tensor_parallel_size=2 on two GPUs: greedy identity, each GPU's idle VRAM, and a
limit set from outside (as `kvlab ctl` does) binding on both ranks.

    python benchmarks/vllm_tp2_gpu.py [--shapes qwen2.5-0.5b,llama-3.1-8b] [--util 0.5] [--grace 2]
                                      [--out benchmarks/results/tp2_gpu_<gpu>.json]

Each shape and mode runs in its own process (clean NVML numbers): vLLM (``LLM``, its multi-process engine
core and two TP workers) over kvlab's random-weight Qwen2.5-0.5B-shaped model (14 heads, 2 KV heads: one
KV head per rank) or the Llama-3.1-8B shape with vLLM's dummy weights (``kvlab.models.dummy``: 8 KV heads,
4 per rank), a batch of greedy requests (prompts of 64-6000 tokens), then the idle grace (``idle_release``).
VRAM of GPUs 0 and 1 (NVML, over each GPU's own baseline) at idle after start and once the elastic
engine's grace has ended; each rank's kvlab stats. The elastic engine then gets a limit of half its burst's
peak through ``kvlab.limits.set_limit`` on its pool record (what `kvlab ctl limit` writes) and runs the
batch again: the record's mapped bytes, sampled at 20 Hz, stay within the limit, and both ranks applied
the same plans. Writes ``{"tp": 2, "identical": bool, "idle_MiB": {"static": [gpu0, gpu1], "elastic":
[...]}, ...}`` (the first shape's figures; every shape under ``shapes``) with the hardware, versions and
date. Needs two NVIDIA GPUs, a supported GPU vLLM and nvidia-ml-py.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

from gpu_runs import gpu_names, gpu_slug, random_prompts, report, run_children, used_bytes

TP = 2
LENGTHS = [6000, 4500, 3000] + [64 + 97 * i for i in range(13)]
MAX_TOKENS = 32
SHAPES = ("qwen2.5-0.5b", "llama-3.1-8b")
POOL = "tp2-elastic"


def _vram() -> list[int]:
    """Used bytes of CUDA devices 0 and 1."""
    return used_bytes(TP, "vllm_tp2_gpu")


def _model(shape: str) -> tuple[str, str]:
    """The model directory and its load format."""
    if shape == "llama-3.1-8b":
        from kvlab.models.dummy import dummy_model

        return str(dummy_model(shape)), "dummy"
    from kvlab.models import synthetic

    return str(synthetic("qwen2", shape)), "auto"


def _under_a_limit(llm, prompts, sampling) -> dict:
    """The batch again with a limit of half the first burst's peak, set from outside through the registry."""
    from kvlab import limits, registry

    ranks = llm.collective_rpc("kvlab_stats")
    chunk = ranks[0]["chunk_bytes"] * TP  # the engine's chunk: every rank maps its shard of it
    limit = max(2, ranks[0]["peak_mapped_bytes"] * TP // chunk // 2) * chunk
    limits.set_limit(POOL, limit, wait=30)
    samples, done = [], threading.Event()

    def sample():
        while not done.wait(0.05):
            samples.append(registry.read(POOL).mapped)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        outs = llm.generate(prompts, sampling, use_tqdm=False)
    finally:
        done.set()
        watcher.join()
    after = llm.collective_rpc("kvlab_stats")
    limits.unlimit(POOL, wait=30)
    return {"limit_bytes": limit, "max_mapped_bytes": max(samples, default=0), "samples": len(samples),
            "complete": all(len(o.outputs[0].token_ids) == MAX_TOKENS for o in outs),
            "plans_applied": [r["plans_applied"] for r in after],
            "rank_mapped_bytes": [r["mapped_bytes"] for r in after]}


def _child(mode: str, shape: str, util: float, grace: float) -> dict:
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    import vllm
    from vllm import LLM, SamplingParams

    import kvlab.engines.vllm as kv

    kv.register()
    model, load_format = _model(shape)
    before = _vram()
    t0 = time.perf_counter()
    kvlab = {"elastic": mode == "elastic", "idle_release": grace, **({"pool_name": POOL} if mode == "elastic" else {})}
    llm = LLM(model=model, load_format=load_format, dtype="bfloat16", enforce_eager=True, gpu_memory_utilization=util,
              tensor_parallel_size=TP, max_model_len=8192, seed=0, additional_config={"kvlab": kvlab})
    started = time.perf_counter() - t0
    time.sleep(2)
    idle = _vram()
    prompts = random_prompts(LENGTHS, high=llm.llm_engine.model_config.get_vocab_size() - 10)
    sampling = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    t0 = time.perf_counter()
    outs = llm.generate(prompts, sampling, use_tqdm=False)
    burst_s = time.perf_counter() - t0
    after = _vram()
    stats_busy = llm.collective_rpc("kvlab_stats") if mode == "elastic" else []
    time.sleep(grace + 3)  # the engine core's watcher wakes it when the grace ends; each rank unmaps
    later = _vram()
    stats_idle = llm.collective_rpc("kvlab_stats") if mode == "elastic" else []
    limited = _under_a_limit(llm, prompts, sampling) if mode == "elastic" else None
    llm.llm_engine.engine_core.shutdown()
    return {"mode": mode, "shape": shape, "load_format": load_format, "vllm": vllm.__version__,
            "start_s": round(started, 1), "burst_s": round(burst_s, 2), "vram_before": before, "vram_idle": idle,
            "vram_after_burst": after, "vram_after_grace": later, "ranks_after_burst": stats_busy,
            "ranks_after_grace": stats_idle, "limit": limited, "outputs": [list(o.outputs[0].token_ids) for o in outs]}


def _mib(run: dict, point: str) -> list[int]:
    return [(v - b) >> 20 for v, b in zip(run[f"vram_{point}"], run["vram_before"])]


def summarize(runs: dict) -> dict:
    """One shape's figures from its static and elastic runs."""
    static, elastic = runs["static"], runs["elastic"]
    return {
        "identical": static["outputs"] == elastic["outputs"],
        "idle_MiB": {"static": _mib(static, "idle"), "elastic": _mib(elastic, "after_grace")},
        "elastic_idle_after_start_MiB": _mib(elastic, "idle"),
        "after_burst_MiB": {m: _mib(r, "after_burst") for m, r in runs.items()},
        "mismatched_requests": [i for i, (a, b) in enumerate(zip(static["outputs"], elastic["outputs"])) if a != b],
        "distinct_outputs": len({tuple(o) for o in static["outputs"]}),
        "limit": elastic["limit"],
        "runs": {m: {k: v for k, v in r.items() if k != "outputs"} for m, r in runs.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="default: benchmarks/results/tp2_gpu_<gpu>.json")
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma list of {', '.join(SHAPES)}")
    ap.add_argument("--util", type=float, default=0.5)
    ap.add_argument("--grace", type=float, default=2.0, help="idle_release of the elastic run (seconds)")
    ap.add_argument("--child", choices=["static", "elastic"])
    ap.add_argument("--shape", choices=SHAPES)
    args = ap.parse_args()
    if args.child:
        report(_child(args.child, args.shape, args.util, args.grace))
        return
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if not shapes or set(shapes) - set(SHAPES):
        raise SystemExit(f"--shapes takes {', '.join(SHAPES)}, not {args.shapes!r}")
    from kvlab.results import write_json_atomic

    by_shape = {}
    for shape in shapes:
        runs = run_children(__file__, ("static", "elastic"), lambda mode, shape=shape: [
            "--shape", shape, "--util", str(args.util), "--grace", str(args.grace)])
        by_shape[shape] = summarize(runs)
    first = by_shape[shapes[0]]
    gpus = gpu_names()
    summary = {
        "tp": TP,
        "identical": all(s["identical"] for s in by_shape.values()),
        "idle_MiB": first["idle_MiB"],
        "model_shape": shapes[0],
        "gpus": gpus,
        "vllm": first["runs"]["elastic"]["vllm"],
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {"util": args.util, "grace_s": args.grace, "lengths": LENGTHS, "max_tokens": MAX_TOKENS},
        "shapes": by_shape,
    }
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"tp2_gpu_{gpu_slug(gpus[0]) if gpus else 'gpu'}.json")
    write_json_atomic(out, summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "shapes"}, indent=2))
    print(json.dumps({s: {k: v[k] for k in ("identical", "idle_MiB", "limit")} for s, v in by_shape.items()}, indent=2))
    print("wrote", out)


if __name__ == "__main__":
    main()
