// PageMap view: one canvas per pool, one cell per page, painted from a uint8 state buffer.
// Painting goes through ImageData (no per-cell draw calls) so 50 000 pages repaint in a few ms, and a
// pool is repainted only when its bytes differ from the last painted ones: the kernel re-sends every
// pool's buffer when any pool changes.

import { redrawOnChange } from "./frames.js";

const COLORS = [
  [226, 229, 234], // 0 unmapped
  [147, 197, 253], // 1 mapped, free or retained
  [29, 78, 216], // 2 in use
];
const NAMES = ["unmapped", "mapped, free/retained", "in use"];
// Hybrid models: state 2 + g is a page in use by KV cache group g (2 is group 0's, the colour above).
const GROUP_COLORS = [
  [124, 58, 237], // group 1 (violet)
  [219, 39, 119], // group 2
  [234, 88, 12], // group 3
  [22, 163, 74], // group 4
  [8, 145, 178], // group 5
  [202, 138, 4], // group 6
  [71, 85, 105], // group 7 and later
];
const STATE_COLORS = COLORS.concat(GROUP_COLORS);
const stateName = (s) => (s > 2 && s < STATE_COLORS.length ? `in use (KV cache group ${s - 2})` : NAMES[s] ?? s);

function asBytes(v) {
  // Binary traits arrive as DataView in Jupyter; accept any buffer-ish value.
  if (!v) return new Uint8Array(0);
  if (v instanceof Uint8Array) return v;
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  return new Uint8Array(0);
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${Number.isInteger(n) ? n : n.toFixed(1)} ${units[i]}`;
}

function layout(n, columns, cellPx) {
  // ~640 px wide at most; bigger pools get more, smaller cells (4096 pages: 128 x 32 cells of 5 px).
  const cols = columns > 0 ? columns : Math.max(1, Math.min(n, n <= 512 ? 32 : n <= 2048 ? 64 : n <= 8192 ? 128 : 256));
  const cell = cellPx > 0 ? cellPx : Math.max(2, Math.min(14, Math.floor(640 / cols)));
  return { cols, rows: Math.max(1, Math.ceil(n / cols)), cell, gap: cell >= 5 ? 1 : 0 };
}

function same(a, b) {
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function paint(canvas, states, lay) {
  const { cols, rows, cell, gap } = lay;
  canvas.width = cols * cell;
  canvas.height = rows * cell;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(canvas.width, canvas.height);
  const px = new Uint32Array(img.data.buffer); // little-endian RGBA: 0xAABBGGRR
  const lut = STATE_COLORS.map(([r, g, b]) => ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0);
  const w = canvas.width, side = cell - gap;
  for (let p = 0; p < states.length; p++) {
    const c = lut[states[p]] ?? lut[0];
    const x0 = (p % cols) * cell, y0 = Math.floor(p / cols) * cell;
    for (let dy = 0; dy < side; dy++) px.fill(c, (y0 + dy) * w + x0, (y0 + dy) * w + x0 + side);
  }
  ctx.putImageData(img, 0, 0);
}

function describe(name, page, state, info) {
  const lines = [`${name} · page ${page}`, `state: ${stateName(state)}`];
  const ps = info.page_size;
  if (ps > 0) {
    lines.push(`bytes ${fmtBytes(page * ps)} – ${fmtBytes((page + 1) * ps)} (offset 0x${(page * ps).toString(16)})`);
    if (info.block_bytes > 0) {
      const b0 = Math.floor((page * ps) / info.block_bytes);
      const b1 = Math.ceil(((page + 1) * ps) / info.block_bytes) - 1;
      lines.push(b0 === b1 ? `block ${b0}` : `blocks ${b0}–${b1}`);
    }
  }
  if (info.label) lines.push(String(info.label));
  return lines.join("\n");
}

function render({ model, el }) {
  el.classList.add("kvlab-pm");
  const legend = document.createElement("div");
  legend.className = "kvlab-legend";
  COLORS.forEach((c, i) => {
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:rgb(${c})"></i>${NAMES[i]}`;
    legend.appendChild(item);
  });
  const body = document.createElement("div");
  const tip = document.createElement("div");
  tip.className = "kvlab-tip";
  tip.hidden = true;
  el.append(legend, body, tip);
  const pools = new Map(); // name -> {root, head, canvas, last, lay}

  function section(name) {
    const root = document.createElement("div");
    root.className = "kvlab-pm-pool";
    root.dataset.pool = name;
    root.dataset.paints = "0";
    const head = document.createElement("div");
    head.className = "kvlab-pm-head";
    const canvas = document.createElement("canvas");
    const entry = { root, head, canvas, last: null, lay: null, counts: [0, 0, 0] };
    canvas.addEventListener("mousemove", (ev) => {
      const { cols, cell } = entry.lay ?? { cols: 1, cell: 1 };
      const r = canvas.getBoundingClientRect();
      const x = ((ev.clientX - r.left) * canvas.width) / r.width, y = ((ev.clientY - r.top) * canvas.height) / r.height;
      const page = Math.floor(y / cell) * cols + Math.floor(x / cell);
      if (!entry.last || page < 0 || page >= entry.last.length || Math.floor(x / cell) >= cols) { tip.hidden = true; return; }
      tip.textContent = describe(name, page, entry.last[page], (model.get("infos") ?? {})[name] ?? {});
      const host = el.getBoundingClientRect();
      tip.style.left = `${ev.clientX - host.left + 12}px`;
      tip.style.top = `${ev.clientY - host.top + 12}px`;
      tip.hidden = false;
    });
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
    root.append(head, canvas);
    return entry;
  }

  function draw() {
    const states = model.get("states") ?? {};
    const infos = model.get("infos") ?? {};
    const order = model.get("order") ?? Object.keys(states);
    for (const [name, entry] of pools) {
      if (!order.includes(name)) { entry.root.remove(); pools.delete(name); }
    }
    for (const name of order) {
      let entry = pools.get(name);
      if (!entry) { entry = section(name); pools.set(name, entry); }
      body.appendChild(entry.root); // keeps DOM order equal to `order`
      const bytes = asBytes(states[name]);
      const lay = layout(bytes.length, model.get("columns") ?? 0, model.get("cell_px") ?? 0);
      const info = infos[name] ?? {};
      const ps = info.page_size ?? 0;
      if (!same(entry.last, bytes) || JSON.stringify(lay) !== JSON.stringify(entry.lay)) {
        entry.last = bytes.slice(); // the DataView's buffer belongs to the message; keep our own copy
        entry.lay = lay;
        paint(entry.canvas, entry.last, lay);
        entry.root.dataset.paints = String(Number(entry.root.dataset.paints) + 1);
        entry.counts = [0, 0, 0];
        for (const s of entry.last) entry.counts[s] = (entry.counts[s] ?? 0) + 1;
      }
      const n = entry.counts;
      const mapped = n[1] + n[2];
      entry.head.innerHTML = "";
      const title = document.createElement("b");
      title.textContent = name;
      const counts = document.createElement("span");
      counts.className = "kvlab-pm-counts";
      counts.textContent = ` ${n[2]} in use · ${n[1]} free · ${n[0]} unmapped of ${bytes.length} pages` +
        (ps ? ` · ${fmtBytes(mapped * ps)} mapped` : "") + (info.label ? ` · ${info.label}` : "");
      entry.head.append(title, counts);
    }
  }

  return redrawOnChange(model, ["states", "infos", "order", "columns", "cell_px"], draw, () => {
    pools.clear();
    el.replaceChildren();
  });
}

export default { render };
