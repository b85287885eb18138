"""`kvlab top`: the pools of every device, live in the terminal (rich), or once as JSON for scripts.

    kvlab top [--interval 1.0]          live view until Ctrl-C
    kvlab top --once [--json]           one sample (rates over a short second sample)

Per device: its memory (NVML on NVIDIA GPUs; MemTotal/MemAvailable for the host) and its pools, each
with a bar (used, partly used chunks' free blocks, retained free chunks, and the rest up to its limit),
mapped/limit/min, a compact page map (each cell the busiest state of its pages: used, mapped,
unmapped) and map/unmap rates in pages per second. Reads only the registry and NVML: it never imports
torch and never creates a CUDA context, so it is safe next to running engines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from kvlab import limits
from kvlab.meminfo import host_memory
from kvlab.nvml import Nvml
from kvlab.registry import PageState, Record, RegistryError
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


# ---- devices: NVML and /proc, never torch ---------------------------------------------------------------

class Devices:
    def __init__(self):
        self._nv = Nvml.open()  # None without nvidia-ml-py, a driver or a GPU: the host is still shown

    def sample(self) -> dict[str, dict]:
        out = {"cpu": _host()}
        for i in range(len(self._nv) if self._nv is not None else 0):
            try:
                reading = self._nv.memory(i)
                out[f"cuda:{i}"] = {"total": reading.total, "used": reading.used, "source": "nvml",
                                    "uuid": self._nv.uuid(i), "name": self._nv.name(i)}
            except Exception:  # a device that fell off the bus: show the others
                continue
        return out

    def close(self) -> None:
        if self._nv is not None:
            self._nv.close()


def _host() -> dict:
    reading = host_memory()
    return {"total": reading.total, "used": reading.used, "source": "meminfo", "name": "host"}


def _device_of(rec: Record, devices: dict[str, dict]) -> str:
    if rec.device_uuid:
        for key, d in devices.items():
            if d.get("uuid") == rec.device_uuid:
                return key
    return rec.device or "cpu"


# ---- samples ------------------------------------------------------------------------------------------

class TopSampler:
    """Samples the registry and the devices; map/unmap rates from the previous sample of each pool."""

    def __init__(self):
        self.devices = Devices()
        self._prev: dict[str, tuple[float, int, int, int]] = {}

    def sample(self) -> dict:
        now = time.monotonic()
        devices = self.devices.sample()
        pools = []
        seen = {}
        for rec in limits.list_pools():
            d = rec.as_dict()
            d["device_key"] = _device_of(rec, devices)
            d["heartbeat_age"] = rec.heartbeat_age
            prev = self._prev.get(rec.name)
            if prev is not None and prev[3] == rec.start_ticks and now > prev[0]:
                dt = now - prev[0]
                d["map_rate"] = (rec.n_maps - prev[1]) / dt
                d["unmap_rate"] = (rec.n_unmaps - prev[2]) / dt
            else:
                d["map_rate"] = d["unmap_rate"] = None
            seen[rec.name] = (now, rec.n_maps, rec.n_unmaps, rec.start_ticks)
            pools.append(d)
        self._prev = seen
        return {"time": time.time(), "devices": devices, "pools": pools}

    def close(self) -> None:
        self.devices.close()


class Remote:
    """The samples of a `kvlab serve` endpoint's ``/kvlab/events`` stream (same shape as TopSampler's)."""

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
        sampler = Remote(args.url, args.interval) if args.url else TopSampler()
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
