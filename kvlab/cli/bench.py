"""`kvlab bench vmm`: runs the benchmark and saves it with the machine's facts under benchmarks/results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kvlab.bench import vmm
from kvlab.memory import parse_device, parse_size
from kvlab.results import write_json_atomic
from kvlab.sysinfo import environment


def default_device() -> str:
    from kvlab.memory._native_loader import native

    devices = [d for d in native().cuda_devices() if d["vmm_supported"]]
    return f"cuda:{devices[0]['ordinal']}" if devices else "cpu"


def main(args) -> int:
    device = str(parse_device(args.device or default_device()))
    progress = None if args.json else (lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    result = vmm.run(device=device, page_size=parse_size(args.page_size), repeats=args.repeats, progress=progress,
                     handle_size=parse_size(args.handle_size),
                     growth_bytes=parse_size(args.growth) if args.growth else None)
    result["environment"] = environment()
    stamp = result["environment"]["date"].replace(":", "").replace("-", "")[:15]
    out = Path(args.out) / f"vmm-{device.replace(':', '')}-{stamp}.json"
    write_json_atomic(out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(vmm.format_table(result))
        print(f"saved {out}")
    return 0
