"""`kvlab demo`: both experiments of the tutorial with defaults that fit the machine.

* GPU and a model from the hub (or --model): that model;
* GPU without the hub: a random-weight model shaped like Qwen2.5-0.5B (kvlab.models.synthetic);
* no GPU: the tiny synthetic model on vLLM's CPU build (what CI and a laptop run).

Runs ElasticVsStatic (bursty load) and MultiModel (two models, alternating bursts), prints each
summary and where the report is. Progress goes to stderr, so ``--json`` output on stdout is clean.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

HUB_MODEL = "Qwen/Qwen2.5-0.5B"
SHOWN = ["setup", "server", "idle MiB", "peak MiB", "flex MiB", "after MiB", "KV idle MiB", "KV peak MiB",
         "TTFT p50 ms", "TTFT p99 ms", "e2e p50 ms", "output tok/s", "requests", "errors"]


def _hub_reachable(model: str, timeout: float = 5.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(model, timeout=timeout)
        return True
    except Exception:
        return False


def plan(model: str | None, quick: bool) -> dict:
    """The models, engine arguments and workloads the demo runs here."""
    from kvlab.lab import engine
    from kvlab.models import synthetic

    device = engine.resolve_device(None)
    gpu = device != "cpu"
    if model is not None:
        models, source = [model, model], "given"
    elif gpu and _hub_reachable(HUB_MODEL):
        models, source = [HUB_MODEL, HUB_MODEL], "hub"
    elif gpu:
        models, source = [str(synthetic("qwen2", "qwen2.5-0.5b", seed=s)) for s in (0, 1)], "synthetic qwen2.5-0.5b"
    else:
        models, source = [str(synthetic("qwen2", "tiny", seed=s)) for s in (0, 1)], "synthetic tiny"
    if gpu:
        server = dict(gpu_memory_utilization=0.4, max_model_len=4096, enforce_eager=True, max_num_seqs=32)
    else:
        # 1 GiB of KV cache: what a static engine holds from the start, and what elastic maps on demand.
        server = dict(kv_cache_memory_bytes=1 << 30, max_model_len=1024, max_num_seqs=16)
    if quick:
        burst = dict(burst_size=4, pause=2.0, max_tokens=32, prompt_len=64)
        n_bursts, rounds, idle = 2, 1, (2.0, 3.0)
    else:
        burst = dict(burst_size=8, pause=4.0, max_tokens=64, prompt_len=256)
        n_bursts, rounds, idle = 3, 2, (3.0, 5.0)
    return {"device": device, "models": models, "source": source, "server": server, "burst": burst,
            "n_bursts": n_bursts, "rounds": rounds, "idle_before": idle[0], "idle_after": idle[1]}


def _alternating(rounds: int, burst: dict):
    from kvlab.lab import alternating

    return lambda servers: alternating(servers, rounds=rounds, **burst)


def run(args) -> int:
    from kvlab.lab import ElasticVsStatic, ExperimentFailed, MultiModel, bursty

    t0 = time.monotonic()
    p = plan(args.model, args.quick)
    out = Path(args.out)
    _err(f"kvlab demo on {p['device']}: models {p['source']} ({', '.join(Path(m).name for m in p['models'])})")
    common = dict(idle_before=p["idle_before"], idle_after=p["idle_after"], progress=True, **p["server"])
    experiments = [
        ("elastic-vs-static", ElasticVsStatic(p["models"][0], bursty(p["n_bursts"], **p["burst"]), **common)),
        ("multi-model", MultiModel(p["models"], _alternating(p["rounds"], p["burst"]), memory="elastic",
                                   names=["model-a", "model-b"], **common)),
    ]
    report, failed = {"device": p["device"], "models": p["models"], "experiments": {}}, False
    for name, exp in experiments:
        try:
            result, error = exp.run(), None
        except ExperimentFailed as e:
            result, error, failed = e.result, str(e), True
        path = result.save(out / name)
        summary = result.summary()
        report["experiments"][name] = {"ok": error is None, "error": error, "report": str(path / "report.html"),
                                       "folder": str(path), "summary": _records(summary)}
        if not args.json:
            print(f"\n== {name} ==")
            cols = [c for c in SHOWN if c in summary.columns and not summary[c].isna().all()]
            print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
            if error:
                print(f"FAILED: {error}")
            print(f"report: {path / 'report.html'}")
    report["seconds"] = round(time.monotonic() - t0, 1)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(f"\nkvlab demo finished in {report['seconds']:.0f} s; results in {out}/")
    return 1 if failed else 0


def _records(df) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in df.to_dict(orient="records")]


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(args) -> int:
    from kvlab.lab.errors import LabError

    try:
        return run(args)
    except LabError as e:
        print(f"kvlab demo: {e}", file=sys.stderr)
        return 2
