"""Engine processes: launched through a watchdog in their own process group, killed as a group.

The watchdog (``_watchdog.py``, stdlib only) leads a new session, starts the engine in it and
kills the whole group when the engine exits, when it is asked to, or when the Python process that
launched it dies (even by SIGKILL). It polls its parent's pid instead of relying on
PR_SET_PDEATHSIG alone, because PDEATHSIG fires when the parent *thread* exits, and a notebook may
start a server from a thread that ends long before the kernel does.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

_WATCHDOG = Path(__file__).with_name("_watchdog.py")
PR_SET_PDEATHSIG = 1


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent thread exits (Linux only)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a process from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()  # the command name may contain spaces and parentheses
    return fields[0], int(fields[1]), int(fields[2])


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st and st[2] == pgid and st[0] not in ("Z", "X"):
                out.append(int(entry))
    return sorted(out)


def shm_files(pids) -> set[str]:
    """Files under /dev/shm that ``pids`` map or hold open (the watchdog removes vLLM's leftovers)."""
    from ._watchdog import shm_files as scan

    return scan(pids)


def pid_alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def kill_group(pgid: int, sig: int) -> None:
    """Signal every live member of ``pgid``, if it still has any (so a reused group id is never hit)."""
    if group_pids(pgid):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_pids(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class EngineProcess:
    """One engine command running under a watchdog; the group id is the watchdog's pid."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path, grace: float = 10.0,
                 cwd: str | None = None):
        self.cmd = list(cmd)
        self.log_path = Path(log_path)
        self.grace = float(grace)
        read_fd, write_fd = os.pipe()
        try:
            with open(self.log_path, "ab", buffering=0) as log:
                self.watchdog = subprocess.Popen(
                    [sys.executable, "-I", str(_WATCHDOG), "--parent", str(os.getpid()), "--grace",
                     str(self.grace), "--pid-fd", str(write_fd), "--", *self.cmd],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                    start_new_session=True, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        self.pgid = self.watchdog.pid
        self.pid = self._read_pid(read_fd)

    def _read_pid(self, fd: int) -> int | None:
        try:
            ready, _, _ = select.select([fd], [], [], 30.0)
            data = os.read(fd, 64) if ready else b""
        finally:
            os.close(fd)
        return int(data) if data.strip().isdigit() else None

    @property
    def exit_code(self) -> int | None:
        """The engine's exit code once the watchdog has reported it (negative: killed by a signal)."""
        return self.watchdog.poll()

    @property
    def alive(self) -> bool:
        return self.watchdog.poll() is None and self.pid is not None and pid_alive(self.pid)

    def pids(self) -> list[int]:
        return group_pids(self.pgid)

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM the group, SIGKILL what is left after ``grace`` seconds; wait until none is left."""
        grace = self.grace if grace is None else float(grace)
        if self.watchdog.poll() is None:
            kill_group(self.pgid, signal.SIGTERM)  # the watchdog forwards nothing: every member gets it
            try:
                self.watchdog.wait(timeout=grace + 2.0)
            except subprocess.TimeoutExpired:
                pass
        if not wait_group_gone(self.pgid, 0.0 if self.watchdog.poll() is None else grace):
            kill_group(self.pgid, signal.SIGKILL)
        try:
            self.watchdog.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass
        wait_group_gone(self.pgid, 5.0)
        return self.watchdog.poll()
