// LatencyView view: per model, histograms of TTFT and end-to-end latency on a shared log axis, with
// p50/p90/p99 marked and listed. The kernel sends bin counts (uint32) and percentiles, never samples.

import { redrawOnChange } from "./frames.js";

const PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#0891b2", "#db2777", "#65a30d"];
const METRICS = [["ttft", "time to first token"], ["e2e", "end-to-end"]];
const W = 360, ROW_H = 34;

function u32(v) {
  if (!v || !v.byteLength) return new Uint32Array(0);
  const u8 = ArrayBuffer.isView(v) ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength) : new Uint8Array(v);
  return new Uint32Array(u8.slice(0, u8.byteLength - (u8.byteLength % 4)).buffer); // aligned copy
}

export function fmtSec(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "–";
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1e3).toFixed(s < 0.01 ? 1 : 0)} ms`;
  return `${s.toFixed(s < 10 ? 2 : 1)} s`;
}

function table(models, stats) {
  const t = document.createElement("table");
  t.className = "kvlab-lat-table";
  const head = ["model", "requests", ...METRICS.flatMap(([m]) => ["p50", "p90", "p99"].map((p) => `${m} ${p}`))];
  t.innerHTML = `<thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead>`;
  const body = document.createElement("tbody");
  models.forEach((name, i) => {
    const s = stats[name] ?? {};
    const tr = document.createElement("tr");
    tr.dataset.model = name;
    const cells = [name, String(s.n ?? 0), ...METRICS.flatMap(([m]) => (s[m] ?? [null, null, null]).map(fmtSec))];
    cells.forEach((c, j) => {
      const td = document.createElement("td");
      if (j === 0) td.innerHTML = `<i style="background:${PALETTE[i % PALETTE.length]}"></i>`;
      td.append(c);
      tr.appendChild(td);
    });
    body.appendChild(tr);
  });
  t.appendChild(body);
  return t;
}

function drawHist(canvas, counts, edges, lo, hi, pcts, color) {
  const dpr = window.devicePixelRatio || 1;
  canvas.width = W * dpr; canvas.height = ROW_H * dpr;
  canvas.style.width = `${W}px`; canvas.style.height = `${ROW_H}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const x = (s) => ((Math.log10(s) - lo) / (hi - lo)) * W;
  const peak = Math.max(1, ...counts);
  ctx.fillStyle = color;
  counts.forEach((c, b) => {
    if (!c) return;
    const h = Math.max(1, (c / peak) * (ROW_H - 4));
    ctx.fillRect(x(edges[b]), ROW_H - h, Math.max(1, x(edges[b + 1]) - x(edges[b]) - 1), h);
  });
  ctx.strokeStyle = getComputedStyle(canvas).color || "#333";
  [[], [3, 2], [1, 2]].forEach((dash, i) => { // p50 solid, p90 dashed, p99 dotted
    if (!pcts || !Number.isFinite(pcts[i]) || pcts[i] <= 0) return;
    ctx.setLineDash(dash);
    ctx.beginPath(); ctx.moveTo(x(pcts[i]), 0); ctx.lineTo(x(pcts[i]), ROW_H); ctx.stroke();
  });
  ctx.setLineDash([]);
}

function draw(root, model) {
  const models = model.get("models") ?? [];
  const edges = model.get("edges") ?? [];
  const stats = model.get("stats") ?? {};
  const nb = Math.max(0, edges.length - 1);
  const hist = u32(model.get("hist"));
  root.replaceChildren(table(models, stats));
  // Shared x range: the occupied bins of every model and metric, so rows compare at a glance.
  let first = nb, last = -1;
  for (let i = 0; i < hist.length; i++) if (hist[i]) { first = Math.min(first, i % nb); last = Math.max(last, i % nb); }
  if (last < 0 || !nb) return;
  const lo = Math.log10(edges[Math.max(0, first - 1)]), hi = Math.log10(edges[Math.min(nb, last + 2)]);
  METRICS.forEach(([metric, label], j) => {
    const panel = document.createElement("div");
    panel.className = "kvlab-lat-panel";
    panel.dataset.metric = metric;
    panel.innerHTML = `<div class="kvlab-title">${label} <small>(p50 solid, p90 dashed, p99 dotted)</small></div>`;
    models.forEach((name, i) => {
      const row = document.createElement("div");
      row.className = "kvlab-lat-row";
      const tag = document.createElement("span");
      tag.textContent = name;
      const canvas = document.createElement("canvas");
      canvas.dataset.model = name;
      const off = (i * METRICS.length + j) * nb;
      drawHist(canvas, hist.subarray(off, off + nb), edges, lo, hi, (stats[name] ?? {})[metric], PALETTE[i % PALETTE.length]);
      row.append(tag, canvas);
      panel.appendChild(row);
    });
    const axis = document.createElement("div");
    axis.className = "kvlab-lat-axis";
    axis.innerHTML = `<span>${fmtSec(10 ** lo)}</span><span>${fmtSec(10 ** hi)}</span>`;
    panel.appendChild(axis);
    root.appendChild(panel);
  });
}

function render({ model, el }) {
  el.classList.add("kvlab-lat");
  const root = document.createElement("div");
  el.appendChild(root);
  // One rebuild per animation frame: a message sets models, hist and stats together.
  return redrawOnChange(model, ["models", "edges", "hist", "stats"], () => draw(root, model),
    () => el.replaceChildren());
}

export default { render };
