"""`kvlab demo`: both experiments of the tutorial with defaults that fit the machine.

* --model (or KVLAB_MODEL): that model;
* GPU and the model hub: Qwen2.5-0.5B; GPU without the hub: a random-weight model of its shape;
* no GPU: the tiny synthetic model on vLLM's CPU build (what CI and a laptop run).
The choices come from kvlab.lab.defaults, as in the notebooks.

Runs ElasticVsStatic (bursty load) and MultiModel (two models, alternating bursts), prints each
summary and where the report is. Progress goes to stderr, so ``--json`` output on stdout is clean.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

SHOWN = ["setup", "server", "idle MiB", "peak MiB", "flex MiB", "after MiB", "KV idle MiB", "KV peak MiB",
         "KV after MiB", "TTFT p50 ms", "TTFT p99 ms", "e2e p50 ms", "output tok/s", "requests", "errors"]


def plan(model: str | None, quick: bool):
    """The machine's defaults (kvlab.lab.defaults: model, engine arguments, load), as the notebooks use."""
    from dataclasses import replace

    from kvlab.lab import defaults

    setup = defaults.choose(quick_mode=True if quick else None)  # --quick, else KVLAB_QUICK decides
    if model is not None:
        setup = replace(setup, model=model, source="given", reason="--model")
    return setup


def run(args) -> int:
    from kvlab.lab import ElasticVsStatic, ExperimentFailed, MultiModel

    t0 = time.monotonic()
    setup = plan(args.model, args.quick)
    out = Path(args.out)
    _err(f"kvlab demo\n{setup}")
    common = setup.experiment_kw(progress=True)
    models = setup.models(2)
    experiments = [
        ("elastic-vs-static", ElasticVsStatic(setup.model, setup.bursty(), **common)),
        ("multi-model", MultiModel(models, setup.alternating, memory="elastic", names=["model-a", "model-b"],
                                   **common)),
    ]
    report, failed = {"device": setup.device, "models": models, "experiments": {}}, False
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
