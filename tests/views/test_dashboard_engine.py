"""views.watch(server) on a real elastic vLLM CPU server: the dashboard follows the engine's own pool record.

One engine, one workload of bursts: pages in use appear on the page map during a burst and go after
it, the timeline carries the pool's bytes and the burst marks, every finished request reaches the
latency view, and a limit typed into the pool's row is applied by the engine and read back.
"""

import threading

import numpy as np
import pytest
from tests.waiting import wait_for  # noqa: E402

pytest.importorskip("anywidget")
pytest.importorskip("vllm")

ENGINE_ARGS = dict(max_model_len=512, kv_cache_memory_bytes=64 << 20, max_num_seqs=16)


def front_pages(cap, coalescer, dash) -> bytes:
    """The page states of the dashboard's only pool as the front end holds them, as registry PageState bytes."""
    coalescer.idle(2.0)
    (states,) = cap.state(dash.pagemap.comm.comm_id)["states"].values()
    return bytes(states)  # PageMap's states and the registry's PageState share their values


def count_pages(sample, pool, in_use, mapped):
    p = sample.pools.get(pool)
    if p is not None:
        in_use.append(int((p.pages == 2).sum()))
        mapped.append(int((p.pages != 0).sum()))


@pytest.mark.slow
def test_watch_a_real_elastic_server(cap, coalescer):
    from kvlab import registry, views
    from kvlab.lab import Server, bursty, run_workload
    from kvlab.models import synthetic
    from kvlab.views.controls import fmt_bytes

    with Server(synthetic("qwen2", "tiny"), memory="elastic", progress=False, name="watched", **ENGINE_ARGS) as server:
        dash = views.watch(server, interval=0.1, coalescer=coalescer)
        try:
            in_use, mapped = [], []  # pages per sample, as the page map was given them
            dash.telemetry.add_listener(lambda s: count_pages(s, server.pool_name, in_use, mapped))
            wait_for(lambda: "watched" in dash.pagemap.pools, 30, "the engine's pool on the page map")
            control = dash.controls[server.pool_name]
            wait_for(lambda: not control.slider.disabled, 5, "the limit row's first readback")
            assert control.enforced is None
            wait_for(lambda: len(mapped) >= 3, 5, "samples of the idle pool")
            idle = mapped[-1]  # the engine keeps a small reserve mapped: the idle level is not 0

            records = run_workload(bursty(2, 12, pause=2.0, max_tokens=48, prompt_len=400), server,
                                   on_record=dash.record, telemetry=dash.telemetry)
            assert all(r.ok for r in records), [r.error for r in records if not r.ok]
            assert max(in_use) > in_use[0] and max(mapped) > idle, f"in use {in_use}, mapped {mapped}"
            # Whether and when the engine gives pages back is the engine's business (tests/engines); here:
            # once it is quiet, the page map shows exactly the engine's record.
            wait_for(lambda: front_pages(cap, coalescer, dash) == registry.read(server.pool_name).pages, 10,
                     "the page map to show the engine's record")

            coalescer.idle(2.0)
            front = cap.state(dash.pagemap.comm.comm_id)
            assert front["order"] == ["watched"] and len(front["states"]["watched"]) > 0
            rows = dash.timeline.rows()
            assert dash.timeline.models == ["watched"] and np.nanmax(rows[:, 2]) > 0
            labels = [label for _, label in dash.timeline.marks]
            assert sum(label.startswith("burst ") for label in labels) == 2, labels
            assert dash.latency.percentiles("watched")["ttft"] is not None
            assert cap.state(dash.latency.comm.comm_id)["stats"]["watched"]["n"] == len(records)

            control.text.value = "32MiB"  # typed into the row; the engine applies it on its own
            assert control.error is None and registry.read(server.pool_name).control.limit == 32 << 20
            wait_for(lambda: control.enforced is not None, 10, "the engine to apply the limit")
            enforced = registry.read(server.pool_name).limit  # whole chunks, as the engine rounds it
            assert control.enforced == enforced and 0 < enforced <= 64 << 20
            wait_for(lambda: dash.timeline.limits.get("watched") == enforced, 5, "the limit line")
            assert f"limit <b>{fmt_bytes(enforced)}</b>" in control.status.value
        finally:
            dash.close()
    assert not [t for t in threading.enumerate() if t.name in ("kvlab-telemetry", "kvlab-metrics")]


@pytest.mark.slow
def test_a_static_server_shows_its_processes_memory(cap, coalescer):
    """A stock (static) engine has no pool: its processes' memory (RSS here, NVML on a GPU) is its line."""
    from kvlab import views
    from kvlab.lab import Fleet, Server
    from kvlab.lab.probes import rss
    from kvlab.models import synthetic

    static = Server(synthetic("qwen2", "tiny"), memory="static", progress=False, name="stock", start=False,
                    **ENGINE_ARGS)
    with Fleet([static]) as fleet:
        dash = views.dashboard(fleet, interval=0.1, coalescer=coalescer)
        try:
            assert not dash.controls and static.pool_name is None
            wait_for(lambda: "stock (process)" in dash.timeline.models, 10, "the static server's line")
            coalescer.idle(2.0)
            shown = dash.timeline.rows()[-1, 2]
            resident = sum(rss(p) or 0 for p in static.pids())
            assert shown > 100 << 20 and abs(shown - resident) < 0.2 * resident, (shown, resident)
            assert not dash.pagemap.pools  # no pool, no pages
        finally:
            dash.close()
        assert dash.errors == 0, dash.last_error
