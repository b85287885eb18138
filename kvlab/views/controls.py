"""LimitControl: one row of the dashboard per pool — set its limit, see the limit the engine enforces.

The slider and the text box only *ask* (through :func:`kvlab.limits.set_limit`, which writes the
pool's registry record); the engine applies the limit on its own schedule. So the row shows two
things apart: what was asked, and the limit read back from the registry by the Telemetry. An error
(a bad size, a pool that went away) is shown in the row, never raised: a widget callback has no cell
to raise into.

Callbacks from the front end run on the kernel's main thread; ``readback`` runs on the Telemetry's
sampler thread and only sets traits (safe on ipykernel 6.x and >= 7.1), and only when a value changed.
"""

from __future__ import annotations

import html
import threading

import ipywidgets as widgets

from kvlab.registry import RegistryError
from kvlab.units import MiB


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "none"
    for unit, scale in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= scale:
            v = n / scale
            return f"{v:.0f} {unit}" if v >= 100 or v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


def _set_limit(pool: str, size) -> None:
    from kvlab import limits  # lazy: the views import without the limits API's dependencies

    limits.set_limit(pool, size)


class LimitControl(widgets.HBox):
    """Slider (MiB; all the way right = no limit), a text box ("2G", "512MiB", "30%", "none"), status."""

    def __init__(self, pool: str, label: str, setter=None):
        self.pool = pool
        self._setter = setter or _set_limit
        self._lock = threading.Lock()
        self._capacity: int | None = None
        self._enforced: int | None = None  # meaningful once _capacity is set (the first readback)
        self._asked: str | None = None
        self._error: str | None = None
        self._pushed: int | None = None  # slider value set by readback, not by a person
        self.slider = widgets.IntSlider(value=0, min=0, max=1, step=1, description=label, continuous_update=False,
                                        readout=True, disabled=True, style={"description_width": "initial"},
                                        layout=widgets.Layout(width="360px", flex="0 0 auto"))
        self.text = widgets.Text(placeholder="2G, 512MiB, 30%, none", continuous_update=False,
                                 layout=widgets.Layout(width="170px", flex="0 0 auto"))
        self.text.add_class("kvlab-limit-text")
        # The status takes what is left of the row and wraps inside it: a long error never squeezes the inputs.
        self.status = widgets.HTML("<i>waiting for the pool's first sample</i>",
                                   layout=widgets.Layout(flex="1 1 auto", min_width="160px"))
        self.status.add_class("kvlab-limit-status")
        self.slider.observe(self._on_slider, "value")
        self.text.observe(self._on_text, "value")
        super().__init__([self.slider, widgets.Label("MiB", layout=widgets.Layout(flex="0 0 auto")), self.text,
                          self.status])
        self.add_class("kvlab-limit")

    # ---- a person's input (kernel main thread) -------------------------------------------------
    def apply(self, size) -> bool:
        """Ask for ``size`` (bytes, "2G", "30%", None = no limit); returns False and shows why on error."""
        if isinstance(size, str) and size.strip().lower() in ("", "none", "no limit", "unlimited", "inf"):
            size = None
        try:
            self._setter(self.pool, size)
        except (RegistryError, ValueError, LookupError, OSError, TypeError) as e:  # the limits API's typed errors
            with self._lock:
                self._error = f"{type(e).__name__}: {e}"
            self._show()
            return False
        with self._lock:
            self._error = None
            # Sizes the person typed ("30%") are shown as typed until the readback gives bytes.
            self._asked = fmt_bytes(size) if size is None or isinstance(size, int) else str(size)
        self._show()
        return True

    def _on_slider(self, change) -> None:
        value = change["new"]
        if value == self._pushed:  # the readback moving the slider, not a person
            return
        self.apply(None if value >= self.slider.max else int(value) * MiB)

    def _on_text(self, change) -> None:
        if change["new"].strip():
            self.apply(change["new"].strip())

    # ---- the registry's view (sampler thread) --------------------------------------------------
    def readback(self, limit: int | None, capacity: int) -> None:
        """The limit the engine enforces now, from the pool's record; cheap when nothing changed."""
        with self._lock:
            first = self._capacity != capacity
            changed = first or limit != self._enforced
            self._capacity, self._enforced = capacity, limit
            if changed and not first:
                self._asked = None  # the engine acted on the last request
        if not changed:
            return
        top = max(1, -(-capacity // MiB))  # the slider's max (set at the first readback; capacity is fixed)
        self._pushed = top if limit is None else min(top, limit // MiB)
        with self.slider.hold_sync():
            if first:
                self.slider.max = top
                self.slider.disabled = False
            self.slider.value = self._pushed
        self._show()

    def _show(self) -> None:
        with self._lock:
            read, enforced, asked, error = self._capacity is not None, self._enforced, self._asked, self._error
        parts = [f"limit <b>{fmt_bytes(enforced)}</b>" if read else "<i>waiting for the pool's first sample</i>"]
        if asked is not None and (not read or asked != fmt_bytes(enforced)):
            parts.append(f"asked {html.escape(asked)}, not yet applied")
        if error:
            parts.append(f"<span class='kvlab-error' style='color:#b91c1c'>{html.escape(error)}</span>")
        self.status.value = " · ".join(parts)

    def freeze(self) -> None:
        """No more input: nothing reads the registry back any more, so a change would go unconfirmed."""
        self.slider.disabled = self.text.disabled = True

    @property
    def enforced(self) -> int | None:
        """The last limit read back (None = no limit); raises LookupError before the first sample."""
        with self._lock:
            if self._capacity is None:
                raise LookupError(f"pool {self.pool!r}: no sample read yet")
            return self._enforced

    @property
    def error(self) -> str | None:
        with self._lock:
            return self._error
