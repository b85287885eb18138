"""`kvlab doctor`: what this machine can do with kvlab, and why not where it can't."""

from __future__ import annotations

import json

from kvlab.engines.vllm import versions as vllm_versions
from kvlab.memory import format_size
from kvlab.memory._native_loader import native
from kvlab.sysinfo import environment


def backends(env: dict) -> dict:
    """Which memory backends work here, each with a reason when it doesn't."""
    out = {"host": {"usable": True, "granularity": native().host_granularity(), "reason": None}}
    cuda = env["cuda"]
    if not cuda["available"]:
        out["cuda"] = {"usable": False, "reason": cuda["reason"]}
    elif not cuda["devices"]:
        out["cuda"] = {"usable": False, "reason": "the CUDA driver loaded but reports no devices"}
    elif not any(d["vmm_supported"] for d in cuda["devices"]):
        out["cuda"] = {"usable": False, "reason": "no device supports virtual memory management"}
    else:
        out["cuda"] = {"usable": True, "reason": None}
    return out


def report() -> dict:
    env = environment()
    env["backends"] = backends(env)
    env["vllm_elastic"] = vllm_versions.describe_installed()
    return env


def elastic_line(e: dict | None) -> str:
    """The installed vLLM, the model runner kvlab's plugin will hook, and whether kvlab supports the pair."""
    if e is None:
        return "  elastic  no vLLM installed"
    verdict = {"checked": f"supported (checked: {e['checked_on']})",
               "unchecked": f"implemented, not yet checked end to end ({vllm_versions.UNCHECKED_ENV}=1 runs it)",
               "unsupported": f"not supported (kvlab supports {vllm_versions.SUPPORTED})"}[e["status"]]
    return (f"  elastic  {e['distribution']} {e['version']} on {e['device']}, {e['runner'].upper()} model runner "
            f"({e['runner_reason']}): {verdict}")


def format_report(r: dict) -> str:
    v = r["versions"]
    lines = [
        f"kvlab {v['kvlab']}  Python {r['python']}  on {r['platform']}",
        f"  CPU      {r['cpu']} ({r['cpu_count']} cores)",
        f"  numpy    {v['numpy']}",
        f"  torch    {v['torch'] or 'not installed'}",
        f"  vLLM     {v['vllm'] or 'not installed'}",
        elastic_line(r["vllm_elastic"]),
    ]
    cuda = r["cuda"]
    if cuda["available"]:
        lines.append(f"  CUDA     driver {cuda['driver_version']}, {len(cuda['devices'])} device(s)")
        for d in cuda["devices"]:
            vmm = f"VMM yes, granularity {format_size(d['granularity'])}" if d["vmm_supported"] else "VMM no"
            lines.append(f"    cuda:{d['ordinal']}  {d['name']}  {format_size(d['total_bytes'])}  {vmm}  {d['uuid']}")
    else:
        lines.append(f"  CUDA     unavailable: {cuda['reason']}")
    lines.append("  backends")
    for name, b in r["backends"].items():
        lines.append(f"    {name:<5} {'usable' if b['usable'] else 'not usable: ' + b['reason']}")
    return "\n".join(lines)


def main(args) -> int:
    r = report()
    print(json.dumps(r, indent=2) if args.json else format_report(r))
    return 0
