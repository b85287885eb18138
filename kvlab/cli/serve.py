"""`kvlab serve CONFIG.yaml`: the endpoint in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="several models behind one OpenAI-compatible endpoint (idle ones sleep)")
    p.add_argument("config", help="YAML file: models, budgets, idle timeouts (see kvlab.serve.config)")
    p.add_argument("--host", default=None, help="override the file's host")
    p.add_argument("--port", type=int, default=None, help="override the file's port (0: pick a free one)")


def main(args: argparse.Namespace) -> int:
    from kvlab.serve import ConfigError, Gateway

    try:
        gw = Gateway(args.config, host=args.host, port=args.port, start=False)
    except (ConfigError, ValueError) as e:
        print(f"kvlab serve: {e}", file=sys.stderr)
        return 2
    names = ", ".join(f"{e.name} ({e.device}, sleep: {e.policy})" for e in gw.router.engines.values())
    try:
        gw.run(on_ready=lambda url: print(f"kvlab serve: {names} at {url}/v1 (engines start on their first "
                                          "request; Ctrl-C stops everything)", flush=True))
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its shutdown, which stopped the engines
        print("kvlab serve: stopped", file=sys.stderr)
        return 130
    return 0
