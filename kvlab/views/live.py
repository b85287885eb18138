"""Live views of the lab's objects: the entry points a notebook calls.

>>> dash = kvlab.views.watch(server)          # a Dashboard of one Server
>>> dash = kvlab.views.dashboard(fleet)       # ... of a Fleet, a list of Servers, or None: every pool
>>> result = kvlab.views.run_live(ElasticVsStatic(model, workload))   # an experiment, watched setup by setup

The views sit above the lab: kvlab.lab never imports kvlab.views, it takes an ``observer`` instead.
"""

from __future__ import annotations

from .dashboard import Dashboard


def dashboard(target=None, **kwargs) -> Dashboard:
    """A live Dashboard (pages, memory, latency, limits) of a Server, a Fleet, a list of Servers, or (None)
    every pool in the registry; ``close()`` stops it. Keyword arguments: see ``Dashboard``."""
    return Dashboard(target, **kwargs)


watch = dashboard  # reads better for one server: kvlab.views.watch(server)


def show_setup(servers, telemetry) -> Dashboard:
    """An experiment's observer: a Dashboard of one setup's servers, following the experiment's Telemetry."""
    from IPython.display import display

    view = Dashboard(servers, telemetry=telemetry)
    display(view)
    return view


def run_live(experiment):
    """Run ``experiment`` (kvlab.lab's ElasticVsStatic, MultiModel, ...) with a live Dashboard per setup;
    returns its Result. The last picture of each setup stays on screen."""
    return experiment.run(observer=show_setup)
