"""Static vs elastic vLLM on one GPU: greedy identity and NVML VRAM at idle, after a burst, after release.

    python benchmarks/vllm_elastic_gpu.py [--out results.json] [--util 0.5] [--grace 2] [--breakdown] [--expandable]
    python benchmarks/vllm_elastic_gpu.py --current [--modes eager,default]   # issue 15's check of a vLLM

Each mode runs in its own process (clean NVML numbers): an in-process vLLM engine over kvlab's
random-weight Qwen2.5-0.5B-shaped model, a batch of 32 greedy requests (prompts of 64-6000 tokens,
32 output tokens each, ignore_eos), VRAM sampled before the engine, at idle after start, right after
the burst and once the idle grace has ended (``--grace`` seconds, the elastic engine's ``idle_release``;
then the reserve and the sampler's workspace go too). Needs a supported GPU vLLM (0.24-0.33; an unchecked vLLM x model
runner pair with KVLAB_VLLM_UNCHECKED=1) and nvidia-ml-py.

``--modes eager,default`` runs both engines once per mode: ``eager`` (enforce_eager) and ``default``
(vLLM's default torch.compile + CUDA graphs). ``--current`` saves the support check of the installed vLLM
as ``benchmarks/results/vllm_current_gpu_<gpu>.json`` (unless ``--out``): at its top level ``vllm``,
``runner`` (the model runner vLLM chose), ``identical`` (elastic == static greedy tokens in every mode),
``idle_MiB`` and ``after_burst_MiB`` ({"static", "elastic"}, VRAM over the baseline, eager mode where run),
the rest per mode; a later command for another mode of the same vLLM adds to the file.

``--expandable`` adds a third run: elastic with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True, which
lets torch's ``empty_cache`` return the unused parts of segments that still hold live blocks.

``--breakdown`` also records torch's allocation history in the elastic run and reports, at idle, what
the caching allocator holds: allocated vs reserved bytes and the largest live allocations grouped by
the vLLM/kvlab line that made them (issue 3's idle goal is missed by ~100-230 MiB; this says by what).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from kvlab.results import write_json_atomic

from gpu_runs import gpu_names, random_prompts, report, run_children, used_bytes

LENGTHS = [6000, 4500, 3000] + [64 + 97 * i for i in range(29)]
MAX_TOKENS = 32


def _vram() -> int:
    return used_bytes(1, "vllm_elastic_gpu")[0]


def _frame(frames) -> str:
    """The innermost frame of an allocation's stack that is vLLM's or kvlab's (else the innermost one)."""
    for f in frames:
        name = f.get("filename", "")
        if "/vllm/" in name or "/kvlab/" in name:
            return f"{name.split('/vllm/')[-1].split('/kvlab/')[-1]}:{f.get('line')} {f.get('name')}"
    return f"{frames[0].get('filename')}:{frames[0].get('line')}" if frames else "?"


def _idle_breakdown(top: int = 15) -> dict:
    """What torch's caching allocator holds now: live allocations grouped by the line that made them."""
    import torch

    groups: dict[str, list[int]] = {}
    for seg in torch.cuda.memory_snapshot():
        for block in seg["blocks"]:
            if block["state"] == "active_allocated":
                g = groups.setdefault(_frame(block.get("frames", [])), [0, 0])
                g[0] += block["size"]
                g[1] += 1
    ranked = sorted(groups.items(), key=lambda kv: -kv[1][0])[:top]
    return {"allocated_MiB": torch.cuda.memory_allocated() / 2**20,
            "reserved_MiB": torch.cuda.memory_reserved() / 2**20,
            "top": [{"where": k, "MiB": round(v[0] / 2**20, 1), "blocks": v[1]} for k, v in ranked]}


def _child(mode: str, model: str, util: float, grace: float, breakdown: bool = False, eager: bool = True) -> dict:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    import vllm
    from vllm import LLM, SamplingParams

    import kvlab.engines.vllm as kv
    from kvlab.engines.vllm import compat

    kv.register()
    before = _vram()
    if breakdown:
        import torch

        torch.cuda.memory._record_memory_history(max_entries=200_000)  # stacks of live allocations
    t0 = time.perf_counter()
    llm = LLM(model=model, dtype="bfloat16", enforce_eager=eager, gpu_memory_utilization=util,
              distributed_executor_backend="uni", max_model_len=8192, seed=0,
              additional_config={"kvlab": {"elastic": mode == "elastic", "idle_release": grace}})
    started = time.perf_counter() - t0
    time.sleep(1)
    idle = _vram()
    idle_breakdown = _idle_breakdown() if breakdown else None
    sp = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    t0 = time.perf_counter()
    outs = llm.generate(random_prompts(LENGTHS), sp, use_tqdm=False)
    burst_s = time.perf_counter() - t0
    after = _vram()
    time.sleep(grace + 2)  # the watcher releases the reserve when the grace ends: give it a moment
    later = _vram()
    grace_breakdown = _idle_breakdown() if breakdown else None
    stats = llm.collective_rpc("kvlab_stats")[0] if mode == "elastic" else {}
    return {"mode": mode, "vllm": vllm.__version__, "runner": compat.config_runner(llm.llm_engine.vllm_config),
            "eager": eager, "util": util, "start_s": round(started, 1),
            "burst_s": round(burst_s, 2), "vram_before": before, "vram_idle": idle, "vram_after_burst": after,
            "vram_after_grace": later, "kvlab_stats": stats, "idle_breakdown": idle_breakdown,
            "grace_breakdown": grace_breakdown, "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
            "outputs": [list(o.outputs[0].token_ids) for o in outs]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--modes", default="eager", help="comma list of eager, default (torch.compile + CUDA graphs)")
    ap.add_argument("--current", action="store_true", help="save issue 15's vllm_current_gpu_<gpu>.json")
    ap.add_argument("--eager", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--util", type=float, default=0.5)
    ap.add_argument("--child", choices=["static", "elastic"])
    ap.add_argument("--model")
    ap.add_argument("--breakdown", action="store_true", help="what torch holds at idle, by allocating line")
    ap.add_argument("--grace", type=float, default=2.0, help="idle_release of the elastic runs (seconds)")
    ap.add_argument("--expandable", action="store_true", help="also run elastic with expandable segments")
    args = ap.parse_args()
    if args.child:
        breakdown = args.breakdown and args.child == "elastic"
        report(_child(args.child, args.model, args.util, args.grace, breakdown, eager=bool(args.eager)))
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"eager", "default"}:
        raise SystemExit(f"--modes takes eager and/or default, not {args.modes!r}")
    from kvlab.models import synthetic

    model = str(synthetic("qwen2", "qwen2.5-0.5b"))
    weights = os.path.getsize(os.path.join(model, "model.safetensors"))
    gpu = (gpu_names() or [""])[0]
    by_mode = {m: _runs(model, args, eager=m == "eager") for m in modes}
    if args.current:
        _save_current(by_mode, gpu, weights, args)
        return
    _save_summary(by_mode[modes[0]], gpu, weights, args)


def _runs(model: str, args, eager: bool) -> dict:
    setups = {"static": {}, "elastic": {}}
    if args.expandable:
        setups["elastic-expandable"] = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    return run_children(__file__, setups, lambda name: [
        "--model", model, "--util", str(args.util), "--grace", str(args.grace), "--eager", str(int(eager))]
        + (["--breakdown"] if args.breakdown else []), env_of=setups.get)


def _idle_mib(runs: dict) -> dict:
    points = ("idle", "after_burst", "after_grace")
    return {name: {p: (r[f"vram_{p}"] - r["vram_before"]) >> 20 for p in points} for name, r in runs.items()}


def _mismatched(runs: dict) -> dict:
    s = runs["static"]["outputs"]
    return {name: [i for i, (a, b) in enumerate(zip(s, r["outputs"])) if a != b]
            for name, r in runs.items() if name != "static"}


def _save_current(by_mode: dict, gpu: str, weights: int, args) -> None:
    """Issue 15's record of one vLLM on the GPU: the keys the README's support table is filled from.

    Modes already in the file for the same vLLM and runner are kept (a command may run one mode: the GPU
    machine allows 10 minutes a command), and the top-level keys cover all of them.
    """
    short = "h200" if "H200" in gpu else "h100" if "H100" in gpu else "gpu"
    here = os.path.dirname(os.path.abspath(__file__))
    out = args.out or os.path.join(here, "results", f"vllm_current_gpu_{short}.json")
    first = next(iter(by_mode.values()))
    runners = sorted({r["runner"] for runs in by_mode.values() for r in runs.values()})
    vllm, runner = first["static"]["vllm"], runners[0] if len(runners) == 1 else runners
    modes = {mode: {"identical": not any(_mismatched(runs).values()), "mismatched_requests": _mismatched(runs),
                    "MiB": _idle_mib(runs),
                    "runs": {k: {kk: vv for kk, vv in v.items() if kk != "outputs"} for k, v in runs.items()}}
             for mode, runs in by_mode.items()}
    if os.path.exists(out):
        with open(out) as f:
            old = json.load(f)
        if (old.get("vllm"), old.get("runner"), old.get("gpu")) == (vllm, runner, gpu):
            modes = {**old.get("modes", {}), **modes}
    idle_from = "eager" if "eager" in modes else next(iter(modes))
    summary = {
        "vllm": vllm, "runner": runner,
        "identical": all(m["identical"] for m in modes.values()),
        "idle_MiB": {name: mib["idle"] for name, mib in modes[idle_from]["MiB"].items()},
        "after_burst_MiB": {name: mib["after_burst"] for name, mib in modes[idle_from]["MiB"].items()},
        "gpu": gpu, "weights_bytes": weights, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {"util": args.util, "grace_s": args.grace, "lengths": LENGTHS, "max_tokens": MAX_TOKENS,
                   "idle_from_mode": idle_from},
        "modes": modes,
    }
    write_json_atomic(out, summary)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("modes", "config")}, indent=2))
    print(json.dumps({m: v["MiB"] for m, v in modes.items()}, indent=2), f"saved {out}", sep="\n")


def _save_summary(runs: dict, gpu: str, weights: int, args) -> None:
    s = runs["static"]
    idle_mib = _idle_mib(runs)
    summary = {
        "gpu": gpu,
        "weights_bytes": weights,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {"util": args.util, "grace_s": args.grace, "lengths": LENGTHS, "max_tokens": MAX_TOKENS},
        "identical_outputs": all(r["outputs"] == s["outputs"] for r in runs.values()),
        "mismatched_requests": _mismatched(runs),
        "static_idle_MiB": idle_mib["static"]["idle"],
        "elastic_idle_MiB": idle_mib["elastic"]["idle"],
        "elastic_after_burst_MiB": idle_mib["elastic"]["after_burst"],
        "elastic_after_grace_MiB": idle_mib["elastic"]["after_grace"],
        "idle_MiB": idle_mib,
        "runs": {k: {kk: vv for kk, vv in v.items() if kk != "outputs"} for k, v in runs.items()},
    }
    write_json_atomic(args.out or "vllm_elastic_gpu.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    for name, r in runs.items():
        for point in ("idle_breakdown", "grace_breakdown"):
            if r.get(point):
                print(name, point, json.dumps({**r[point], "top": r[point]["top"][:6]}, indent=1))


if __name__ == "__main__":
    main()
