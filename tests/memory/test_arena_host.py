"""The host backend does what the CUDA backend does, observably: memory is resident only while mapped."""

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from kvlab.memory import Arena, MiB

from .helpers import resident_bytes

PAGE = 2 * MiB


@pytest.fixture
def arena():
    a = Arena(64 * MiB, device="cpu")
    yield a
    a.close()


def test_reserve_maps_nothing(arena):
    assert arena.n_pages == 32
    assert arena.mapped_bytes == 0
    assert not arena.mapped.any()
    assert resident_bytes(arena.base, arena.capacity) == 0


def test_resident_memory_follows_map_and_unmap(arena):
    assert arena.map(range(0, 8)) == 8
    assert resident_bytes(arena.base, arena.capacity) == 8 * PAGE
    assert arena.mapped_bytes == 8 * PAGE
    assert arena.unmap([2, 3, 4]) == 3
    assert resident_bytes(arena.base, arena.capacity) == 5 * PAGE
    assert arena.mapped.tolist()[:8] == [True, True, False, False, False, True, True, True]
    arena.unmap_all()
    assert resident_bytes(arena.base, arena.capacity) == 0


def test_map_is_idempotent_and_accepts_many_forms(arena):
    assert arena.map(3) == 1
    assert arena.map([3, 3, 4]) == 1
    assert arena.map(np.array([4, 5], dtype=np.int32)) == 1
    assert arena.map(range(3, 6)) == 0
    mask = np.zeros(arena.n_pages, dtype=bool)
    mask[[3, 4]] = True
    assert arena.unmap(mask) == 2
    assert arena.unmap([3]) == 0
    assert arena.mapped_pages == 1


def test_numpy_view_keeps_data_while_mapped(arena):
    arena.map(arena.pages_for(0, 2 * PAGE))
    x = np.from_dlpack(arena.tensor("float32", (2, PAGE // 4)))
    x[0, :] = 1.5
    x[1, :] = np.arange(PAGE // 4, dtype=np.float32)
    arena.map(range(2, 10))  # other maps do not disturb mapped pages
    arena.unmap(range(2, 10))
    assert float(x[0].sum()) == 1.5 * (PAGE // 4)
    assert x[1, 12345] == 12345


def test_torch_view_over_partly_mapped_arena(arena):
    torch = pytest.importorskip("torch")
    arena.map([1])
    t = arena.torch(torch.bfloat16, (arena.capacity // 2,))  # spans unmapped pages: creating it is fine
    assert t.device.type == "cpu" and t.dtype == torch.bfloat16 and t.numel() == arena.capacity // 2
    half = PAGE // 2
    t[half:2 * half] = 2.0
    assert float(t[half:2 * half].float().sum()) == 2.0 * half


def test_strided_view_and_offset(arena):
    arena.map(range(4))
    v = np.from_dlpack(arena.tensor("int32", (4, 8), offset=PAGE, strides=(16, 2)))
    v[:] = 7
    flat = np.from_dlpack(arena.tensor("int32", (64,), offset=PAGE))
    assert flat[0] == 7 and flat[1] == 0 and flat[2] == 7 and flat[48] == 7


def _reserved(base: int) -> bool:
    with open("/proc/self/maps") as f:
        return any(int(line.split("-")[0], 16) <= base < int(line.split("-")[1].split()[0], 16) for line in f)


def test_view_keeps_reservation_alive_after_close(arena):
    arena.map([0])
    view = np.from_dlpack(arena.tensor("uint8", (16,)))
    base = arena.base
    arena.close()
    assert arena.closed and resident_bytes(base, 64 * MiB) == 0
    assert _reserved(base)  # unmapped, but nobody else can be handed these addresses while the view lives
    del view
    assert not _reserved(base)


def test_view_after_close_is_refused(arena):
    from kvlab.memory import ArenaClosed

    arena.close()
    with pytest.raises(ArenaClosed):
        arena.tensor("uint8", (16,))


_CHILD = """
import numpy as np
from kvlab.memory import Arena
a = Arena("8MiB")
a.map([0])
x = np.from_dlpack(a.tensor("uint8", (a.capacity,)))
x[0] = 1                      # mapped page: fine
print("mapped ok", flush=True)
x[{offset}] = 1               # unmapped page: must fault
print("no fault", flush=True)
"""


@pytest.mark.parametrize("offset", [2 * PAGE, PAGE + 5])
def test_touching_unmapped_page_kills_with_sigsegv(offset):
    proc = subprocess.run([sys.executable, "-c", _CHILD.format(offset=offset)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONFAULTHANDLER": ""})
    assert "mapped ok" in proc.stdout
    assert "no fault" not in proc.stdout
    assert proc.returncode == -signal.SIGSEGV


def test_unmapped_after_unmap_faults_too():
    code = _CHILD.replace('x[{offset}] = 1', 'a.unmap([0]); x[0] = 1').format()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGSEGV


def test_stats_count_calls_pages_and_pool(arena):
    arena.map(range(0, 4))
    arena.map([10, 11])
    arena.unmap(range(0, 4))
    s = arena.stats()
    assert s["map"]["calls"] == 2 and s["map"]["pages"] == 6
    assert s["unmap"]["calls"] == 1 and s["unmap"]["pages"] == 4
    assert sum(s["map"]["histogram_log2_us"]) == 2
    assert s["map"]["total_ns"] > 0
    assert s["pool_hits"] + s["pool_misses"] == 6


def test_pool_reuses_pages_and_trims():
    from kvlab.memory import PagePool

    pool = PagePool("cpu", "4MiB")  # its own page size, so other tests don't share it
    pool.trim()
    with Arena("64MiB", page_size="4MiB") as a:
        before = pool.stats()
        a.map(range(4))
        a.unmap(range(4))
        a.map(range(4, 8))  # all four come from the free list
        after = pool.stats()
        assert after["misses"] - before["misses"] == 4
        assert after["hits"] - before["hits"] == 4
        assert after["in_use"] == 4
    assert pool.stats()["in_use"] == 0
    assert pool.stats()["free"] >= 4
    assert pool.trim() >= 4
    assert pool.stats()["free"] == 0


def test_pool_max_free_bounds_retained_pages():
    from kvlab.memory import PagePool

    pool = PagePool("cpu", "8MiB")
    pool.max_free = 2
    with Arena("128MiB", page_size="8MiB") as a:
        a.map(range(10))
    assert pool.stats()["free"] == 2


def test_concurrent_threads_map_disjoint_pages():
    with Arena("256MiB") as a:
        errors = []

        def work(k):
            try:
                for _ in range(20):
                    a.map(range(k * 16, k * 16 + 16))
                    a.unmap(range(k * 16, k * 16 + 8))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert a.mapped_pages == 8 * 8
        assert resident_bytes(a.base, a.capacity) == 64 * PAGE
