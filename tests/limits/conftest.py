"""Fixtures for the limits tests: a private registry directory, and a tiny model for real engines."""

import os
import secrets
from pathlib import Path

import pytest

from kvlab.registry import store


@pytest.fixture
def root(monkeypatch):
    """A private registry directory under /dev/shm (also for child processes, through the environment);
    the test fails if a record is left behind."""
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


@pytest.fixture(scope="session")
def tiny_model():
    pytest.importorskip("tokenizers")
    from kvlab.models import synthetic

    return synthetic("qwen2", "tiny")  # kvlab's model cache: built once per machine, shared with tests/lab
