"""Readers never see a torn record, while writers in other processes hammer it."""

import time

from kvlab import registry

from . import workers

MIN_READS, MIN_REVISIONS = 1000, 500  # the test means something only if the reads overlapped many writes
TIMEOUT = 60.0  # work-based, not time-based: under CPU load it takes longer, it does not fail


def test_readers_never_see_torn_data(root, spawn):
    a, b = spawn.ctx.Pipe()
    stop = spawn.stop
    spawn(workers.hammer_writer, root, b, stop)
    name = a.recv()
    c, d = spawn.ctx.Pipe()
    spawn(workers.hammer_reader, root, name, MIN_READS, MIN_REVISIONS, TIMEOUT, d)  # a reader in another process ...
    reads, seen, end = 0, set(), time.monotonic() + TIMEOUT
    while (reads < MIN_READS or len(seen) < MIN_REVISIONS) and time.monotonic() < end:
        for rec in registry.list_records(root):  # ... and one here, through list_records()
            workers.check_consistent(rec)
            seen.add(rec.revision)
            reads += 1
    other_reads, other_seen, failure = c.recv()
    stop.set()
    writes = a.recv()
    assert failure is None, failure
    assert reads >= MIN_READS and other_reads >= MIN_READS and len(seen) >= MIN_REVISIONS \
        and other_seen >= MIN_REVISIONS, (reads, len(seen), other_reads, other_seen, writes)
    print(f"\n{writes} writes; reads {reads} here ({len(seen)} revisions), {other_reads} in another process")


def test_control_writers_serialise_and_readers_see_whole_values(root, spawn):
    a, b = spawn.ctx.Pipe()
    spawn(workers.publish, root, b, spawn.stop)
    name = a.recv()
    pipes = []
    for base in (1, 5000):
        c, d = spawn.ctx.Pipe()
        spawn(workers.hammer_control, root, name, base, 1000, d)
        pipes.append(c)
    last, reads = -1, 0
    while not all(p.poll() for p in pipes):
        ctl = registry.read(name, root).control
        assert ctl.min in (0, ctl.limit), ctl  # each write sets (v, 0) or (v, v): a mix means a torn read
        assert ctl.revision >= last
        last, reads = ctl.revision, reads + 1
    assert [p.recv() for p in pipes] == [1000, 1000]
    # Two writers, 2 x 2000 writes: none lost, so the lock really serialised them.
    assert registry.read(name, root).control.revision == 4000
    assert reads > 100


def test_threads_of_the_owner_take_turns(root):
    import threading

    with registry.Publisher("threads", 300 * 4096, 4096, root=root) as pub:

        def writer(start):
            for k in range(start, start + 2000):
                pub.update(mapped=k, used=k, pages=bytes([k & 0xFF]) * (k % 300 + 1))

        threads = [threading.Thread(target=writer, args=(s,)) for s in (1, 100_000)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            rec = registry.read(pub.name, root)
            k = rec.mapped
            assert rec.used == k and rec.pages == bytes([k & 0xFF]) * (k % 300 + 1) if k else True
        for t in threads:
            t.join()
        assert registry.read(pub.name, root).revision == 4000  # no update lost to a race on the seqlock
