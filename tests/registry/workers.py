"""Code that runs in the child processes of the registry tests (spawned, so importable by name)."""

import os
import sys
import time

import numpy as np

from kvlab import registry

DEADLINE = 20.0  # children never outlive a hung test by long


def publish(root, conn, stop, model="m", name=None):
    """Publish a pool, send its name, keep it until told to stop."""
    with registry.Publisher(model, 64 << 20, 2 << 20, name=name, root=root, device="cpu") as pub:
        pub.update(mapped=4 << 20, used=2 << 20, pages=[2, 1])
        conn.send(pub.name)
        stop.wait(DEADLINE)


def follow_control(root, conn, stop):
    """An owner that applies whatever limit/min other processes request, and acknowledges it."""
    with registry.Publisher("follower", 64 << 20, 2 << 20, root=root) as pub:
        conn.send(pub.name)
        seen = 0
        while not stop.wait(0.002):
            c = pub.control()
            if c.revision != seen:
                seen = c.revision
                pub.update(limit=c.limit, min=c.min, control_ack=c.revision)


def set_limit(root, name, limit, minimum, conn):
    try:
        kw = {k: v for k, v in (("limit", limit), ("minimum", minimum)) if v is not None}
        conn.send(("ok", registry.set_control(name, root=root, **kw).revision))
    except registry.RegistryError as e:
        conn.send((type(e).__name__, str(e)))


def hammer_writer(root, conn, stop, max_pages=300):
    """Keep every field of the record equal to its revision, as fast as possible."""
    pub = registry.Publisher("hammer", max_pages * 4096, 4096, root=root)
    conn.send(pub.name)
    k = 0
    while not stop.is_set():
        k += 1
        n = k % max_pages + 1
        pub.update(mapped=k, used=k, retained=k, limit=k, min=k, n_maps=k, n_unmaps=k, control_ack=k,
                   pages=np.full(n, k & 0xFF, dtype=np.uint8))
    pub.close()
    conn.send(k)


def check_consistent(rec, max_pages=300) -> None:
    k = rec.revision
    values = (rec.mapped, rec.used, rec.retained, rec.limit, rec.min, rec.n_maps, rec.n_unmaps, rec.control_ack)
    if k == 0:
        assert rec.n_pages == 0
        return
    assert all(v == k for v in values), (k, values)
    assert rec.n_pages == k % max_pages + 1, (k, rec.n_pages)
    assert rec.pages == bytes([k & 0xFF]) * rec.n_pages, k


def hammer_reader(root, name, min_reads, min_revisions, timeout, conn):
    """Read as fast as possible until ``min_reads`` reads have seen ``min_revisions`` distinct revisions (or
    ``timeout`` s pass: a loaded machine is slow, not wrong); report (reads, distinct revisions, failure or None)."""
    reads, seen, end = 0, set(), time.monotonic() + timeout
    try:
        while (reads < min_reads or len(seen) < min_revisions) and time.monotonic() < end:
            rec = registry.read(name, root=root)
            check_consistent(rec)
            seen.add(rec.revision)
            reads += 1
        conn.send((reads, len(seen), None))
    except Exception as e:  # report to the test rather than dying silently
        conn.send((reads, len(seen), repr(e)))


def hammer_control(root, name, base, count, conn):
    """Request limit == min == a fresh value, `count` times (another process does the same)."""
    for i in range(count):
        v = (base + i) * 4096
        registry.set_control(name, limit=v, minimum=0, root=root)
        registry.set_control(name, limit=v, minimum=v, root=root)
    conn.send(count)


if __name__ == "__main__":  # `python -m tests.registry.workers ROOT`: publish, print the name, sleep
    pub = registry.Publisher("killme", 8 << 20, 2 << 20, root=sys.argv[1])
    print(pub.name, flush=True)
    time.sleep(DEADLINE)
    os._exit(0)
