"""Table and plots for the README from the saved GPU results (no GPU needed).

    python benchmarks/report_gpu.py   # prints a Markdown table, writes docs/img/gpu_serving.png and gpu_growth.png

Reads benchmarks/results/gpu_serving_single_h100.json, gpu_serving_multi2_h100.json, gpu_growth_h100.json and,
where they exist, the three-model runs (gpu_serving_multi3_*) and the paired overhead runs (serving_overhead_*).
Every figure printed comes from those files; spreads are min-max over the repeats recorded there, and the
paired overhead runs also get the mean per-round ratio to static with its 95% interval.
"""

from __future__ import annotations

import json
from pathlib import Path

from stats import mean_interval, paired_ratios

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
IMG = ROOT / "docs" / "img"
NAMES = {"static": "static vLLM", "kvcached": "kvcached 0.1.6", "elastic": "kvlab"}


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def serving_table(data: dict) -> str:
    lines = ["| system | idle VRAM after start | idle VRAM after bursts | first burst TTFT p99 | later bursts TTFT p99 "
             "| saturation tok/s (min-max) | steady TTFT p50 / p99 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in data["rows"]:
        if "error" in r and r["error"]:
            lines.append(f"| {NAMES[r['system']]} | failed: {r['error'][:80]} | | | | | |")
            continue
        bursts = r["burst_onset"]
        sat = [s["output_tok_s"] for s in r["saturation"]]
        lines.append(
            f"| {NAMES[r['system']]} | {r['idle_after_start_mib']:.0f} MiB | {r['idle_after_burst_mib']:.0f} MiB "
            f"| {bursts[0]['ttft_p99'] * 1000:.0f} ms | "
            + ", ".join(f"{b['ttft_p99'] * 1000:.0f}" for b in bursts[1:]) + " ms "
            f"| {r['saturation_output_tok_s']:.0f} ({min(sat):.0f}-{max(sat):.0f}) "
            f"| {r['steady_ttft_p50'] * 1000:.1f} / {r['steady_ttft_p99'] * 1000:.1f} ms |")
    return "\n".join(lines)


def multi_table(data: dict) -> str:
    """Benchmark 5: N models, alternating bursts; static vLLM gets an even split of the utilisation."""
    lines = ["| system | util per model | idle VRAM (all models) | peak VRAM | TTFT p99 per model | TTFT p99 all |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in data["rows"]:
        if r.get("error"):
            lines.append(f"| {NAMES[r['system']]} | failed: {r['error'][:80]} | | | | |")
            continue
        per = ", ".join(f"{s['ttft_p99'] * 1000:.0f}" for _, s in sorted(r["per_model"].items()))
        lines.append(f"| {NAMES[r['system']]} | {r['util_each']:.2f} | {r['idle_mib']:.0f} MiB "
                     f"| {r['peak_mib']:.0f} MiB | {per} ms | {r['all']['ttft_p99'] * 1000:.0f} ms |")
    bursts = burst_table(data)
    return "\n".join(lines) + (f"\n\nTTFT p99 of each burst, in the order sent:\n{bursts}" if bursts else "")


def burst_table(data: dict) -> str:
    """Benchmark 5 burst by burst, where the results record it (runs after 2026-11-24): which bursts are slow."""
    rows = [r for r in data["rows"] if r.get("per_burst")]
    if not rows:
        return ""

    def cell(r, i):
        b = r["per_burst"][i] if i < len(r["per_burst"]) else {}
        return "-" if b.get("ttft_p99") is None else f"{b['ttft_p99'] * 1000:.0f} ms"

    lines = ["| burst | model | " + " | ".join(NAMES[r["system"]] for r in rows) + " |",
             "| --- | --- |" + " --- |" * len(rows)]
    for i, b in enumerate(rows[0]["per_burst"]):
        lines.append(f"| {b['phase']} | {b['model']} | " + " | ".join(cell(r, i) for r in rows) + " |")
    return "\n".join(lines)


def overhead_table(data: dict) -> str:
    """Benchmark 2, paired (serving_overhead.py): medians (min-max) over rounds, and per-round ratios to static."""
    def span(d, scale=1.0, fmt=".0f"):
        if d.get("median") is None:
            return "-"
        return f"{d['median'] * scale:{fmt}} ({d['min'] * scale:{fmt}}-{d['max'] * scale:{fmt}})"

    lines = ["| system | saturation tok/s | vs static | steady TTFT p50 ms | vs static | TTFT p99 ms |",
             "| --- | --- | --- | --- | --- | --- |"]
    for system, r in data["summary"].items():
        lines.append(f"| {NAMES[system]} | {span(r['output_tok_s'])} "
                     f"| {span(r.get('output_tok_s_vs_static', {}), 1, '.3f')} "
                     f"| {span(r['ttft_p50'], 1000, '.1f')} | {span(r.get('ttft_p50_vs_static', {}), 1, '.3f')} "
                     f"| {span(r['ttft_p99'], 1000, '.1f')} |")
    return "\n".join(lines)


# The paired overhead runs measured the same way (full decode CUDA graphs), pooled for the interval.
OVERHEAD_DECODE = ("serving_overhead_h100.json", "serving_overhead_decode256_h100.json")
OVERHEAD_EAGER = ("serving_overhead_eager_h100.json", "serving_overhead_eager_kvcached_h100.json",
                  "serving_overhead_eager_h100-first.json")


def overhead_intervals(datasets: list[dict]) -> str:
    """Per system: the mean of its per-round ratios to static over the runs, with a 95% interval."""
    rounds = [r for data in datasets for r in data["rounds"]]
    lines = []
    for system in ("kvcached", "elastic"):
        cells = []
        for label, part, field in (("throughput", "saturation", "output_tok_s"), ("TTFT p50", "steady", "ttft_p50")):
            m = mean_interval(paired_ratios(rounds, system, part, field))
            if m["low"] is not None:
                cells.append(f"{label} {m['mean']:.3f} (95% {m['low']:.2f}-{m['high']:.2f}, {m['n']} rounds)")
        if cells:
            lines.append(f"- {NAMES[system]} vs static: " + "; ".join(cells))
    return "\n".join(lines)


def growth_table(data: dict) -> str:
    lines = ["| geometry | system | grow GiB/s (min-max) | shrink GiB/s (min-max) |", "| --- | --- | --- | --- |"]
    for r in data["rows"]:
        if "error" in r:
            lines.append(f"| {r['geometry']} | {r['system']} | not measured (see notes) | |")
            continue
        g, s = r["grow"], r["shrink"]
        lines.append(f"| {r['geometry']} | {r['system']} | {g['median']:.1f} ({g['min']:.1f}-{g['max']:.1f}) "
                     f"| {s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f}) |")
    return "\n".join(lines)


def plots(serving: dict, growth: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    rows = [r for r in serving["rows"] if not r.get("error")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    labels = [NAMES[r["system"]] for r in rows]
    colors = {"static": "#888", "kvcached": "#c85", "elastic": "#38a"}
    axes[0].bar(labels, [r["idle_after_burst_mib"] / 1024 for r in rows], color=[colors[r["system"]] for r in rows])
    axes[0].set_ylabel("GiB over the device baseline")
    axes[0].set_title("idle VRAM after bursts")
    axes[0].set_yscale("log")
    for k, r in enumerate(rows):
        axes[1].plot(range(len(r["burst_onset"])), [b["ttft_p99"] * 1000 for b in r["burst_onset"]], "o-",
                     label=labels[k])
    axes[1].set_xlabel("burst (after idle)")
    axes[1].set_ylabel("TTFT p99 (ms)")
    axes[1].set_title("burst onset")
    axes[1].legend()
    sat = [[s["output_tok_s"] for s in r["saturation"]] for r in rows]
    axes[2].boxplot(sat, tick_labels=labels)
    axes[2].set_ylabel("output tokens/s")
    axes[2].set_title("saturation (3 repeats)")
    graphs = serving["config"].get("graphs") or ("eager" if serving["config"].get("eager") else "compile")
    fig.suptitle(f"vLLM {serving['versions']['vllm']}, Qwen2.5-0.5B shape, H100, {graphs}", fontsize=10)
    fig.tight_layout()
    out1 = IMG / "gpu_serving.png"
    fig.savefig(out1, dpi=90)
    plt.close(fig)

    ok = [r for r in growth["rows"] if "error" not in r]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    names = [f"{r['system']}\n{r['geometry']}" if r["system"] != "floor" else "driver floor" for r in ok]
    x = range(len(ok))
    ax.bar([i - 0.2 for i in x], [r["grow"]["median"] for r in ok], 0.4, label="grow")
    ax.bar([i + 0.2 for i in x], [r["shrink"]["median"] for r in ok], 0.4, label="shrink")
    ax.set_xticks(list(x), names, fontsize=8)
    ax.set_ylabel("GiB/s")
    ax.set_title("KV pool growth and shrink, 2 MiB pages, H100", fontsize=10)
    ax.legend()
    fig.tight_layout()
    out2 = IMG / "gpu_growth.png"
    fig.savefig(out2, dpi=90)
    plt.close(fig)
    return [out1, out2]


def main() -> None:
    serving, growth = _load("gpu_serving_single_h100.json"), _load("gpu_growth_h100.json")
    print(serving_table(serving))
    print()
    print(multi_table(_load("gpu_serving_multi2_h100.json")))
    print()
    print(growth_table(growth))
    # Later runs, printed where their results exist: three models, and the paired overhead benchmark.
    multi3 = ("gpu_serving_multi3_h100.json", "gpu_serving_multi3_eager_h100.json")
    for name, table in [(n, multi_table) for n in multi3] + [(n, overhead_table) for n in OVERHEAD_DECODE + OVERHEAD_EAGER]:
        if (RESULTS / name).exists():
            print(f"\n{name}:")
            print(table(_load(name)))
    for label, names in (("full decode CUDA graphs", OVERHEAD_DECODE), ("eager", OVERHEAD_EAGER)):
        found = [_load(n) for n in names if (RESULTS / n).exists()]
        if found:
            print(f"\npaired overhead, {label}, all rounds of {len(found)} run(s):")
            print(overhead_intervals(found))
    for p in plots(serving, growth):
        print(f"wrote {p.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
