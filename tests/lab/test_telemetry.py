"""Telemetry without an engine: pools published by a real registry Publisher in this process."""

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kvlab.lab import Telemetry
from kvlab.lab.probes import parse_metrics, rss
from kvlab.meminfo import host_memory
from kvlab.registry import PageState, Publisher
from tests.waiting import until  # noqa: E402

MiB = 1 << 20


class MetricsEndpoint:
    """A real HTTP /metrics endpoint whose answer, delay and status the test sets (the engine's gauges
    cannot be made slow or failing on demand). It stands where Telemetry expects a Server."""

    def __init__(self):
        self.name, self.alive, self.answer = "slow-server", True, (200, 0.0, "vllm:num_requests_running 3\n")
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                status, delay, body = endpoint.answer
                time.sleep(delay)
                self.send_response(status)
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args):
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_port}"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def pids(self):
        return [os.getpid()]

    def close(self):
        self._http.shutdown()
        self._http.server_close()


def test_a_slow_metrics_answer_is_read_and_a_failed_one_counted():
    endpoint = MetricsEndpoint()
    try:
        # Answers take 1 s, twice the polling interval: a busy server's reading arrives late, not never.
        endpoint.answer = (200, 1.0, "vllm:num_requests_running 3\n")
        with Telemetry([endpoint], interval=0.05, metrics_interval=0.5, pages=False) as tel:
            assert until(lambda: tel.metrics_polls >= 2, 10)
            assert tel.latest.engines["slow-server"]["running"] == 3 and tel.metrics_misses == 0
            # Failing answers are counted, and the last reading stays in the table.
            endpoint.answer = (500, 0.0, "")
            assert until(lambda: tel.metrics_misses >= 2, 10)
        running = tel.table()["running:slow-server"]
        assert running.max() == 3 and running.iloc[-1] == 3
        # A restart goes on from there: the last reading and the counts are kept.
        polls, misses = tel.metrics_polls, tel.metrics_misses
        with tel:
            assert until(lambda: tel.metrics_misses > misses, 10)
            assert tel.latest.engines["slow-server"]["running"] == 3 and tel.metrics_polls == polls
    finally:
        endpoint.close()


def test_pools_devices_events_and_listeners(tmp_path):
    root = tmp_path / "registry"
    seen = []
    with Publisher("model-a", capacity=64 * MiB, page_size=2 * MiB, name="pool-a", root=root) as pub:
        pub.update(mapped=4 * MiB, used=2 * MiB, pages=[PageState.USED, PageState.MAPPED] + [0] * 30)
        tel = Telemetry(None, interval=0.05, registry_root=root)
        tel.add_listener(seen.append)
        with tel:
            assert until(lambda: tel.n_samples >= 3)
            tel.mark("burst 0")
            pub.update(mapped=32 * MiB, used=30 * MiB)
            assert until(lambda: tel.latest.pools["pool-a"].mapped == 32 * MiB)
            tel.mark("burst 1")
            pub.update(mapped=4 * MiB, used=0)
            assert until(lambda: tel.latest.pools["pool-a"].mapped == 4 * MiB)
        n = tel.n_samples
        time.sleep(0.2)
        assert tel.n_samples == n and not tel.running  # stopped means stopped
    df = tel.table()
    assert len(df) == n and df["t"].is_monotonic_increasing
    mapped = df["pool_mapped:pool-a"]
    assert mapped.iloc[0] == 4 * MiB and mapped.max() == 32 * MiB and mapped.iloc[-1] == 4 * MiB
    assert (df["pool_capacity:pool-a"] == 64 * MiB).all()
    assert list(df["event"].dropna()) == ["burst 0", "burst 1"]
    assert [label for _, label in tel.events] == ["burst 0", "burst 1"]
    # an event lands on the first row taken after it
    t_burst1 = tel.events[1][0]
    assert df.loc[df["event"] == "burst 1", "t"].iloc[0] >= t_burst1
    first = seen[0]
    pool = first.pools["pool-a"]
    assert pool.model == "model-a" and pool.pid == os.getpid() and pool.page_size == 2 * MiB
    assert list(pool.pages[:3]) == [PageState.USED, PageState.MAPPED, 0]
    total, used, _ = host_memory()
    assert first.devices["cpu"].total == total and 0 < first.devices["cpu"].used < total
    assert not tel.errors


def test_pool_gone_and_failing_listener(tmp_path):
    root = tmp_path / "registry"
    pub = Publisher("m", capacity=8 * MiB, page_size=2 * MiB, name="short-lived", root=root)

    def broken(sample):
        raise RuntimeError("boom")

    tel = Telemetry(None, interval=0.05, pages=False, registry_root=root)
    tel.add_listener(broken)
    with pytest.warns(RuntimeWarning, match="listener"):
        with tel:
            assert until(lambda: tel.latest is not None and "short-lived" in tel.latest.pools)
            assert tel.latest.pools["short-lived"].pages is None
            pub.close()
            assert until(lambda: "short-lived" not in tel.latest.pools)
    assert tel.n_samples >= 2 and not tel.errors  # sampling went on after the listener failed


def test_bad_settings_and_targets():
    with pytest.raises(ValueError, match="interval"):
        Telemetry(None, interval=0)
    with pytest.raises(ValueError, match="metrics_interval"):
        Telemetry(None, metrics_interval=0.01)
    with pytest.raises(TypeError, match="targets"):
        Telemetry("not a server")


def test_probes():
    assert rss(os.getpid()) > 10 * MiB
    assert rss(2**22 + 12345) is None  # no such process
    text = ('# HELP vllm:num_requests_running x\nvllm:num_requests_running{engine="0",model_name="m"} 3.0\n'
            'vllm:num_requests_waiting{engine="0"} 1\nvllm:kv_cache_usage_perc{engine="0"} 0.25\n'
            'vllm:kv_cache_usage_perc{engine="1"} 0.25\nother_metric 7\n')
    assert parse_metrics(text) == {"kv_usage": 0.5, "running": 3.0, "waiting": 1.0}
