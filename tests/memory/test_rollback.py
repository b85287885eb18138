"""Maps are transactional: an injected failure midway leaves the arena exactly as it was."""

import pytest

from kvlab.memory import Arena, BackendError, MiB, OutOfPhysicalMemory, PagePool
from kvlab.memory._native_loader import native

from .helpers import resident_bytes

PAGE = 2 * MiB
OOM, BACKEND = 0, 2


@pytest.fixture(autouse=True)
def _no_leftover_injection():
    yield
    native().inject_host_map_failure(-1, OOM)


@pytest.mark.parametrize("fail_after", [0, 1, 3, 5, 7])
@pytest.mark.parametrize("kind,error", [(OOM, OutOfPhysicalMemory), (BACKEND, BackendError)])
def test_failure_midway_undoes_the_whole_call(fail_after, kind, error):
    with Arena(32 * PAGE) as a:
        a.map([0, 1, 20])
        before = a.mapped.copy()
        in_use = a.pool.stats()["in_use"]
        native().inject_host_map_failure(fail_after, kind)
        # Three runs (4-6, 9-10, 14-16): the failure lands in the first, second or third run.
        with pytest.raises(error, match="injected failure"):
            a.map([4, 5, 6, 9, 10, 14, 15, 16])
        assert (a.mapped == before).all()
        assert a.mapped_pages == 3
        assert resident_bytes(a.base, a.capacity) == 3 * PAGE
        assert a.pool.stats()["in_use"] == in_use  # handles went back to the pool
        a.map([4, 5, 6])  # and the arena still works
        assert a.mapped_pages == 6


def test_failed_map_is_not_counted_as_a_map():
    from kvlab.memory.faults import fail_map_after

    with Arena(8 * PAGE) as a:
        with fail_map_after(1, "oom"), pytest.raises(OutOfPhysicalMemory):
            a.map(range(4))
        assert a.stats()["map"]["calls"] == 0
        a.map(range(4))  # the injection is gone once the block ends
        assert a.mapped_pages == 4


def test_pool_physical_limit_raises_out_of_memory_and_changes_nothing():
    pool = PagePool("cpu", "16MiB")
    pool.trim()
    # The limit is the device's, over every handle size: leave room for four 16 MiB pages beyond what
    # other tests' pools still hold.
    pool.physical_limit = pool.device_held_bytes + 64 * MiB
    try:
        with Arena("256MiB", page_size="16MiB") as a:
            a.map([0, 1, 2])
            with pytest.raises(OutOfPhysicalMemory, match="physical limit"):
                a.map([5, 6])
            assert a.mapped.nonzero()[0].tolist() == [0, 1, 2]
            a.map([7])
            a.unmap([0])
            a.map([8])  # reuses the freed page: still within the cap
            assert a.mapped_pages == 4
    finally:
        pool.physical_limit = None
