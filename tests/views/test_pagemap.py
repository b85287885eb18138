"""PageMap on the Python side: what goes into the traits, and a live view of a real Arena."""


import numpy as np
import pytest

pytest.importorskip("anywidget", reason="kvlab.views needs anywidget (pip install anywidget ipywidgets)")

from kvlab.registry import PageState
from kvlab.views import PageMap
from tests.waiting import until  # noqa: E402


def test_states_travel_as_one_byte_per_page(cap, coalescer):
    pm = PageMap(coalescer=coalescer)
    states = np.array([PageState.UNMAPPED, PageState.MAPPED, PageState.USED, PageState.USED], np.uint8)
    assert pm.update("a", states, {"page_size": np.int64(2 << 20), "device": object.__class__})
    pm.flush()
    assert pm.states == {"a": states.tobytes()} and pm.order == ["a"]
    assert pm.infos["a"]["page_size"] == 2 << 20 and isinstance(pm.infos["a"]["device"], str)
    msg = cap.updates(pm.comm.comm_id)[-1]
    assert msg.buffers == [states.tobytes()], "states must be binary buffers, not JSON"
    assert pm.counts("a") == {"unmapped": 1, "mapped_free": 1, "in_use": 2}


def test_unchanged_update_sends_nothing(cap, coalescer):
    pm = PageMap(coalescer=coalescer)
    pm.update("a", np.zeros(8, np.uint8))
    pm.flush()
    sent = len(cap.updates(pm.comm.comm_id))
    assert not pm.update("a", np.zeros(8, np.uint8))
    pm.flush()
    assert len(cap.updates(pm.comm.comm_id)) == sent


def test_mask_and_bad_input():
    pm = PageMap()
    pm.update("m", np.array([True, False]))
    pm.flush()
    assert pm.states["m"] == bytes([PageState.USED, PageState.UNMAPPED])
    pm.update("hybrid", np.array([3, 2, 1]))  # in use by KV cache group 1, by group 0, mapped
    pm.flush()
    assert pm.states["hybrid"] == bytes([3, 2, 1])
    with pytest.raises(ValueError, match="0 \\(unmapped\\)"):
        pm.update("x", np.array([10]))
    with pytest.raises(ValueError, match="1-D"):
        pm.update("x", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="integers"):
        pm.update("x", np.array([0.5]))


def test_remove(coalescer):
    pm = PageMap(coalescer=coalescer)
    pm.update("a", [0])
    pm.update("b", [2])
    pm.remove("a")
    pm.remove("nope")
    pm.flush()
    assert pm.order == ["b"] and list(pm.states) == ["b"] and pm.pools == ["b"]


def test_from_arena_follows_map_and_unmap(cap, coalescer):
    from kvlab.memory import Arena

    with Arena("64MiB") as arena:
        pm = PageMap.from_arena(arena, name="kv", interval_s=0.02, coalescer=coalescer)
        assert pm.counts("kv")["unmapped"] == arena.n_pages == 32
        arena.map(range(4, 12))
        assert until(lambda: pm.states.get("kv", b"")[4:12] == bytes([PageState.USED] * 8), 2.0, 0.01)
        arena.unmap(range(4, 8))
        want = bytes([0] * 8 + [PageState.USED] * 4 + [0] * 20)
        assert until(lambda: pm.states["kv"] == want, 2.0, 0.01)
        # and a front end got it (the message leaves just after the trait is set: wait for it too)
        assert until(lambda: cap.state(pm.comm.comm_id)["states"]["kv"] == want, 2.0, 0.01)
        assert pm.infos["kv"]["page_size"] == arena.page_size
    assert until(lambda: pm.infos["kv"].get("label") == "closed" and not pm._tasks[0].active, 2.0, 0.01)
    assert pm.states["kv"] == bytes(32)
    pm.close()
    assert not pm._tasks


def test_from_arena_tells_free_pages_apart(coalescer):
    from kvlab.memory import Arena

    with Arena("64MiB") as arena:
        arena.map(range(4))
        used = np.zeros(arena.n_pages, bool)
        used[:2] = True
        pm = PageMap.from_arena(arena, name="kv", used=lambda: used, coalescer=coalescer)
        pm.flush()
        assert pm.states["kv"][:5] == bytes([PageState.USED, PageState.USED, PageState.MAPPED, PageState.MAPPED, PageState.UNMAPPED])
        pm.close()


def test_dashboard_draws_kv_cache_group_states_as_in_use_and_unknown_ones_as_mapped():
    from kvlab.views.dashboard import _page_lut

    lut = _page_lut()
    assert list(lut[[0, 1, 2, 3, 9, 10, 255]]) == [0, 1, 2, 3, 9, 1, 1]
