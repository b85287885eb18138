"""The same guarantees through the CUDA backend (GPU machine only; skipped elsewhere)."""

import pytest

from kvlab.memory import Arena, MiB, OutOfPhysicalMemory, PagePool
from kvlab.memory._native_loader import native

pytestmark = pytest.mark.gpu
PAGE = 2 * MiB


def device_used_bytes() -> int:
    """Used bytes of GPU 0 as NVML reports them (what nvidia-smi shows), else the driver's view."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used
    except ImportError:
        free, total = native().mem_info("cuda", 0)
        return total - free


@pytest.fixture
def pool():
    p = PagePool("cuda:0", PAGE)
    p.trim()
    yield p
    p.trim()


def test_device_memory_rises_and_falls_with_map_and_unmap(pool):
    pool.max_free = 0  # no retained pages: unmap must give memory back to the driver
    try:
        with Arena("4GiB", device="cuda:0") as a:
            idle = device_used_bytes()
            a.map(range(512))  # 1 GiB
            grown = device_used_bytes()
            a.unmap(range(512))
            shrunk = device_used_bytes()
        assert grown - idle >= 1000 * MiB
        assert grown - shrunk >= 1000 * MiB
        assert abs(shrunk - idle) <= 64 * MiB
    finally:
        pool.max_free = 32


def test_pool_retains_pages_until_trim(pool):
    with Arena("1GiB", device="cuda:0") as a:
        a.map(range(16))
        a.unmap(range(16))
        assert pool.stats()["free"] == 16
        held = device_used_bytes()
        assert pool.trim() == 16
        assert held - device_used_bytes() >= 30 * MiB


def test_torch_tensor_over_partly_mapped_arena():
    torch = pytest.importorskip("torch")
    with Arena("1GiB", device="cuda:0") as a:
        a.map([0, 1, 5])
        t = a.torch(torch.float16, (a.capacity // 2,))
        assert t.is_cuda and t.data_ptr() == a.base
        per_page = PAGE // 2
        t[:2 * per_page] = 1.0
        t[5 * per_page:6 * per_page] = 3.0
        torch.cuda.synchronize()
        assert float(t[:2 * per_page].float().sum()) == 2 * per_page
        assert float(t[5 * per_page:6 * per_page].float().sum()) == 3 * per_page


def test_cuda_graph_replays_over_remapped_pages():
    torch = pytest.importorskip("torch")
    with Arena("256MiB", device="cuda:0") as a:
        a.map(range(4))
        x = a.torch(torch.float32, (4 * PAGE // 4,))
        x.zero_()
        stream = torch.cuda.Stream()
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.stream(stream):
            with torch.cuda.graph(graph, stream=stream):
                x.add_(1.0)
        graph.replay()
        torch.cuda.synchronize()
        assert float(x.sum()) == x.numel()
        # Unmap and map again (possibly other physical pages): the captured addresses stay valid.
        a.unmap(range(4))
        a.map(range(4))
        x.zero_()
        graph.replay()
        graph.replay()
        torch.cuda.synchronize()
        assert float(x.sum()) == 2 * x.numel()


def test_physical_limit_gives_typed_error_and_rolls_back(pool):
    pool.physical_limit = pool.device_held_bytes + 8 * PAGE  # the device's limit, over all handle sizes
    try:
        with Arena("1GiB", device="cuda:0") as a:
            a.map(range(6))
            with pytest.raises(OutOfPhysicalMemory):
                a.map(range(10, 14))
            assert a.mapped.nonzero()[0].tolist() == list(range(6))
    finally:
        pool.physical_limit = None


def test_real_device_exhaustion_is_a_typed_error_not_a_crash():
    free, _ = native().mem_info("cuda", 0)
    too_much = (free // PAGE + 64) * PAGE
    with Arena(too_much, device="cuda:0") as a:
        with pytest.raises(OutOfPhysicalMemory, match="cuMemCreate"):
            a.map(range(a.n_pages))
        assert a.mapped_pages == 0
    PagePool("cuda:0", PAGE).trim()



def test_chunk_sized_handles_map_whole_and_give_memory_back():
    big = PagePool("cuda:0", 32 * MiB)
    big.trim()
    with Arena("2GiB", device="cuda:0", handle_size="32MiB") as a:
        idle = device_used_bytes()
        assert a.map(range(0, a.n_pages, 16)) == a.n_pages  # one page per handle backs all of them
        assert a.stats()["map"]["pages"] == 64  # 64 handles of 32 MiB
        grown = device_used_bytes()
        t = a.torch("float32", (a.capacity // 4,))
        t.fill_(1.0)
        assert float(t.sum()) == a.capacity // 4
        a.unmap_all()
        big.trim()
        shrunk = device_used_bytes()
    assert grown - idle >= 2 * 1024 * MiB
    assert grown - shrunk >= 2 * 1024 * MiB
