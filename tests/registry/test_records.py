"""One process: layout, validation, ownership rules that need no second process."""

import gc
import os
import shutil
import struct

import numpy as np
import pytest

from kvlab import registry
from kvlab.registry import record, store


def _pub(root, **kw):
    kw.setdefault("root", root)
    return registry.Publisher(kw.pop("model", "m"), kw.pop("capacity", 8 << 20), kw.pop("page_size", 2 << 20), **kw)


def test_roundtrip_of_every_field(root):
    with _pub(root, model="org/Model-1", name="p0", device="cuda:1", device_uuid="GPU-1234", limit=6 << 20,
              min=2 << 20) as pub:
        rev = pub.update(mapped=4 << 20, used=2 << 20, retained=2 << 20, n_maps=5, n_unmaps=3, map_ns=123456789,
                         pages=np.array([registry.PageState.USED, registry.PageState.MAPPED, 0, 0], dtype=np.uint8))
        rec = registry.read("p0")  # default root is the fixture's
        assert (rec.name, rec.model, rec.device, rec.device_uuid) == ("p0", "org/Model-1", "cuda:1", "GPU-1234")
        assert (rec.pid, rec.start_ticks) == (os.getpid(), registry.proc.me()[1])
        assert (rec.capacity, rec.page_size, rec.mapped, rec.used, rec.retained) == \
            (8 << 20, 2 << 20, 4 << 20, 2 << 20, 2 << 20)
        assert (rec.limit, rec.min, rec.n_maps, rec.n_unmaps, rec.revision) == (6 << 20, 2 << 20, 5, 3, rev)
        assert rec.map_ns == 123456789
        assert rec.control == registry.Control(6 << 20, 2 << 20, 0)
        assert list(rec.page_states()) == [2, 1, 0, 0]
        pub.update(used=0, limit=None, pages=[True, False])  # omitted fields stay; bools are states 1/0
        rec = registry.read("p0")
        assert (rec.mapped, rec.used, rec.limit, rec.pages) == (4 << 20, 0, None, b"\1\0")
        assert rec.revision == rev + 1 and pub.heartbeat() == rev + 2
        assert pub.record().heartbeat >= rec.heartbeat
    assert registry.list_records() == []


def test_default_names_are_unique_and_readable(root):
    with _pub(root, model="Qwen/Qwen3-0.6B") as a, _pub(root, model="Qwen/Qwen3-0.6B") as b:
        assert a.name != b.name and a.name.startswith(f"Qwen3-0.6B-{os.getpid()}-")


def test_bad_input_gives_typed_errors_and_changes_nothing(root):
    with pytest.raises(registry.PoolNotFound, match="no pool named 'nope'"):
        registry.read("nope")
    with pytest.raises(registry.PoolNotFound):
        registry.set_control("nope", limit=1 << 20)
    for bad in ("", "../x", ".hidden", "a/b", "x" * 64, 7):
        with pytest.raises(registry.InvalidName):
            registry.read(bad)
    with _pub(root, name="p", min=2 << 20) as pub:
        before = registry.read("p")
        for bad in (-1, "2G", 1.5, True, None):
            with pytest.raises(registry.InvalidSize):
                registry.set_control("p", minimum=bad)
        for bad in (-1, "2G", 1.5, True, 1 << 63):
            with pytest.raises(registry.InvalidSize):
                registry.set_control("p", limit=bad)
        with pytest.raises(registry.LimitBelowMinimum, match="below its minimum"):
            registry.set_control("p", limit=1 << 20)
        registry.set_control("p", limit=4 << 20)
        with pytest.raises(registry.LimitBelowMinimum, match="raise or remove the limit"):
            registry.set_control("p", minimum=6 << 20)
        with pytest.raises(registry.InvalidSize, match="exceeds its capacity"):
            registry.set_control("p", limit=None, minimum=9 << 20)
        assert registry.read("p").control == registry.Control(4 << 20, 2 << 20, 1)
        for kw in ({"mapped": -1}, {"used": "1"}, {"pages": np.zeros(5)}, {"pages": np.zeros((2, 2), int)},
                   {"pages": [300]}, {"pages": [0] * 5}):
            with pytest.raises(registry.InvalidSize):
                pub.update(**kw)
        after = registry.read("p")
        assert (after.revision, after.mapped, after.pages) == (before.revision, before.mapped, before.pages)
    with pytest.raises(registry.RecordClosed):
        pub.update(mapped=1)
    with pytest.raises(registry.RecordClosed):
        pub.control()
    for kw in ({"page_size": 0}, {"capacity": -1}, {"capacity": 1 << 60, "page_size": 4096}, {"model": "m" * 200},
               {"limit": -5}, {"limit": 1 << 20, "min": 2 << 20}, {"min": 16 << 20}):
        with pytest.raises((registry.InvalidSize, registry.InvalidName, registry.LimitBelowMinimum)):
            _pub(root, **kw)


def test_registry_dir_must_be_ours(root, tmp_path):
    os.makedirs(root)
    link = tmp_path / "link"
    link.symlink_to(root)
    with pytest.raises(registry.RegistryError, match="not a directory owned by"):
        registry.list_records(link)
    os.rmdir(root)


def _forge(pub, name, **patch):
    """Copy a live record under another name with patched identity, as a dead or foreign owner would leave it."""
    dst = pub.path.with_name(name + store.SUFFIX)
    shutil.copyfile(pub.path, dst)
    with open(dst, "r+b") as f:
        f.seek(72)
        f.write(name.encode().ljust(64, b"\0"))
        for field, value in patch.items():
            f.seek({"pid": 16, "start_ticks": 24, "pidns": 32}[field])
            f.write(struct.pack("<Q", value))
    return dst


def test_renamed_record_is_not_trusted(root):
    with _pub(root, name="real") as pub:
        copy = pub.path.with_name("copy" + store.SUFFIX)
        shutil.copyfile(pub.path, copy)  # header says "real": not what its file name claims
        assert [r.name for r in registry.list_records()] == ["real"]
        with pytest.raises(registry.PoolNotFound):
            registry.read("copy")
        with pytest.raises(registry.RecordOwned):  # its recorded owner (us) is alive: not ours to delete
            registry.remove("copy")
        os.unlink(copy)


def test_reused_pid_is_not_trusted(root):
    with _pub(root, name="real") as pub:
        # Same pid as a live process (ours) but another start time: the pid was reused.
        forged = _forge(pub, "reused", start_ticks=pub.record().start_ticks + 1)
        assert [r.name for r in registry.list_records()] == ["real"]
        assert not forged.exists()


def test_other_pid_namespace_is_judged_by_its_lock(root):
    import fcntl
    with _pub(root, name="real") as pub:
        forged = _forge(pub, "foreign", pidns=12345)
        fd = os.open(forged, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)  # its "owner" holds the lock: alive, listed, kept
        assert [r.name for r in registry.list_records()] == ["foreign", "real"]
        with pytest.raises(registry.RecordOwned):
            registry.remove("foreign")
        os.close(fd)  # owner gone: reaped
        assert registry.reap() == ["foreign"] and not forged.exists()


def test_dead_creator_temp_file_is_reaped(root):
    with _pub(root, name="real"):
        tmp = os.path.join(root, f"{store.TMP_PREFIX}999999999-1-{registry.proc.me()[2]}-abcd")
        open(tmp, "wb").close()
        registry.list_records()
        assert not os.path.exists(tmp)


def test_forked_child_cannot_remove_or_update_its_parents_record(root):
    pub = _pub(root, name="parent")
    pid = os.fork()
    if pid == 0:  # child: must leave the record alone, whatever it does
        code = 0
        try:
            pub.close()
            code |= 0 if pub.path.exists() else 1
            try:
                pub.update(mapped=1)
                code |= 2
            except registry.RecordClosed:
                pass
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    assert registry.read("parent").pid == os.getpid()
    pub.close()


def test_garbage_collected_publisher_removes_its_record(root):
    path = _pub(root, name="gone").path
    gc.collect()
    assert not path.exists()


def test_seqlock_and_crcs_reject_inconsistent_snapshots(root):
    with _pub(root, name="p") as pub:
        pub.update(mapped=2 << 20, pages=[1])
        view = pub._owned.file
        mm, words = view.mm, view.words
        words[record.DATA_SEQ] += 1  # the owner is mid-update (or stopped there)
        assert record.try_read_data(mm, words, pub.max_pages) is None
        with pytest.raises(registry.RecordBusy, match="no consistent snapshot"):
            registry.read("p", timeout=0.05)
        words[record.DATA_SEQ] += 1
        mm[record.DATA_OFF + 24] ^= 0xFF  # stores that arrived out of order: seq even, data not matching
        assert record.try_read_data(mm, words, pub.max_pages) is None
        mm[record.DATA_OFF + 24] ^= 0xFF
        assert registry.read("p").mapped == 2 << 20

        ctl = registry.set_control("p", limit=4 << 20)
        # A control writer killed after filling the next slot, before committing it: the last value stands.
        nxt = record.CTL_SLOTS[(ctl.revision + 1) & 1]
        mm[nxt:nxt + record.CTL_SLOT.size] = b"\xff" * record.CTL_SLOT.size
        assert pub.control() == ctl
        assert registry.set_control("p", limit=8 << 20).revision == ctl.revision + 1  # and the next writer just goes on
        cur = record.CTL_SLOTS[(ctl.revision + 1) & 1]
        mm[cur + 8] ^= 1  # a committed slot that does not match its crc is never returned
        assert record.try_read_control(mm, words) is None
        mm[cur + 8] ^= 1
        assert pub.control().limit == 8 << 20
        del mm, words


def test_owner_killed_mid_write_is_reaped_not_waited_for(root):
    with _pub(root, name="real") as pub:
        forged = _forge(pub, "dead", start_ticks=pub.record().start_ticks + 1)
        with open(forged, "r+b") as f:
            f.seek(record.DATA_OFF)
            f.write(struct.pack("<Q", 7))  # odd: it died inside update()
        assert [r.name for r in registry.list_records()] == ["real"]
        assert not forged.exists()


def test_layout_is_stable():
    # The identity prefix must never move: any kvlab version reaps by it.
    assert record.PREFIX.format == "<8sIIQQQ" and record.PREFIX.size == 40
    assert (record.CTL_OFF, record.DATA_OFF, record.PAGES_OFF, record.VERSION) == (384, 512, 640, 3)


def test_a_tensor_parallel_pool_is_one_record_with_its_ranks(root):
    with _pub(root, name="tp", capacity=64 << 20, ranks=2) as pub:
        pub.update(mapped=32 << 20)
        rec = registry.read("tp")
        assert (rec.ranks, rec.mapped, rec.rank_mapped) == (2, 32 << 20, [16 << 20, 16 << 20])
        assert rec.as_dict()["rank_mapped"] == [16 << 20, 16 << 20] and rec.as_dict()["ranks"] == 2
        assert [r.name for r in registry.list_records()] == ["tp"]
    with _pub(root, name="one") as pub:  # records of one rank (all until now) read as one rank
        assert registry.read("one").ranks == 1
    for bad in (0, -1, 1 << 16, 1.5, True):
        with pytest.raises(registry.InvalidSize):
            _pub(root, name="bad", ranks=bad)
    assert registry.list_records() == []


def test_records_written_before_ranks_existed_read_as_one_rank():
    # The rank count sits in what were zero padding bytes of the header: older records decode to 1.
    h = record.Header(record.MAGIC, record.VERSION, record.PAGES_OFF, 1, 2, 3, 4, 5, 6, 7, "n", "m", "cpu", "", 3)
    raw = bytearray(record.encode_header(h)) + bytes(record.PAGES_OFF - record.HEADER.size)
    assert record.decode_header(raw).ranks == 3
    raw[record.HEADER.size - 8:record.HEADER.size - 4] = bytes(4)
    assert record.decode_header(raw).ranks == 1
