"""Several real processes sharing one registry: publishing, limits from a third process, reaping."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvlab import registry

from . import workers


def _wait_for(cond, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.005)
    raise AssertionError("condition not met in time")


def test_two_processes_appear_in_list(root, spawn):
    stop = spawn.stop
    names, procs = [], []
    for model in ("model-a", "model-a"):  # same model twice: names must still differ
        a, b = spawn.ctx.Pipe()
        procs.append(spawn(workers.publish, root, b, stop, model))
        names.append(a.recv())
    pids = [p.pid for p in procs]
    recs = {r.name: r for r in registry.list_records(root)}
    assert sorted(recs) == sorted(names) and names[0] != names[1]
    assert sorted(r.pid for r in recs.values()) == sorted(pids)
    rec = recs[names[0]]
    assert (rec.model, rec.device, rec.capacity, rec.page_size) == ("model-a", "cpu", 64 << 20, 2 << 20)
    assert (rec.mapped, rec.used, rec.pages, rec.revision) == (4 << 20, 2 << 20, bytes([2, 1]), 1)
    assert rec.heartbeat_age < 10 and rec.as_dict()["pages"] == "21"
    stop.set()
    for p in procs:
        p.join(5)
    # Removed by their owners (no reader ran to reap them), and the directory went with the last one.
    assert not os.path.exists(root)


def test_limit_from_a_third_process_reaches_the_owner(root, spawn):
    stop = spawn.stop
    a, b = spawn.ctx.Pipe()
    spawn(workers.follow_control, root, b, stop)
    name = a.recv()
    c, d = spawn.ctx.Pipe()
    spawn(workers.set_limit, root, name, 16 << 20, 4 << 20, d)
    status, revision = c.recv()
    assert status == "ok"
    t0 = time.monotonic()
    rec = _wait_for(lambda: (r := registry.read(name, root)).control_ack == revision and r)
    assert time.monotonic() - t0 < 1.0
    assert (rec.limit, rec.min) == (16 << 20, 4 << 20)
    assert rec.control == registry.Control(16 << 20, 4 << 20, revision)
    registry.set_control(name, limit=None, root=root)  # unlimit, from this process this time
    rec = _wait_for(lambda: (r := registry.read(name, root)).control_ack == revision + 1 and r)
    assert rec.limit is None and rec.min == 4 << 20
    stop.set()


def test_bad_limit_from_another_process_changes_nothing(root, spawn):
    stop = spawn.stop
    a, b = spawn.ctx.Pipe()
    spawn(workers.publish, root, b, stop)
    name = a.recv()
    registry.set_control(name, limit=8 << 20, minimum=4 << 20, root=root)
    c, d = spawn.ctx.Pipe()
    spawn(workers.set_limit, root, name, 2 << 20, None, d)
    status, message = c.recv()
    assert status == "LimitBelowMinimum" and "minimum" in message
    assert registry.read(name, root).control == registry.Control(8 << 20, 4 << 20, 1)
    stop.set()


def test_sigkilled_process_is_reaped_even_as_a_zombie(root):
    child = subprocess.Popen([sys.executable, "-m", "tests.registry.workers", root], stdout=subprocess.PIPE,
                             cwd=Path(__file__).parents[2], text=True)
    try:
        name = child.stdout.readline().strip()
        assert [r.name for r in registry.list_records(root)] == [name]
        os.kill(child.pid, signal.SIGKILL)
        # Not waited for yet: the child is a zombie, whose pid still exists but whose lock is gone.
        _wait_for(lambda: open(f"/proc/{child.pid}/stat").read().split(") ")[1][0] == "Z")
        assert registry.list_records(root) == []  # never trusted, even before it can be reaped
        # The kernel drops a dead process's flock a few ms after it turns zombie (deferred file release);
        # until then the record is hidden but kept, then the next reader reaps it.
        _wait_for(lambda: registry.list_records(root) == [] and not registry.record_path(name, root).exists())
        assert not os.path.exists(root)  # the reaper removed the emptied directory too
        with pytest.raises(registry.PoolNotFound):
            registry.read(name, root)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_non_owner_cannot_delete_a_live_record(root, spawn):
    stop = spawn.stop
    a, b = spawn.ctx.Pipe()
    spawn(workers.publish, root, b, stop, "m", "shared-name")
    name = a.recv()
    with pytest.raises(registry.RecordOwned):
        registry.remove(name, root)
    assert registry.reap(root) == []
    with pytest.raises(registry.RecordExists):
        registry.Publisher("m", 1 << 20, 1 << 20, name="shared-name", root=root)
    assert [r.name for r in registry.list_records(root)] == [name]
    stop.set()


def test_name_of_a_dead_owner_can_be_taken_over(root, spawn):
    child = subprocess.Popen([sys.executable, "-m", "tests.registry.workers", root], stdout=subprocess.PIPE,
                             cwd=Path(__file__).parents[2], text=True)
    name = child.stdout.readline().strip()
    child.kill()
    child.wait()
    child.stdout.close()
    with registry.Publisher("m", 1 << 20, 1 << 20, name=name, root=root) as pub:  # stale record reaped
        assert registry.read(name, root).pid == os.getpid() == pub.record().pid


def test_interpreter_exit_removes_the_record(root):
    code = "from kvlab import registry; import sys; p = registry.Publisher('m', 1 << 20, 1 << 20, root=sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, root], check=True, cwd=Path(__file__).parents[2])
    assert not os.path.exists(root) or os.listdir(root) == []
