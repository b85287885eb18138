"""A hybrid model (sliding-window + full-attention layers, several KV cache groups) on one GPU, static vs
elastic: greedy identity, VRAM at idle, peak KV, and the KV a long request keeps while it decodes.

    python benchmarks/hybrid_gpu.py [--shape gemma-3-1b] [--util 0.5] [--out benchmarks/results/hybrid_gpu_<gpu>.json]

The model is kvlab's Gemma 3 shape (``kvlab.models.synthetic("gemma3", shape, weights=False)``: config and a
locally trained tokenizer) loaded with vLLM's ``load_format="dummy"``, so nothing comes from a model hub.
Each mode runs in its own process (clean NVML numbers), an in-process engine, eager:

1. VRAM over the device's baseline at idle after start;
2. a batch of 24 greedy requests (prompts of 64-6000 tokens, far beyond the sliding window), outputs
   compared token by token; peak KV mapped (elastic) against the static pool;
3. one 7000-token request decoding 128 tokens, stepped by hand: elastic KV mapped after its prefill and at
   its end. The sliding-window groups' blocks leave the window and are released while it runs, so the
   mapped KV approaches what its full-attention layers alone hold.

Dummy weights are tiny uniform values, so outputs may repeat one token: ``distinct_outputs`` says how
informative the identity is (``--random-weights`` writes seeded random weights instead, ~2 GB for 1b).
Needs a supported GPU vLLM (kvlab.engines.vllm.versions) and nvidia-ml-py.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from gpu_runs import gpu_names, gpu_slug, random_prompts, report, run_children, used_bytes

LENGTHS = [6000, 4000, 2500] + [64 + 130 * i for i in range(21)]
MAX_TOKENS = 32
LONG_PROMPT, LONG_TOKENS = 7000, 128


def _vram() -> int:
    return used_bytes(1, "hybrid_gpu")[0]


def _prompts(lengths, vocab, seed=0):
    return random_prompts(lengths, high=vocab - 10, seed=seed)


def _long_request(llm, vocab, elastic: bool) -> dict:
    """One long request stepped by hand; the elastic worker's mapped KV after each step."""
    from vllm import SamplingParams

    engine = llm.llm_engine
    engine.add_request("long", _prompts([LONG_PROMPT], vocab, seed=1)[0],
                       SamplingParams(temperature=0, max_tokens=LONG_TOKENS, ignore_eos=True))
    mapped, tokens = [], []
    while engine.has_unfinished_requests():
        for out in engine.step():
            tokens = list(out.outputs[0].token_ids)
        if elastic and engine.has_unfinished_requests():  # while it still runs
            mapped.append(llm.collective_rpc("kvlab_stats")[0]["mapped_bytes"])
    return {"tokens": tokens, "mapped_after_prefill": mapped[0] if mapped else None,
            "mapped_peak": max(mapped) if mapped else None, "mapped_last_decode": mapped[-1] if mapped else None}


def _child(mode: str, model: str, util: float, dummy: bool = True) -> dict:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    import vllm
    from vllm import LLM, SamplingParams

    import kvlab.engines.vllm as kv

    kv.register()
    before = _vram()
    t0 = time.perf_counter()
    llm = LLM(model=model, load_format="dummy" if dummy else "auto", dtype="bfloat16", enforce_eager=True,
              gpu_memory_utilization=util, distributed_executor_backend="uni", max_model_len=8192, seed=0,
              additional_config={"kvlab": {"elastic": mode == "elastic", "reserve": 0, "release_delay": 0.5}})
    started = time.perf_counter() - t0
    time.sleep(1)
    idle = _vram()
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    cfg = scheduler.kv_cache_config
    groups = [{"layers": len(g.layer_names), "spec": type(g.kv_cache_spec).__name__,
               "sliding_window": getattr(g.kv_cache_spec, "sliding_window", None),
               "block_size": g.kv_cache_spec.block_size} for g in cfg.kv_cache_groups if g.layer_names]
    static_kv = sum(t.size for t in cfg.kv_cache_tensors)
    if hasattr(cfg.kv_cache_tensors[0], "layer_stride"):  # one aliased backing buffer (vLLM >= 0.30)
        static_kv = cfg.kv_cache_tensors[0].size
    vocab = llm.llm_engine.model_config.get_vocab_size()
    sp = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    t0 = time.perf_counter()
    outs = llm.generate(_prompts(LENGTHS, vocab), sp, use_tqdm=False)
    burst_s = time.perf_counter() - t0
    after_burst = _vram()
    stats = llm.collective_rpc("kvlab_stats")[0] if mode == "elastic" else {}
    long = _long_request(llm, vocab, mode == "elastic")
    return {"mode": mode, "vllm": vllm.__version__, "start_s": round(started, 1), "burst_s": round(burst_s, 2),
            "vram_before": before, "vram_idle": idle, "vram_after_burst": after_burst, "groups": groups,
            "num_blocks": cfg.num_blocks, "static_kv_bytes": static_kv, "kvlab_stats_after_burst": stats,
            "kvlab_stats_end": llm.collective_rpc("kvlab_stats")[0] if mode == "elastic" else {},
            "outputs": [list(o.outputs[0].token_ids) for o in outs], "long": long}


def summarize(runs: dict, shape: str, gpu: str, util: float, random_weights: bool = False) -> dict:
    """The saved result: the issue's top-level keys (model_shape, identical, groups) and the figures."""
    s, e = runs["static"], runs["elastic"]
    mib = lambda b: round(b / 2**20, 1)  # noqa: E731
    summary = {
        "benchmark": "hybrid_gpu",
        "model_shape": f"gemma3/{shape}",
        "identical": s["outputs"] == e["outputs"] and s["long"]["tokens"] == e["long"]["tokens"],
        "groups": len(s["groups"]),
        "gpu": gpu,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"vllm": s["vllm"]},
        "config": {"util": util, "lengths": LENGTHS, "max_tokens": MAX_TOKENS, "long_prompt": LONG_PROMPT,
                   "long_tokens": LONG_TOKENS, "load_format": "auto" if random_weights else "dummy",
                   "dtype": "bfloat16"},
        "kv_cache_groups": s["groups"],
        "mismatched_requests": [i for i, (a, b) in enumerate(zip(s["outputs"], e["outputs"])) if a != b],
        "distinct_outputs": len({tuple(o) for o in s["outputs"]}),
        "idle_vram_MiB": {"static": mib(s["vram_idle"] - s["vram_before"]),
                          "elastic": mib(e["vram_idle"] - e["vram_before"])},
        "peak_kv_MiB": {"static": mib(s["static_kv_bytes"]),
                        "elastic": mib(e["kvlab_stats_end"].get("peak_mapped_bytes", 0))},  # over the whole run
        "long_request_kv_MiB": {k: mib(v) for k, v in e["long"].items() if k.startswith("mapped") and v is not None},
        "runs": {k: {kk: vv for kk, vv in v.items() if kk != "outputs"} for k, v in runs.items()},
    }
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="gemma-3-1b", help="kvlab.models.SIZES['gemma3'] entry")
    ap.add_argument("--util", type=float, default=0.5)
    ap.add_argument("--out", help="default benchmarks/results/hybrid_gpu_<gpu>.json")
    ap.add_argument("--random-weights", action="store_true",
                    help="write seeded random weights (kvlab.models.synthetic) instead of vLLM's dummy load")
    ap.add_argument("--child", choices=["static", "elastic"])
    ap.add_argument("--model")
    args = ap.parse_args()
    if args.child:
        report(_child(args.child, args.model, args.util, not args.random_weights))
        return
    from kvlab.models import synthetic
    from kvlab.results import write_json_atomic
    from kvlab.sysinfo import environment

    model = str(synthetic("gemma3", args.shape, weights=args.random_weights))
    gpu = (gpu_names() or [""])[0]
    runs = run_children(__file__, ("static", "elastic"), lambda mode: ["--model", model, "--util", str(args.util)]
                        + (["--random-weights"] if args.random_weights else []))
    summary = summarize(runs, args.shape, gpu, args.util, args.random_weights)
    summary["system_info"] = environment()
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"hybrid_gpu_{gpu_slug(gpu)}.json")
    write_json_atomic(out, summary)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("runs", "system_info")}, indent=2))


if __name__ == "__main__":
    main()
