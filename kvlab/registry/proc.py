"""Process identity: a pid alone is reused by the kernel, so an owner is (pid, start time, pid namespace)."""

from __future__ import annotations

import os


def start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone or a zombie.

    A zombie has already released its resources (and its flock), so for the registry it is dead.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces and parentheses, so split after its last ')'.
    rest = stat.rsplit(b")", 1)[1].split()
    if rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])  # field 22


def pidns() -> int:
    """Inode of our pid namespace: pids from another namespace say nothing about our processes."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


_self: tuple[int, int, int] | None = None


def me() -> tuple[int, int, int]:
    """(pid, start ticks, pid namespace) of this process; recomputed after a fork."""
    global _self
    pid = os.getpid()
    if _self is None or _self[0] != pid:
        _self = (pid, start_ticks(pid) or 0, pidns())
    return _self


def alive(pid: int, ticks: int, ns: int) -> bool | None:
    """Whether that exact process still runs; None when it lives in another pid namespace (unknowable)."""
    if ns != me()[2]:
        return None
    return start_ticks(pid) == ticks
