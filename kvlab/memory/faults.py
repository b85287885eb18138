"""Failure injection for tests of code built on arenas (host backend only).

``with fail_map_after(3, "oom"):`` makes the 4th page mapped from now on fail with
OutOfPhysicalMemory (or BackendError for ``"backend"``); the arena then rolls the whole call back.
Engine adapters use this to prove that a failed map becomes a scheduling miss, not a crash.
"""

from __future__ import annotations

import contextlib

from ._native_loader import native
from .errors import InvalidArgument

_KINDS = {"oom": 0, "backend": 2}


def arm_map_failure(pages: int = 0, kind: str = "oom") -> None:
    """Make this process's map of the ``pages + 1``-th page from now fail, once (it disarms when it fires).

    Without a context, for a failure armed from another process (a test reaching one rank of an engine
    through an RPC); ``fail_map_after`` is the scoped form.
    """
    if kind not in _KINDS:
        raise InvalidArgument(f"unknown failure kind {kind!r}: use 'oom' or 'backend'")
    if pages < 0:
        raise InvalidArgument("pages must be >= 0")
    native().inject_host_map_failure(pages, _KINDS[kind])


@contextlib.contextmanager
def fail_map_after(pages: int, kind: str = "oom"):
    arm_map_failure(pages, kind)
    try:
        yield
    finally:
        native().inject_host_map_failure(-1, 0)
