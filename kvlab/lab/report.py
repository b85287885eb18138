"""A Result as pictures: plotly figures (interactive, for notebooks and the HTML report) and the same
two charts as PNGs drawn with matplotlib (kaleido would need a Chrome; matplotlib needs nothing).

memory: each setup's server memory over time (MultiModel: one stacked area per model, the pools'
mapped bytes when the engines publish them, else each server's memory), with a marker per burst;
latency: TTFT and end-to-end latency per setup and server.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from kvlab.units import MiB


def _memory_series(result) -> list[tuple[str, str, str, object]]:
    """(setup, server key, label, DataFrame t/value in MiB) for the memory chart."""
    out = []
    for setup in result.setups:
        for srv in setup["servers"]:
            s = result.series(setup["name"], "mem", srv["key"])
            if result.kind == "MultiModel":  # a model's own pool, where it has one, rather than its processes
                kv = result.series(setup["name"], "kv_mapped", srv["key"])
                if not kv.empty:
                    s = kv
            s = s.assign(value=s["value"] / MiB)
            label = srv["key"] if result.kind == "MultiModel" else setup["name"]
            out.append((setup["name"], srv["key"], label, s))
    return out


def _kv_series(result) -> list[tuple[str, object]]:
    """(setup, t/value in MiB) of the pools' mapped bytes, for setups whose engine has a kvlab pool
    (the second panel of the ElasticVsStatic chart: RSS moves little next to a 1 GiB baseline)."""
    if result.kind == "MultiModel":
        return []
    out = []
    for setup in result.setups:
        for srv in setup["servers"]:
            s = result.series(setup["name"], "kv_mapped", srv["key"])
            if not s.empty:
                out.append((setup["name"], s.assign(value=s["value"] / MiB)))
    return out


def _memory_title(result) -> str:
    if result.kind == "MultiModel":
        has_kv = any(not result.series(s["name"], "kv_mapped", v["key"]).empty
                     for s in result.setups for v in s["servers"])
        return "KV memory mapped per model (kvlab registry)" if has_kv else "memory per model"
    return "engine memory over time"


def _bursts(result, setup: str):
    ev = result.events[result.events["setup"] == setup]
    return ev[ev["label"].str.startswith("burst")]


def plotly_figures(result) -> dict:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    stacked = result.kind == "MultiModel"
    kv = _kv_series(result)
    rows = 2 if kv else 1
    mem = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=(_memory_title(result), "KV mapped by the kvlab pool (registry)")[:rows])
    for setup, key, label, s in _memory_series(result):
        mem.add_trace(go.Scatter(x=s["t"], y=s["value"], name=label, mode="lines", legendgroup=label,
                                 stackgroup="models" if stacked else None, line=dict(width=1.5)), 1, 1)
    for setup, s in kv:
        mem.add_trace(go.Scatter(x=s["t"], y=s["value"], name=f"{setup} KV", mode="lines", legendgroup=setup,
                                 line=dict(width=1.5, dash="dash")), 2, 1)
    for setup in result.setups:
        for _, ev in _bursts(result, setup["name"]).iterrows():
            mem.add_vline(x=ev["t"], line=dict(dash="dot", width=1, color="gray"))
            mem.add_annotation(x=ev["t"], y=1.0, yref="paper", text=ev["label"].replace("burst ", "b"),
                               showarrow=False, font=dict(size=9), textangle=-90, xanchor="left", yanchor="top")
        if not stacked:
            break  # setups run one after another, each on its own clock: one set of markers is enough
    mem.update_layout(height=350 * rows + 100, template="plotly_white", hovermode="x unified")
    mem.update_xaxes(title_text="seconds since the setup was ready", row=rows, col=1)
    for r in range(1, rows + 1):
        mem.update_yaxes(title_text="MiB", row=r, col=1)
    if kv:
        mem.update_yaxes(rangemode="tozero", row=2, col=1)
    lat = make_subplots(rows=1, cols=2, subplot_titles=("time to first token (ms)", "end-to-end latency (ms)"))
    palette = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3")
    for i, (name, group) in enumerate(_latency_groups(result)):
        color = palette[i % len(palette)]  # one colour per server in both panels
        lat.add_trace(go.Box(y=group["ttft"] * 1000, name=name, legendgroup=name, boxpoints="outliers",
                             marker_color=color), 1, 1)
        lat.add_trace(go.Box(y=group["e2e"] * 1000, name=name, legendgroup=name, showlegend=False,
                             boxpoints="outliers", marker_color=color), 1, 2)
    lat.update_layout(title="latency per request", template="plotly_white")
    return {"memory": mem, "latency": lat}


def _latency_groups(result) -> list[tuple[str, object]]:
    """(label, successful requests) per server, in setup and server order (the memory chart's order)."""
    req = result.requests
    if not len(req):
        return []
    ok = req[req["status"] == "ok"]
    out = []
    for s in result.setups:
        for v in s["servers"]:
            group = ok[(ok["setup"] == s["name"]) & (ok["url"] == v["url"])]
            if len(group):
                out.append((v["key"] if result.kind == "MultiModel" else s["name"], group))
    return out


def write_html(result, path: Path, table=None) -> None:
    """One self-contained page: metadata, summary table, both figures (plotly.js embedded once).
    ``table``: ``result.summary()`` if the caller already has it."""
    import plotly.io as pio

    table = result.summary() if table is None else table
    figs = plotly_figures(result)
    parts = [pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figs.values())]
    summary = table.to_html(float_format=lambda v: f"{v:,.1f}", na_rep="", index=False)
    errors = "".join(f"<p class=err><b>{html.escape(s['name'])} failed:</b> {html.escape(str(s['error']))}</p>"
                     for s in result.setups if s.get("error"))
    meta = html.escape(json.dumps(result.meta, indent=2, default=str))
    sources = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                      for k, v in table.attrs.get("sources", {}).items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>kvlab {result.kind}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}} .err{{color:#b00}} pre{{font-size:11px}}</style>
</head><body><h1>kvlab {html.escape(result.kind)}</h1>{errors}<h2>Summary</h2>{summary}
<ul>{sources}</ul>
{''.join(parts)}<h2>Setup</h2><pre>{meta}</pre></body></html>"""
    path.write_text(page)


def write_pngs(result, folder: Path) -> list[Path]:
    # Figure without pyplot: no backend is chosen or switched (a notebook's inline backend stays).
    from matplotlib.figure import Figure

    paths = []
    kv = _kv_series(result)
    fig = Figure(figsize=(9, 7 if kv else 4.5), dpi=110)
    axs = fig.subplots(2 if kv else 1, 1, sharex=True, squeeze=False)[:, 0]
    ax = axs[0]
    series = _memory_series(result)
    if result.kind == "MultiModel" and series:
        import numpy as np

        grid = np.unique(np.concatenate([s["t"].to_numpy() for *_, s in series]))
        ys = [np.interp(grid, s["t"], s["value"]) if len(s) else np.zeros_like(grid) for *_, s in series]
        ax.stackplot(grid, ys, labels=[label for _, _, label, _ in series], alpha=0.8)
    else:
        for _, _, label, s in series:
            ax.plot(s["t"], s["value"], label=label, linewidth=1.5)
    for setup, s in kv:
        axs[1].plot(s["t"], s["value"], label=f"{setup} KV", linestyle="--", linewidth=1.5)
    for setup in result.setups:
        for _, ev in _bursts(result, setup["name"]).iterrows():
            for a in axs:
                a.axvline(ev["t"], color="gray", linestyle=":", linewidth=1)
        if result.kind != "MultiModel":
            break
    ax.set(title=_memory_title(result), ylabel="MiB")
    if kv:
        axs[1].set(title="KV mapped by the kvlab pool (registry)", ylabel="MiB")
        axs[1].set_ylim(bottom=0)
    axs[-1].set_xlabel("seconds since the setup was ready")
    for a in axs:
        a.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    paths.append(folder / "memory.png")
    fig.savefig(paths[-1])

    fig = Figure(figsize=(9, 4), dpi=110)
    axes = fig.subplots(1, 2)
    groups = _latency_groups(result)
    labels = [label for label, _ in groups]
    for ax, col, title in ((axes[0], "ttft", "time to first token (ms)"), (axes[1], "e2e", "end-to-end (ms)")):
        if groups:
            ax.boxplot([g[col].to_numpy() * 1000 for _, g in groups])
            ax.set_xticks(range(1, len(labels) + 1), labels)  # boxplot's labels= was renamed in 3.9
        ax.set_title(title)
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    paths.append(folder / "latency.png")
    fig.savefig(paths[-1])
    return paths
