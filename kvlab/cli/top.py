"""`kvlab top`: the pools of every device, live in the terminal (rich), or once as JSON for scripts.

    kvlab top [--interval 1.0]          live view until Ctrl-C
    kvlab top --once [--json]           one sample (rates over a short second sample)

Per device: its memory (NVML on NVIDIA GPUs; MemTotal/MemAvailable for the host) and its pools, each
with a bar (used, partly used chunks' free blocks, retained free chunks, and the rest up to its limit),
mapped/limit/min, a compact page map (each cell the busiest state of its pages: used, mapped,
unmapped) and map/unmap rates in pages per second. The samples come from kvlab.pools.PoolSampler (the
registry and NVML only: safe next to running engines).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from kvlab.pools import PoolSampler
from kvlab.registry import PageState, RegistryError
from kvlab.registry.names import short_model
from kvlab.units import format_size

PAGE_CHARS = {PageState.UNMAPPED: "·", PageState.MAPPED: "▒", PageState.USED: "█"}


def add_parser(sub) -> None:
    top = sub.add_parser("top", help="live view of every pool and device (rich), or --once --json")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    top.add_argument("--once", action="store_true", help="print one sample and exit")
    top.add_argument("--json", action="store_true", help="JSON instead of tables (one document per sample)")
    top.add_argument("--map-width", type=int, default=24, help="cells of the compact page map (default 24)")
    top.add_argument("--url", default=None, help="a `kvlab serve` endpoint: show its pools, read from its "
                                                 "event stream (remote machines too)")




class Remote:
    """The samples of a `kvlab serve` endpoint's ``/kvlab/events`` stream (same shape as PoolSampler's)."""

    def __init__(self, url: str, interval: float):
        import httpx

        self._cm = httpx.stream("GET", f"{url.rstrip('/')}/kvlab/events", params={"interval": interval},
                                timeout=httpx.Timeout(30.0), trust_env=False)
        self._lines = self._cm.__enter__().iter_lines()

    def sample(self) -> dict:
        for line in self._lines:
            if line.startswith("data: "):
                return json.loads(line[6:])
        raise RegistryError("the endpoint closed its event stream")

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


# ---- rendering ----------------------------------------------------------------------------------------

def page_map(pages: str, width: int) -> str:
    """The page states (a digit string, one per page) in ``width`` cells, each its pages' busiest state."""
    if not pages:
        return ""
    states = np.frombuffer(pages.encode("ascii"), dtype=np.uint8) - ord("0")
    cells = min(width, len(states))
    edges = np.linspace(0, len(states), cells + 1).astype(int)
    busiest = np.minimum(np.maximum.reduceat(states, edges[:-1]), PageState.USED)  # any group's page is in use
    return "".join(PAGE_CHARS.get(int(s), "?") for s in busiest)


def used_text(p: dict) -> str:
    """Bytes in use; for hybrid models (pages marked USED + group) also the pages each KV cache group holds."""
    states = np.frombuffer(p["pages"].encode("ascii"), dtype=np.uint8) - ord("0")
    groups = np.bincount(states[states >= PageState.USED] - PageState.USED) if len(states) else []
    text = format_size(p["used"])
    if len(groups) > 1:
        text += " (" + " ".join(f"g{g}:{int(n)}p" for g, n in enumerate(groups)) + ")"
    return text


def bar(pool: dict, width: int = 24) -> str:
    """used █, free blocks of partly used chunks ▓, retained free chunks ▒, room up to the limit ·."""
    scale = max(pool["limit"] or 0, pool["mapped"], pool["min"], 1)
    used = pool["used"]
    retained = pool["retained"]
    partial = max(0, pool["mapped"] - used - retained)
    cells = [round(x * width / scale) for x in (used, partial, retained)]
    rest = max(0, width - sum(cells)) if pool["limit"] else 0
    return ("█" * cells[0] + "▓" * cells[1] + "▒" * cells[2] + "·" * rest)[:width]


STALLED = 5.0  # seconds without a heartbeat (owners beat every second) before a pool is marked stalled


def _pid(p: dict) -> str:
    return f"{p['pid']} stalled" if p["heartbeat_age"] > STALLED else str(p["pid"])


def _limit(p: dict) -> str:
    """The limit enforced; with what was asked when that differs (raised to one request, or not applied yet)."""
    asked = p["control"]["limit"]
    text = format_size(p["limit"])
    if asked != p["limit"]:
        text += f" (asked {format_size(asked)}{'' if p['control_ack'] >= p['control']['revision'] else ', pending'})"
    return text


def _mapped(p: dict) -> str:
    """The engine's mapped bytes; for a tensor-parallel engine (one pool, several ranks) also each rank's."""
    ranks = p.get("ranks", 1)
    text = format_size(p["mapped"])
    return text if ranks <= 1 else f"{text} = {ranks}x{format_size(p['rank_mapped'][0])}"


def _rate(r: float | None) -> str:
    return "-" if r is None else f"{r:.0f}"


def render(snapshot: dict, map_width: int = 24):
    from rich.console import Group

    by_device: dict[str, list[dict]] = {}
    for p in snapshot["pools"]:
        by_device.setdefault(p["device_key"], []).append(p)
    tables = []
    for key, dev in snapshot["devices"].items():
        pools = by_device.pop(key, [])
        if key == "cpu" and not pools and len(snapshot["devices"]) > 1:
            continue  # on a GPU machine the host matters only when it serves a pool
        tables.append(_device_table(key, dev, pools, map_width))
    for key, pools in by_device.items():  # pools on devices this machine cannot see (another host's GPU)
        tables.append(_device_table(key, None, pools, map_width))
    if not snapshot["pools"]:
        tables.append("no live pools (elastic engines publish theirs while they run)")
    return Group(*tables)


def _device_table(key: str, dev: dict | None, pools: list[dict], map_width: int):
    from rich.table import Table

    if dev is not None:
        title = (f"{key} ({dev.get('name', '')})  {format_size(dev['used'])} / {format_size(dev['total'])} used"
                 f"  [{dev['source']}]")
    else:
        title = f"{key}  (not visible here)"
    t = Table(title=title, title_justify="left", expand=False, pad_edge=False, box=None, header_style="bold")
    # In a narrow terminal the other columns give way: a pool's name is what `kvlab ctl` needs.
    t.add_column("pool", no_wrap=True, min_width=max((len(p["name"]) for p in pools), default=4))
    for col in ("model", "pid", "memory", "used", "mapped", "limit", "min", "pages", "map/s", "unmap/s"):
        t.add_column(col, no_wrap=True, overflow="ellipsis")
    for p in sorted(pools, key=lambda p: p["name"]):
        t.add_row(p["name"], short_model(p["model"])[:20], _pid(p), bar(p, 16),
                  used_text(p), _mapped(p), _limit(p), format_size(p["min"]),
                  page_map(p["pages"], map_width), _rate(p["map_rate"]), _rate(p["unmap_rate"]))
    return t


# ---- entry --------------------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> int:
    if not args.interval > 0 or args.map_width < 1:
        print("kvlab top: --interval and --map-width must be positive", file=sys.stderr)
        return 2
    try:
        sampler = Remote(args.url, args.interval) if args.url else PoolSampler()
    except Exception as e:  # httpx's errors: no endpoint there
        if not args.url:
            raise
        print(f"kvlab top: cannot read {args.url}/kvlab/events: {e}", file=sys.stderr)
        return 2
    pause = (lambda _: None) if args.url else time.sleep  # the endpoint's stream sets the pace
    try:
        if args.once:
            sampler.sample()
            pause(min(args.interval, 0.5))  # a second sample, for the rates
            snap = sampler.sample()
            if args.json:
                print(json.dumps(snap, indent=2))
            else:
                from rich.console import Console

                console = Console()
                if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
                    console = Console(width=160)
                console.print(render(snap, args.map_width))
            return 0
        if args.json:
            while True:
                print(json.dumps(sampler.sample()), flush=True)
                pause(args.interval)
        from rich.live import Live

        with Live(render(sampler.sample(), args.map_width), auto_refresh=False, screen=False) as live:
            while True:
                pause(args.interval)
                live.update(render(sampler.sample(), args.map_width), refresh=True)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `kvlab top --json | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except RegistryError as e:
        print(f"kvlab top: {e}", file=sys.stderr)
        return 2
    finally:
        sampler.close()
