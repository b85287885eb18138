// MemoryTimeline view: stacked areas of bytes per model over time, drawn by hand on a canvas.
// Data = rows of float64 [t, total, model0, model1, ...] from two traits: `base` (a snapshot of the
// window) and `tail` (all rows since it). Re-deriving from both on any change makes the view
// correct whatever message it saw last, and a view opened late needs nothing from the kernel.

import { redrawOnChange } from "./frames.js";

const PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#0891b2", "#db2777", "#65a30d"];
const W = 640, H = 240, PAD = { l: 64, r: 12, t: 18, b: 24 };

function f64(v) {
  // Copy into an aligned buffer: a DataView into a message need not start on an 8-byte boundary.
  if (!v || !v.byteLength) return new Float64Array(0);
  const u8 = ArrayBuffer.isView(v) ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength) : new Uint8Array(v);
  return new Float64Array(u8.slice(0, u8.byteLength - (u8.byteLength % 8)).buffer);
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n >= 100 || Number.isInteger(n) ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

function niceStep(max, ticks) {
  // Byte ticks on powers of two times 1, 2 or 5, so labels read 512 MiB, 1 GiB, 2 GiB...
  const raw = max / ticks;
  let step = 1;
  while (step * 5 < raw) step *= 2;
  for (const m of [1, 2, 5]) if (step * m >= raw) return step * m;
  return step * 5;
}

function boxedText(ctx, text, x, y, paper) {
  // Labels drawn over the stacked areas get a backing of the page's colour, or they vanish into the fill.
  const w = ctx.measureText(text).width, ink = ctx.fillStyle;
  ctx.fillStyle = paper;
  ctx.fillRect(x - 2, y - 10, w + 4, 13);
  ctx.fillStyle = ink;
  ctx.fillText(text, x, y);
}

function segment(ctx, x0, y0, x1, y1) {
  ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
}

export function rowsOf(model) {
  const width = 2 + (model.get("columns") ?? []).length;
  const all = [...f64(model.get("base")), ...f64(model.get("tail"))];
  const n = Math.floor(all.length / width), keep = Math.min(n, model.get("window") ?? n);
  const rows = [];
  for (let i = n - keep; i < n; i++) rows.push(all.slice(i * width, (i + 1) * width));
  return rows;
}

function draw(canvas, legend, model) {
  const cols = model.get("columns") ?? [];
  const rows = rowsOf(model);
  const limits = model.get("limits") ?? {};
  const marks = model.get("marks") ?? [];
  const dpr = window.devicePixelRatio || 1;
  canvas.width = W * dpr; canvas.height = H * dpr;
  canvas.style.width = `${W}px`; canvas.style.height = `${H}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, H);
  const ink = getComputedStyle(canvas).color || "#333";
  const paper = (getComputedStyle(canvas).getPropertyValue("--jp-layout-color0") || "").trim() || "rgba(255,255,255,0.85)";
  ctx.font = "11px sans-serif";
  ctx.fillStyle = ink;
  canvas.dataset.rows = String(rows.length);
  if (!rows.length) { ctx.fillText("no samples yet", PAD.l, H / 2); legend.replaceChildren(); return; }

  // Stack: tops[i][k] = sum of models 0..k at row i (NaN = no data = 0 bytes).
  const tops = rows.map((r) => { let s = 0; return cols.map((_, k) => (s += Number.isFinite(r[2 + k]) ? r[2 + k] : 0)); });
  let ymax = 1;
  for (let i = 0; i < rows.length; i++) ymax = Math.max(ymax, tops[i][cols.length - 1] ?? 0, Number.isFinite(rows[i][1]) ? rows[i][1] : 0);
  for (const v of Object.values(limits)) if (Number.isFinite(v)) ymax = Math.max(ymax, v);
  ymax *= 1.05;
  const t0 = rows[0][0], t1 = Math.max(rows[rows.length - 1][0], t0 + 1e-9);
  const x = (t) => PAD.l + ((t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - (v / ymax) * (H - PAD.t - PAD.b);

  const step = niceStep(ymax, 4);
  ctx.strokeStyle = "rgba(128,128,128,0.25)";
  for (let v = 0; v <= ymax; v += step) {
    segment(ctx, PAD.l, y(v), W - PAD.r, y(v));
    ctx.fillText(fmtBytes(v), 4, y(v) + 4);
  }
  ctx.fillText(`${(t0 - t1).toFixed(0)} s`, PAD.l, H - 6);
  ctx.fillText("now", W - PAD.r - 22, H - 6);

  for (let k = cols.length - 1; k >= 0; k--) {
    ctx.fillStyle = PALETTE[k % PALETTE.length];
    ctx.beginPath();
    rows.forEach((r, i) => (i ? ctx.lineTo(x(r[0]), y(tops[i][k])) : ctx.moveTo(x(r[0]), y(tops[i][k]))));
    for (let i = rows.length - 1; i >= 0; i--) ctx.lineTo(x(rows[i][0]), y(k ? tops[i][k - 1] : 0));
    ctx.closePath();
    ctx.fill();
  }
  if (rows.some((r) => Number.isFinite(r[1]))) {
    ctx.strokeStyle = ink; ctx.lineWidth = 1.5; ctx.beginPath();
    let on = false;
    for (const r of rows) {
      if (!Number.isFinite(r[1])) { on = false; continue; }
      on ? ctx.lineTo(x(r[0]), y(r[1])) : ctx.moveTo(x(r[0]), y(r[1]));
      on = true;
    }
    ctx.stroke();
    ctx.fillStyle = ink;
    // Under the line: event labels sit above the plot, and the line is near the top.
    boxedText(ctx, model.get("total_label") || "device total", PAD.l + 4, y(rows[rows.length - 1][1]) + 12, paper);
  }
  ctx.setLineDash([5, 4]); ctx.lineWidth = 1;
  const labelled = []; // y of the limit labels drawn so far: equal limits must not print on one another
  for (const [name, v] of Object.entries(limits)) {
    const k = cols.indexOf(name);
    ctx.strokeStyle = ctx.fillStyle = k >= 0 ? PALETTE[k % PALETTE.length] : ink;
    segment(ctx, PAD.l, y(v), W - PAD.r, y(v));
    let ly = y(v) - 3;
    while (labelled.some((u) => Math.abs(u - ly) < 11)) ly -= 11;
    labelled.push(ly);
    const text = `${name} limit`;
    boxedText(ctx, text, W - PAD.r - ctx.measureText(text).width - 2, ly, paper);
  }
  ctx.strokeStyle = ctx.fillStyle = ink;
  for (const [t, label] of marks) {
    if (t < t0 || t > t1) continue;
    segment(ctx, x(t), PAD.t, x(t), H - PAD.b);
    ctx.fillText(label, x(t) + 3, PAD.t - 4);
  }
  ctx.setLineDash([]);

  const last = rows[rows.length - 1];
  legend.replaceChildren(...cols.map((name, k) => {
    const item = document.createElement("span");
    item.dataset.model = name;
    const lim = Number.isFinite(limits[name]) ? ` / limit ${fmtBytes(limits[name])}` : "";
    item.innerHTML = `<i style="background:${PALETTE[k % PALETTE.length]}"></i>`;
    item.append(`${name} ${fmtBytes(Number.isFinite(last[2 + k]) ? last[2 + k] : 0)}${lim}`);
    return item;
  }));
}

function render({ model, el }) {
  el.classList.add("kvlab-tl");
  const title = document.createElement("div");
  title.className = "kvlab-title";
  const canvas = document.createElement("canvas");
  const legend = document.createElement("div");
  legend.className = "kvlab-legend";
  el.append(title, canvas, legend);
  const redraw = () => {
    title.textContent = model.get("title") ?? "";
    draw(canvas, legend, model);
  };
  const keys = ["base", "tail", "columns", "window", "limits", "marks", "title", "total_label"];
  return redrawOnChange(model, keys, redraw, () => el.replaceChildren());
}

export default { render };
