"""Helpers for the lab tests: engine arguments and looks at processes (``tiny_model`` is tests/conftest.py's)."""

import time

from kvlab.lab.process import group_pids

ENGINE_ARGS = dict(max_model_len=512, kv_cache_memory_bytes=64 << 20, max_num_seqs=16)


def wait_gone(pgid: int, timeout: float) -> list[int]:
    """Members of ``pgid`` still alive after waiting up to ``timeout`` seconds (empty: all gone)."""
    deadline = time.monotonic() + timeout
    while group_pids(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return group_pids(pgid)


def metric_total(url: str, name: str) -> float:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))
