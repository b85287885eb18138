"""Watchdog for one engine: run as a script (stdlib only) by kvlab.lab.process.

    python -I _watchdog.py --parent PID --grace S --pid-fd FD -- engine command ...

It leads its own process group (the launcher starts it with start_new_session), starts the engine in
that group with PDEATHSIG=SIGKILL (safe here: this process is single-threaded, so the forking thread
lives as long as the watchdog), writes the engine's pid to FD, then waits. It tears the whole group
down (SIGTERM, then SIGKILL after the grace period) when the engine exits on its own (its helper
processes such as vLLM's EngineCore must not outlive it), when it gets SIGTERM/SIGINT/SIGHUP, or when
the launching process is gone (its pid is no longer our parent). It exits with the engine's status.
"""

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
POLL = 0.2
_asked = []


def _say(msg: str) -> None:
    sys.stdout.write(f"[kvlab watchdog] {msg}\n")
    sys.stdout.flush()


def _prctl_pdeathsig(sig: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def _members(pgid: int) -> list[int]:
    me, out = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().decode(errors="replace").rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(entry))
    return out


def shm_files(pids) -> set:
    """Files under /dev/shm that ``pids`` map or hold open (kept in sync with process.shm_files)."""
    found = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    i = line.find("/dev/shm/")
                    if i >= 0:
                        found.add(line[i:].rstrip("\n").replace(" (deleted)", ""))
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("/dev/shm/"):
                    found.add(target.replace(" (deleted)", ""))
        except OSError:
            continue
    return found


# What Python's multiprocessing (and so vLLM's message queues) creates in /dev/shm. Its resource
# tracker unlinks them at a clean exit; after SIGKILL nobody does, and 250 MB segments pile up.
_LEFTOVER_PREFIXES = ("/dev/shm/psm_", "/dev/shm/sem.mp-")


def _remove_leftovers(files: set) -> None:
    removed = 0
    for path in sorted(files):
        if path.startswith(_LEFTOVER_PREFIXES) and "/" not in path[len("/dev/shm/"):]:
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass  # already unlinked by its owner
    if removed:
        _say(f"removed {removed} shared-memory file(s) the engine left in /dev/shm")
    try:  # kvlab's own pool records: the registry drops those of dead processes
        from kvlab.registry.store import reap

        reap()
    except Exception:
        pass


def _teardown(child: subprocess.Popen, grace: float) -> None:
    pgid = os.getpgrp()
    if _members(pgid):
        try:
            os.killpg(pgid, signal.SIGTERM)  # reaches us too; our handler only takes note
        except ProcessLookupError:
            pass
    start = time.monotonic()
    nudged = False
    while time.monotonic() < start + grace:
        child.poll()  # reap the engine so it does not count as a live member
        if not _members(pgid):
            return
        if not nudged and child.returncode is None and time.monotonic() > start + min(2.0, grace / 2):
            # uvicorn waits for open streams to close after the first signal; a second SIGINT means
            # "force quit" to it. Streams whose engine is gone would otherwise hold it until SIGKILL.
            nudged = True
            try:
                os.kill(child.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    left = _members(pgid)
    if left:
        _say(f"still running after {grace:g} s: {left}; sending SIGKILL")
    for _ in range(50):
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        child.poll()
        left = _members(pgid)
        if not left:
            return
        time.sleep(0.05)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--parent", type=int, required=True)
    p.add_argument("--grace", type=float, default=10.0)
    p.add_argument("--pid-fd", type=int, default=-1)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        p.error("no engine command")

    def on_signal(signum, _frame):
        _asked.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    # A nudge when the launching *thread* exits; whether the process is gone is checked below.
    signal.signal(signal.SIGUSR1, lambda *_: None)
    _prctl_pdeathsig(signal.SIGUSR1)
    if os.getppid() != a.parent:
        return 1  # the launcher died before we were set up

    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, preexec_fn=lambda: _prctl_pdeathsig(signal.SIGKILL))
    if a.pid_fd >= 0:
        os.write(a.pid_fd, str(child.pid).encode())
        os.close(a.pid_fd)

    reason = None
    shm, next_scan = set(), time.monotonic() + 2.0
    while reason is None:
        if time.monotonic() > next_scan:  # who maps what, while they live: a killed process tells nothing
            shm |= shm_files(_members(os.getpgrp()))
            next_scan = time.monotonic() + 5.0
        if child.poll() is not None:
            reason = f"engine exited with code {child.returncode}"
        elif os.getppid() != a.parent:
            reason = f"the process that started it (pid {a.parent}) is gone"
        elif _asked:
            reason = f"asked to stop (signal {_asked[0]})"
        else:
            time.sleep(POLL)
    _say(f"{reason}; stopping process group {os.getpgrp()}")
    shm |= shm_files(_members(os.getpgrp()))
    # An engine that exited by itself has no reason to linger; its helpers get a short grace.
    _teardown(child, min(a.grace, 5.0) if child.returncode is not None else a.grace)
    rc = child.wait()
    _remove_leftovers(shm)
    _say(f"engine pid {child.pid} ended with code {rc}")
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main())
