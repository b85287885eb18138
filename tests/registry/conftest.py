import multiprocessing as mp
import os
import secrets
from pathlib import Path

import pytest

from kvlab.registry import store


def private_root() -> Path:
    """A fresh path for a private registry directory under /dev/shm (created by the first record)."""
    return Path("/dev/shm") / f"kvlab-test-{os.getpid()}-{secrets.token_hex(4)}"


def remove_root(path: Path) -> list[str]:
    """Remove a private registry directory; the names of the files that were left in it."""
    left = sorted(os.listdir(path)) if path.exists() else []
    for entry in left:
        os.unlink(path / entry)
    if path.exists():
        path.rmdir()
    return left


@pytest.fixture
def root(monkeypatch):
    """A private registry directory under /dev/shm; the test fails if it leaves any file behind."""
    path = private_root()
    monkeypatch.setattr(store, "_default_root", path)  # calls without root= land here too
    monkeypatch.setenv("KVLAB_REGISTRY_DIR", str(path))
    yield str(path)
    left = remove_root(path)
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
