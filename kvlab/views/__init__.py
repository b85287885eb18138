"""kvlab.views: live notebook views (anywidget) of pages, memory over time and latency.

``Dashboard(server | fleet | [servers])`` (also ``kvlab.views.watch(server)``, ``kvlab.views.dashboard(fleet)``) puts the three
together with a limit row per elastic pool, fed by one :class:`kvlab.lab.telemetry.Telemetry`.
``ServedFleet(url)`` (also ``Gateway.watch()``) shows a `kvlab serve` endpoint's models, from its event stream.

Every view is fed from any thread and sends at most ~10 updates a second through one background
thread (see :mod:`kvlab.views.coalescer`). Needs ``anywidget`` (``pip install kvlab[views]``).
"""

try:
    import anywidget  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("kvlab.views needs anywidget and ipywidgets: pip install 'kvlab[views]' "
                      "(or pip install anywidget ipywidgets)") from e

from .coalescer import Coalescer, CoalescerSettings, PeriodicTask, default_coalescer
from .controls import LimitControl
from .dashboard import Dashboard
from .latency import LatencyView
from .live import dashboard, run_live, show_setup, watch
from .pagemap import PageMap
from .served import ServedFleet
from .timeline import MemoryTimeline

__all__ = ["watch", "dashboard", "run_live", "show_setup", "Dashboard", "LimitControl", "PageMap", "MemoryTimeline",
           "LatencyView", "ServedFleet", "Coalescer", "CoalescerSettings", "PeriodicTask", "default_coalescer"]
