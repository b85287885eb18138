"""Physical handles larger than pages: one handle per chunk, whole-handle map/unmap, exact rollback,
pool reuse across arenas and handle sizes, and the device's byte limit across sizes (host backend)."""

import numpy as np
import pytest

from kvlab.memory import Arena, InvalidArgument, InvalidPages, LimitExceeded, MiB, OutOfPhysicalMemory, PagePool
from kvlab.memory.faults import fail_map_after

from .helpers import resident_bytes

PAGE, HANDLE = 2 * MiB, 16 * MiB
PER = HANDLE // PAGE


@pytest.fixture
def pool():
    p = PagePool("cpu", HANDLE)
    p.trim()
    yield p
    p.trim()


def test_a_page_maps_its_whole_handle_and_the_bitmap_stays_in_pages(pool):
    with Arena("64MiB", handle_size=HANDLE) as a:
        assert (a.n_pages, a.pages_per_handle) == (32, PER)
        assert a.map(3) == PER  # all eight pages of handle 0 became resident
        assert a.mapped.nonzero()[0].tolist() == list(range(PER))
        assert resident_bytes(a.base, a.capacity) == HANDLE
        x = np.from_dlpack(a.tensor("uint8", (a.capacity,)))
        x[:HANDLE] = 7
        assert a.map(range(PER)) == 0  # already mapped
        assert a.map([17, 30]) == 2 * PER  # handles 2 and 3, one driver run
        assert pool.stats()["in_use"] == 3
        assert a.stats()["map"]["pages"] == 3  # counted in handles
        assert a.unmap(range(2 * PER, 4 * PER)) == 2 * PER
        assert a.mapped_bytes == HANDLE and pool.stats()["in_use"] == 1
        assert int(x[:HANDLE].sum()) == 7 * HANDLE  # the handle that stayed kept its data


def test_unmapping_part_of_a_handle_is_refused_and_changes_nothing(pool):
    with Arena("64MiB", handle_size=HANDLE) as a:
        a.map([0, 8])
        with pytest.raises(InvalidPages, match="shares a physical handle with pages 8..15"):
            a.unmap([0, 1, 2, 3, 4, 5, 6, 7, 9])
        assert a.mapped_pages == 2 * PER  # not even the whole handle 0 of that call went
        assert a.unmap(range(PER, 2 * PER)) == PER
        assert a.unmap([20]) == 0  # a page of an unmapped handle: nothing to do, no error
        assert a.mapped.nonzero()[0].tolist() == list(range(PER))


@pytest.mark.parametrize("fail_after", [0, 1, 2, 4])
def test_injected_failure_rolls_back_every_handle_of_the_call(pool, fail_after):
    with Arena("128MiB", handle_size=HANDLE) as a:
        a.map(0)
        before, in_use = a.mapped.copy(), pool.stats()["in_use"]
        # Handles 2-3 and 5-7: two runs; the failure lands in the first or the second.
        with fail_map_after(fail_after, "backend"), pytest.raises(Exception, match="injected failure"):
            a.map([16, 24, 40, 48, 56])
        assert (a.mapped == before).all()
        assert resident_bytes(a.base, a.capacity) == HANDLE
        assert pool.stats()["in_use"] == in_use
        assert a.stats()["map"]["calls"] == 1
        a.map([16, 24])
        assert a.mapped_pages == 3 * PER


def test_arena_limit_counts_whole_handles(pool):
    with Arena("64MiB", handle_size=HANDLE, limit="32MiB") as a:
        a.map([0, 8])
        with pytest.raises(LimitExceeded, match="over its limit of 32 MiB"):
            a.map(16)
        assert a.mapped_pages == 2 * PER


def test_freed_handles_are_reused_by_the_next_arena_of_the_same_size(pool):
    with Arena("64MiB", handle_size=HANDLE) as a:
        a.map(range(a.n_pages))
    created = pool.stats()["created"]
    assert pool.stats()["free"] == 4  # kept: 64 MiB of free handles by default
    with Arena("64MiB", handle_size=HANDLE) as b:
        b.map(range(0, 24))
        assert b.stats()["pool_hits"] == 3
    assert pool.stats()["created"] == created


def test_sizes_keep_separate_free_lists_and_share_the_device_byte_limit(pool):
    small = PagePool("cpu", PAGE)
    small.trim()
    pool.physical_limit = pool.device_held_bytes + 2 * HANDLE
    try:
        assert small.physical_limit == pool.physical_limit  # one limit per device
        with Arena("64MiB", handle_size=HANDLE) as big, Arena("64MiB") as little:
            big.map(0)
            little.map(range(PER))  # 16 MiB of 2 MiB handles: the limit is reached in bytes
            with pytest.raises(OutOfPhysicalMemory, match="physical limit"):
                big.map(8)
            with pytest.raises(OutOfPhysicalMemory):
                little.map(PER)
            assert big.mapped_pages == PER and little.mapped_pages == PER
            big.unmap(range(PER))
            # The freed 16 MiB handle sits in its own free list: 2 MiB slots cannot use it, and it
            # still counts against the limit until it goes back to the driver.
            assert pool.stats()["free"] == 1
            with pytest.raises(OutOfPhysicalMemory):
                little.map(PER)
            assert pool.trim() == 1
            little.map(range(PER, 2 * PER))
            assert little.mapped_pages == 2 * PER
    finally:
        pool.physical_limit = None
        small.trim()


def test_bad_handle_sizes_are_refused():
    with pytest.raises(InvalidArgument, match="multiple of the page size"):
        Arena("64MiB", handle_size="3MiB")
    with pytest.raises(InvalidArgument, match="multiple of the page size"):
        Arena("64MiB", page_size="4MiB", handle_size="2MiB")


def test_capacity_rounds_up_to_whole_handles():
    with Arena("20MiB", handle_size=HANDLE) as a:
        assert a.capacity == 2 * HANDLE and a.n_pages == 2 * PER
