// What every kvlab view shares: one redraw per animation frame however many traits a message changes
// (and none while the tab is hidden), and a teardown that leaves no listener or pending frame behind.
// kvlab.views inlines this file into each view's module (anywidget loads a module from a blob URL, where
// a relative import cannot resolve); a browser that loads a view from a real URL imports it.

export function redrawOnChange(model, keys, redraw, teardown = () => {}) {
  let frame = 0;
  const run = () => { frame = 0; redraw(); };
  const schedule = () => { if (!frame) frame = requestAnimationFrame(run); };
  keys.forEach((k) => model.on(`change:${k}`, schedule));
  run();
  return () => {
    keys.forEach((k) => model.off(`change:${k}`, schedule));
    if (frame) cancelAnimationFrame(frame);
    frame = 0;
    teardown();
  };
}
