"""`kvlab ctl`: list live pools and set their limits from a shell.

    kvlab ctl list [--json]
    kvlab ctl limit POOL|MODEL 2G|30%|none [--wait S]
    kvlab ctl min POOL|MODEL 1G|10%
    kvlab ctl unlimit POOL|MODEL
    kvlab ctl watch [--interval S] [--count N]

Everything goes through ``kvlab.limits`` and the shared registry (no torch, no CUDA context). Bad input
(unknown pool, garbage or negative sizes, percentages over 100, a limit below the minimum) prints one
line saying what to do and exits 2; nothing is changed. A change the engine has not applied within
``--wait`` seconds exits 3 (it stays requested).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from kvlab import limits
from kvlab.registry import Record, RegistryError
from kvlab.registry.names import short_model
from kvlab.units import format_size

_NEGATIVE_SIZE = re.compile(r"^-(\d+\.?\d*|\.\d+)\s*[A-Za-z%]*$")
COLUMNS = ("NAME", "MODEL", "PID", "DEVICE", "MAPPED", "USED", "RETAINED", "LIMIT", "MIN", "CAPACITY")


def add_parser(sub) -> None:
    ctl = sub.add_parser("ctl", help="list pools and set their memory limits")
    ctl_sub = ctl.add_subparsers(dest="ctl", required=True, metavar="ACTION")
    ls = ctl_sub.add_parser("list", help="live pools with their memory and limits")
    ls.add_argument("--json", action="store_true", help="print machine-readable JSON (sizes in bytes)")
    for action, what in (("limit", "most bytes the pool may map: 2G, 512MiB, 30%% (of capacity) or none"),
                         ("min", "a guarantee other pools leave room for: 1G or 10%%")):
        p = ctl_sub.add_parser(action, help=f"set the {action} of a pool, or of every pool of a model")
        # "-1G" must reach kvlab.units (which says why it is wrong), not read as an unknown option.
        p._negative_number_matcher = _NEGATIVE_SIZE
        p.add_argument("target", metavar="POOL|MODEL")
        p.add_argument("size", metavar="SIZE", help=what)
        p.add_argument("--wait", type=float, default=5.0,
                       help="seconds to wait for the engine to apply it (0: do not wait; default 5)")
    un = ctl_sub.add_parser("unlimit", help="remove a pool's limit")
    un.add_argument("target", metavar="POOL|MODEL")
    un.add_argument("--wait", type=float, default=5.0)
    watch = ctl_sub.add_parser("watch", help="print the pools every --interval seconds until Ctrl-C")
    watch.add_argument("--interval", type=float, default=1.0)
    watch.add_argument("--count", type=int, default=0, help="stop after this many tables (0: never)")


def table(pools: list[Record]) -> str:
    rows = [COLUMNS] + [(p.name, short_model(p.model), str(p.pid), p.device,
                         format_size(p.mapped), format_size(p.used), format_size(p.retained), format_size(p.limit),
                         format_size(p.min), format_size(p.capacity)) for p in pools]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def as_json(pool: Record) -> dict:
    d = pool.as_dict()
    d.pop("pages")  # the page map is for `kvlab top --json`; here it would drown the sizes
    return d


def _describe(pool: Record) -> str:
    return (f"{pool.name}: limit {format_size(pool.control.limit)} (enforced {format_size(pool.limit)}), "
            f"min {format_size(pool.control.min)}, mapped {format_size(pool.mapped)}")


def _change(args) -> int:
    wait = max(0.0, args.wait)
    code = 0
    try:
        if args.ctl == "unlimit" or (args.ctl == "limit" and args.size.strip().lower() == "none"):
            limits.unlimit(args.target, wait=wait)
        elif args.ctl == "limit":
            limits.set_limit(args.target, args.size, wait=wait)
        else:
            limits.set_min(args.target, args.size, wait=wait)
    except TimeoutError as e:  # written, but the owner has not acknowledged it (yet)
        print(f"kvlab ctl: requested, but {e}; is the engine stuck?", file=sys.stderr)
        code = 3
    for pool in limits.pools_of(args.target):
        print(_describe(pool))
    return code


def main(args: argparse.Namespace) -> int:
    try:
        if args.ctl == "list":
            pools = limits.list_pools()
            if args.json:
                print(json.dumps([as_json(p) for p in pools], indent=2))
            else:
                print(table(pools) if pools else "no live pools")
            return 0
        if args.ctl == "watch":
            if not args.interval > 0:
                raise ValueError("--interval must be positive")
            n = 0
            try:
                while True:
                    pools = limits.list_pools()
                    print(time.strftime("%H:%M:%S"), f"{len(pools)} pool(s)")
                    print(table(pools) if pools else "no live pools", flush=True)
                    n += 1
                    if args.count and n >= args.count:
                        return 0
                    time.sleep(args.interval)
            except KeyboardInterrupt:
                return 0
        return _change(args)
    except (RegistryError, ValueError, LookupError) as e:
        print(f"kvlab ctl: {e}", file=sys.stderr)
        return 2
