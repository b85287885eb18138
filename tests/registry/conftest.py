import multiprocessing as mp
import os
import secrets
from pathlib import Path

import pytest

from kvlab.registry import store


@pytest.fixture
def root(monkeypatch):
    """A private registry directory under /dev/shm; the test fails if it leaves any file behind."""
    path = Path("/dev/shm") / f"kvlab-test-{os.getpid()}-{secrets.token_hex(4)}"
    monkeypatch.setattr(store, "_default_root", path)  # calls without root= land here too
    monkeypatch.setenv("KVLAB_REGISTRY_DIR", str(path))
    yield str(path)
    left = sorted(os.listdir(path)) if path.exists() else []
    for entry in left:
        os.unlink(path / entry)
    if path.exists():
        path.rmdir()
    assert not left, f"test left files in {path}: {left}"


@pytest.fixture
def spawn():
    """Start functions of tests.registry.workers in spawned processes; ``spawn.stop`` is set after the
    test (pass it to workers), so they close their records even when the test fails."""
    ctx = mp.get_context("spawn")
    procs = []

    def start(fn, *args):
        p = ctx.Process(target=fn, args=args, daemon=True)
        p.start()
        procs.append(p)
        return p

    start.ctx = ctx
    start.stop = ctx.Event()
    yield start
    start.stop.set()
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()
