// A stand-in for anywidget's model: get/set/on/off/save_changes/send, `set` firing `change:<key>`
// synchronously like Backbone does, plus a listener count so tests can check a view cleans up.

function decode(v) {
  // Python sends bytes as {"__b64__": "..."}; the real widget manager hands the view a DataView.
  if (v && typeof v === "object" && typeof v.__b64__ === "string") {
    const bin = atob(v.__b64__);
    const u8 = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
    return new DataView(u8.buffer);
  }
  if (Array.isArray(v)) return v.map(decode);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, decode(x)]));
  return v;
}

export class FakeModel {
  constructor(state = {}) {
    this.state = decode(state);
    this.handlers = new Map();
    this.sent = [];
  }
  get(key) { return this.state[key]; }
  set(key, value) {
    this.state[key] = decode(value);
    for (const cb of [...(this.handlers.get(`change:${key}`) ?? [])]) cb(this, this.state[key]);
  }
  setMany(state) { // one message changing several traits: all values first, then the events
    const decoded = decode(state);
    Object.assign(this.state, decoded);
    for (const key of Object.keys(decoded)) for (const cb of [...(this.handlers.get(`change:${key}`) ?? [])]) cb(this, decoded[key]);
  }
  on(event, cb) {
    if (!this.handlers.has(event)) this.handlers.set(event, []);
    this.handlers.get(event).push(cb);
  }
  off(event, cb) {
    if (!event) { this.handlers.clear(); return; }
    const list = this.handlers.get(event) ?? [];
    this.handlers.set(event, cb ? list.filter((f) => f !== cb) : []);
  }
  save_changes() {}
  send(content, callbacks, buffers) { this.sent.push({ content, buffers }); }
  listenerCount() { let n = 0; for (const l of this.handlers.values()) n += l.length; return n; }
}

// Two animation frames: the views paint on the next frame after a change.
export const frames = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));

export function pixel(canvas, x, y) {
  return Array.from(canvas.getContext("2d").getImageData(x, y, 1, 1).data);
}

export async function mount(modulePath, state) {
  const mod = await import(modulePath);
  const el = document.createElement("div");
  document.body.appendChild(el);
  const model = new FakeModel(state);
  const cleanup = mod.default.render({ model, el });
  await frames();
  return { model, el, cleanup };
}
