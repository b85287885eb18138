"""Result: what an experiment measured — timeline, events, requests, metadata — and how to read it.

``summary()`` is one row per setup and server; ``figures()`` are plotly figures; ``save(dir)`` writes
result.json + Parquet tables + report.html (plotly embedded: opens offline) + PNGs (matplotlib, so
no browser is needed), all into a temporary folder that is renamed into place at the end: a folder
that exists is always complete. ``Result.load(dir)`` reads it back.

Memory columns (MiB) and where they come from (also in ``summary().attrs["sources"]``):
* ``idle``/``peak``/``after``/``flex``: the server's own memory — on a GPU, NVML's per-process
  memory of its processes; on the CPU, the resident set (RSS) of its process tree. ``idle`` is the
  median before the first burst, ``peak`` the maximum from the first burst to the workload's end,
  ``after`` the last sample (after the settle time), ``flex = peak - idle``.
  Where no per-process figure exists (NVML inside a container may list only the host's pids) the
  device's used memory stands in, and the ``memory source`` column says so.
* ``KV idle``/``KV peak``/``KV after``: bytes the server's kvlab pools had mapped (the registry);
  empty for engines without a kvlab pool (static, kvcached).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from kvlab.results import write_json_atomic
from kvlab.units import MiB

from . import report

FORMAT = 1
SOURCES = {
    "cpu": "RSS of the engine's process tree (/proc/PID/statm)",
    "gpu": "NVML per-process GPU memory of the engine's processes",
    "kv": "bytes mapped by the engine's kvlab pools (kvlab registry)",
    "device": "the device's used memory (no per-process figure for the engine, e.g. NVML in a container; "
              "setups run one at a time)",
}


def wide_to_long(table: pd.DataFrame, setup: str) -> pd.DataFrame:
    """Telemetry.table() (``metric:key`` columns) as rows of (setup, t, metric, key, value)."""
    cols = [c for c in table.columns if ":" in c]
    if table.empty or not cols:
        return pd.DataFrame({"setup": pd.Series(dtype=str), "t": pd.Series(dtype=float),
                             "metric": pd.Series(dtype=str), "key": pd.Series(dtype=str),
                             "value": pd.Series(dtype=float)})
    long = table[["t", *cols]].melt(id_vars="t", var_name="column", value_name="value").dropna(subset=["value"])
    split = long["column"].str.split(":", n=1, expand=True)
    out = pd.DataFrame({"setup": setup, "t": long["t"].astype(float), "metric": split[0], "key": split[1],
                        "value": long["value"].astype(float)})
    return out.sort_values(["metric", "key", "t"], kind="stable").reset_index(drop=True)


def _pct(values: pd.Series, q: float) -> float:
    values = values.dropna()
    return float(values.quantile(q)) if len(values) else math.nan


class Result:
    """What one experiment measured. ``setups``: one dict per setup (name, memory, device, servers:
    [{key, model, url, memory, pool_name}], error). ``error``: the first failure, as text, or None."""

    def __init__(self, kind: str, meta: dict, setups: list[dict], timeline: pd.DataFrame, events: pd.DataFrame,
                 requests: pd.DataFrame):
        self.kind, self.meta, self.setups = kind, meta, setups
        self.timeline, self.events, self.requests = timeline, events, requests

    @property
    def error(self) -> str | None:
        return next((s["error"] for s in self.setups if s.get("error")), None)

    @property
    def ok(self) -> bool:
        return self.error is None

    # ---- reading -------------------------------------------------------------------------------
    def series(self, setup: str, metric: str, key: str) -> pd.DataFrame:
        tl = self.timeline
        sel = tl[(tl["setup"] == setup) & (tl["metric"] == metric) & (tl["key"] == key)]
        return sel[["t", "value"]].reset_index(drop=True)

    def windows(self, setup: str) -> tuple[float | None, float | None]:
        """(first burst, workload end) times of a setup, from its events."""
        ev = self.events[self.events["setup"] == setup]
        bursts = ev[ev["label"].str.startswith("burst")]["t"]
        end = ev[ev["label"] == "workload end"]["t"]
        return (float(bursts.min()) if len(bursts) else None, float(end.max()) if len(end) else None)

    def _levels(self, setup: str, metric: str, key: str) -> dict[str, float]:
        s = self.series(setup, metric, key)
        if s.empty:
            return {"idle": math.nan, "peak": math.nan, "after": math.nan}
        first, end = self.windows(setup)
        before = s[s["t"] < first] if first is not None else s.iloc[:1]
        during = s[(s["t"] >= first) & (s["t"] <= (end if end is not None else math.inf))] \
            if first is not None else s
        idle = float(before["value"].median()) if len(before) else float(s["value"].iloc[0])
        peak = float(during["value"].max()) if len(during) else math.nan
        return {"idle": idle, "peak": peak, "after": float(s["value"].iloc[-1])}

    def _device_key(self, setup: dict) -> str | None:
        tl = self.timeline
        keys = sorted(set(tl[(tl["setup"] == setup["name"]) & (tl["metric"] == "dev_used")]["key"]))
        want = str(setup.get("device", ""))
        return want if want in keys else (keys[0] if keys else None)

    def summary(self) -> pd.DataFrame:
        """One row per setup and server: memory (MiB) and latency (ms), throughput, errors."""
        rows = []
        for setup in self.setups:
            for srv in setup["servers"]:
                mem, source = self._levels(setup["name"], "mem", srv["key"]), None
                if math.isnan(mem["idle"]):  # no per-process figure (NVML without our pids): the device's
                    dev = self._device_key(setup)
                    if dev is not None:
                        mem, source = self._levels(setup["name"], "dev_used", dev), SOURCES["device"]
                kv = self._levels(setup["name"], "kv_mapped", srv["key"])
                req = self.requests
                req = req[(req["setup"] == setup["name"]) & (req["url"] == srv["url"])] if len(req) else req
                ok = req[req["status"] == "ok"] if len(req) else req
                span = float((ok["start"] + ok["e2e"]).max() - ok["start"].min()) if len(ok) else math.nan
                row = {"setup": setup["name"], "server": srv["key"], "memory": srv["memory"],
                       "idle MiB": mem["idle"] / MiB, "peak MiB": mem["peak"] / MiB,
                       "flex MiB": (mem["peak"] - mem["idle"]) / MiB, "after MiB": mem["after"] / MiB,
                       "KV idle MiB": kv["idle"] / MiB, "KV peak MiB": kv["peak"] / MiB,
                       "KV after MiB": kv["after"] / MiB}
                for name, col in (("TTFT", "ttft"), ("e2e", "e2e")):
                    for q in (50, 90, 99):
                        row[f"{name} p{q} ms"] = _pct(ok[col], q / 100) * 1000 if len(ok) else math.nan
                row["output tok/s"] = float(ok["tokens_out"].sum()) / span if span and span > 0 else math.nan
                row["req/s"] = len(ok) / span if span and span > 0 else math.nan
                row["requests"] = int(len(req))
                row["errors"] = int((req["status"] != "ok").sum()) if len(req) else 0
                row["memory source"] = source or SOURCES["gpu" if str(setup.get("device", "cpu")).startswith("cuda")
                                                         else "cpu"]
                rows.append(row)
        df = pd.DataFrame(rows)
        df.attrs["sources"] = {"idle/peak/flex/after MiB": "see the 'memory source' column",
                               "KV * MiB": SOURCES["kv"],
                               "latency": "client-side, streamed: TTFT = first token, e2e = last byte",
                               "throughput": "successful requests' output tokens / (last end - first start)"}
        return df

    def figures(self) -> dict:
        """plotly figures: ``memory`` (over time, burst markers; stacked per model for MultiModel) and
        ``latency`` (TTFT and end-to-end distributions)."""
        return report.plotly_figures(self)

    # ---- files ---------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the result into ``directory`` (replaced if it holds an earlier result) atomically."""
        dest = Path(directory).absolute()
        if dest.exists() and any(dest.iterdir()) and not (dest / "result.json").exists():
            raise FileExistsError(f"{dest} exists and is not a kvlab result: choose another folder")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            table = self.summary()
            doc = {"format": FORMAT, "kind": self.kind, "meta": self.meta, "setups": self.setups,
                   "summary": json.loads(table.to_json(orient="records"))}
            write_json_atomic(tmp / "result.json", doc)
            self.timeline.to_parquet(tmp / "timeline.parquet", index=False)
            self.events.to_parquet(tmp / "events.parquet", index=False)
            self.requests.to_parquet(tmp / "requests.parquet", index=False)
            report.write_html(self, tmp / "report.html", table)
            report.write_pngs(self, tmp)
            if dest.exists():
                old = dest.with_name(f".{dest.name}.old-{secrets.token_hex(3)}")
                os.rename(dest, old)
                os.rename(tmp, dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Result":
        d = Path(directory)
        if not (d / "result.json").is_file():
            raise FileNotFoundError(f"{d} holds no kvlab result (no result.json)")
        doc = json.loads((d / "result.json").read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(f"{d}: result format {doc.get('format')!r}, this kvlab reads format {FORMAT}")
        return cls(doc["kind"], doc["meta"], doc["setups"], pd.read_parquet(d / "timeline.parquet"),
                   pd.read_parquet(d / "events.parquet"), _lists(pd.read_parquet(d / "requests.parquet")))

    def __repr__(self) -> str:
        names = ", ".join(s["name"] for s in self.setups)
        return f"Result({self.kind}: {names}; {len(self.requests)} requests{'; error' if self.error else ''})"

    def _repr_html_(self) -> str:
        return self.summary().to_html(float_format=lambda v: f"{v:,.1f}", na_rep="")


def _lists(df: pd.DataFrame) -> pd.DataFrame:
    """Parquet gives list columns back as numpy arrays; records hold lists."""
    if "itl" in df.columns:
        df["itl"] = df["itl"].map(lambda v: [] if v is None else [float(x) for x in v])
    return df
