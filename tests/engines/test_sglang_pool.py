"""SGLang's own KV pool, allocators and RadixCache, in-process over kvlab's host backend.

Real SGLang objects (sglang 0.5.23): ``MHATokenToKVPool`` (kvlab's subclass), ``PagedTokenToKVPoolAllocator``
and ``TokenToKVPoolAllocator`` (kvlab's subclasses) and ``RadixCache``, driven the way SGLang's scheduler
drives them. Resident bytes are read from the kernel's page tables. SGLang 0.5.23's pool module imports
torchvision, whose PyPI builds need a CUDA torch build: where that is missing these tests skip (see README).
"""

import os
import signal
import time

import pytest
import torch

from tests.residency import resident_bytes


def _import_sglang():
    import importlib.util

    if importlib.util.find_spec("sglang") is None:
        pytest.skip("sglang is not installed here: `make test-sglang` builds .venv-sgl (torch 2.14.1, sglang 0.5.23) "
                    "and runs these tests", allow_module_level=True)
    try:
        import sglang.srt.mem_cache.memory_pool  # noqa: F401
        import sglang.srt.mem_cache.radix_cache  # noqa: F401
    except Exception as e:  # ImportError, or torchvision's RuntimeError against a CPU torch
        pytest.skip(f"SGLang's KV pool does not import in this environment ({type(e).__name__}: {e}); "
                    "SGLang 0.5.23 imports torchvision, whose PyPI builds need torch's CUDA build (`make test-sglang`)",
                    allow_module_level=True)


_import_sglang()
pytestmark = pytest.mark.slow  # importing SGLang takes ~10-40 s on a 2-core machine

PAGE = 4096
LAYERS, HEADS, DIM = 2, 2, 16      # 128-byte rows in float32: 32 tokens fill a 4 KiB page


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("KVLAB_PAGE_SIZE", str(PAGE))
    monkeypatch.setenv("KVLAB_RESERVE", "0")
    monkeypatch.setenv("KVLAB_IDLE_RELEASE", "0")
    for key in ("KVLAB_LIMIT", "KVLAB_MIN", "KVLAB_POOL_NAME", "KVLAB_HEADROOM"):
        monkeypatch.delenv(key, raising=False)


def make(page_size=4, size=256):
    from kvlab.engines.sglang.allocator import ElasticPagedTokenToKVPoolAllocator, ElasticTokenToKVPoolAllocator
    from kvlab.engines.sglang.controller import PoolController
    from kvlab.engines.sglang.pool import ElasticMHATokenToKVPool

    pool = ElasticMHATokenToKVPool(size=size, page_size=page_size, dtype=torch.float32, head_num=HEADS,
                                   head_dim=DIM, layer_num=LAYERS, device="cpu", enable_memory_saver=False)
    if page_size == 1:
        alloc = ElasticTokenToKVPoolAllocator(size, torch.float32, "cpu", pool, False)
    else:
        alloc = ElasticPagedTokenToKVPoolAllocator(size, page_size, torch.float32, "cpu", pool, False)
    ctl = PoolController(alloc, model="tiny-sglang", context_len=32)
    return pool, alloc, ctl


def resident(pool):
    return resident_bytes(pool.kvlab_arena.base, pool.kvlab_arena.capacity)


def mapped_chunks(pool, ids, k_tokens):
    return {int(t) // k_tokens for t in ids}


@pytest.mark.parametrize("page_size", [1, 4])
def test_pages_are_mapped_on_alloc_and_released_when_freed_and_idle(env, page_size):
    pool, alloc, ctl = make(page_size)
    geo = pool.kvlab_geometry
    try:
        assert pool.kvlab_arena.mapped_bytes == geo.chunk_bytes  # chunk 0 only (page 0's padded slot)
        assert alloc.available_size() == 256  # SGLang sees its whole pool, mapped or not
        idx = alloc.alloc(96)
        chunks = mapped_chunks(pool, idx, geo.tokens_per_chunk)
        assert all(pool.kvlab_chunk_mapped(c) for c in chunks)
        for layer in range(LAYERS):  # SGLang writes its KV through the pool's own buffers
            k, v = pool.get_kv_buffer(layer)
            k[idx] = 1.0
            v[idx] = 2.0
        assert resident(pool) == pool.kvlab_arena.mapped_bytes == alloc.kvlab_book.n_mapped * geo.chunk_bytes
        assert pool.get_value_buffer(1)[idx].eq(2.0).all()
        alloc.free(idx)
        assert ctl.run(None, idle=True, now=time.monotonic()) > 0
        assert pool.kvlab_arena.mapped_bytes == geo.chunk_bytes and resident(pool) <= geo.chunk_bytes
        assert alloc.available_size() == 256
        again = alloc.alloc(96)  # maps again on demand
        assert again is not None and pool.kvlab_arena.mapped_bytes > geo.chunk_bytes
    finally:
        ctl.close()


def test_touching_an_unmapped_page_faults(env):
    pool, alloc, ctl = make()
    geo = pool.kvlab_geometry
    ctl.close()
    last = geo.slots - 1  # in the last chunk, never allocated: unmapped
    assert not pool.kvlab_chunk_mapped(last // geo.tokens_per_chunk)
    pid = os.fork()
    if pid == 0:  # the child writes where SGLang would write a token's K
        pool.get_key_buffer(0)[1] = 1.0  # chunk 0: mapped
        pool.get_key_buffer(0)[last] = 1.0
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV


def _radix(alloc, page_size):
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams
    from sglang.srt.mem_cache.radix_cache import RadixCache

    return RadixCache(CacheInitParams(disable=False, req_to_token_pool=None, token_to_kv_pool_allocator=alloc,
                                      page_size=page_size))


def _insert(cache, tokens, values):
    from array import array

    from sglang.srt.mem_cache.base_prefix_cache import InsertParams
    from sglang.srt.mem_cache.radix_cache import RadixKey

    cache.insert(InsertParams(key=RadixKey(array("q", tokens)), value=values))


def test_radix_cache_keeps_its_pages_mapped_and_eviction_releases_them(env, monkeypatch):
    monkeypatch.setenv("KVLAB_IDLE_RELEASE", "3600")
    pool, alloc, ctl = make()
    geo = pool.kvlab_geometry
    cache = _radix(alloc, 4)
    try:
        cached = alloc.alloc(64)
        _insert(cache, list(range(64)), cached)  # a finished request's prefix: the cache owns its pages
        scratch = alloc.alloc(96)
        alloc.free(scratch)
        now = time.monotonic()
        ctl.run(cache, idle=True, now=now)  # idle, grace not over: free chunks go, cached ones stay
        assert cache.evictable_size() == 64
        values = cache.all_values_flatten()
        assert all(pool.kvlab_chunk_mapped(c) for c in mapped_chunks(pool, values, geo.tokens_per_chunk))
        assert pool.kvlab_arena.mapped_bytes == (1 + len(mapped_chunks(pool, cached, geo.tokens_per_chunk))
                                                 - (0 in mapped_chunks(pool, cached, geo.tokens_per_chunk))
                                                 ) * geo.chunk_bytes
        # Past the idle grace the policy evicts the cache through SGLang's own evict(), then releases.
        ctl.run(cache, idle=True, now=now + 3601)
        assert cache.evictable_size() == 0
        assert pool.kvlab_arena.mapped_bytes == geo.chunk_bytes and resident(pool) <= geo.chunk_bytes
    finally:
        ctl.close()


def test_registry_record_and_a_limit(env):
    from kvlab import limits, registry

    pool, alloc, ctl = make()
    geo = pool.kvlab_geometry
    try:
        name = ctl.record.name
        idx = alloc.alloc(128)
        ctl.run(None, idle=False, now=time.monotonic())
        rec = registry.read(name)
        assert rec.model == "tiny-sglang" and rec.capacity == geo.num_chunks * geo.chunk_bytes
        assert rec.mapped == pool.kvlab_arena.mapped_bytes and rec.used > 0 and rec.device == "cpu"
        assert (rec.page_states() > 0).sum() * rec.page_size == rec.mapped

        limits.set_limit(name, 3 * geo.chunk_bytes)
        alloc.free(idx)
        ctl.run(None, idle=True, now=time.monotonic())
        rec = registry.read(name)
        assert rec.limit == 3 * geo.chunk_bytes and rec.control_ack == rec.control.revision
        assert pool.kvlab_arena.mapped_bytes <= 3 * geo.chunk_bytes
        assert alloc.available_size() == (3 * geo.pages_per_chunk - 1) * 4  # the rest is withheld
        assert alloc.alloc(4 * geo.tokens_per_chunk) is None  # SGLang's "no room": it waits or retracts
        assert pool.kvlab_arena.mapped_bytes <= 3 * geo.chunk_bytes
    finally:
        ctl.close()
    with pytest.raises(registry.PoolNotFound):  # closing the pool removes its record
        registry.read(name)


def test_a_failed_map_is_no_room_and_leaks_nothing(env):
    from kvlab.memory.faults import fail_map_after

    pool, alloc, ctl = make()
    try:
        with fail_map_after(0, "oom"):
            assert alloc.alloc(64) is None
        assert pool.kvlab_arena.mapped_bytes == pool.kvlab_geometry.chunk_bytes
        assert alloc.kvlab_book.n_mapped == 1 and alloc.available_size() == 256
        assert alloc.alloc(64) is not None
    finally:
        ctl.close()


def test_every_hook_target_exists_in_this_sglang():
    """The plugin's hooks name SGLang methods; a renamed one would leave SGLang silently static."""
    import dataclasses
    import pkgutil

    from sglang.srt.managers.scheduler_components.pool_stats_observer import PoolStats

    from kvlab.engines.sglang import compat

    compat.check(compat.installed_version())
    for target in (compat.BUILD_MHA_POOL, compat.BUILD_ALLOCATOR, compat.ON_IDLE, compat.AFTER_BATCH,
                   compat.CHECK_FULL_POOL):
        assert callable(pkgutil.resolve_name(target)), target
    assert dataclasses.is_dataclass(PoolStats)  # the conservation-check hook replaces one field


def test_the_entry_point_is_installed():
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="sglang.srt.plugins")}
    assert eps.get("kvlab") == "kvlab.engines.sglang:register"
