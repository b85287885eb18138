"""The owner's side: a pool publishes its record, keeps it current, and removes it when it goes."""

from __future__ import annotations

import fcntl
import os
import secrets
import threading
import time
import weakref
import zlib

import numpy as np

from . import proc
from .control import check_control
from .errors import InvalidSize, RecordClosed, RecordExists
from .record import (MAGIC, MAX_PAGES, PAGES_OFF, SUFFIX, TMP_PREFIX, VERSION, Control, Header, Record, encode_header,
                     file_size, init_control, write_data)
from .names import check_name, default_name
from .store import check_size, registry_dir
from .record_file import RecordFile

_KEEP = object()
_COUNTERS = ("mapped", "used", "retained", "min", "n_maps", "n_unmaps", "control_ack", "map_ns")
_live: "weakref.WeakSet[_Owned]" = weakref.WeakSet()


class _Owned:
    """The record file, held open and locked by its owner. Kept apart from Publisher so the finalizer
    (which runs at interpreter exit or when the Publisher is collected) does not keep the Publisher alive."""

    def __init__(self, file: RecordFile, pid: int):
        self.file, self.pid, self.closed = file, pid, False
        _live.add(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        path = self.file.path
        try:  # unlink only our own inode: never a record that replaced ours under the same name
            if os.stat(path).st_ino == self.file.ident[1]:
                os.unlink(path)
        except FileNotFoundError:
            pass
        self.file.close()  # drops the lock only after the name is gone
        try:
            os.rmdir(path.parent)  # the directory lives only while it holds records; fails if it still does
        except OSError:
            pass

    def disown(self) -> None:
        """In a forked child: let go of the parent's lock without touching its record."""
        if not self.closed:
            self.closed = True
            self.file.close()


def _after_fork_in_child() -> None:
    # A forked child shares its parent's locked file description. Closing our copy means the lock dies
    # with the parent, so the parent's record gets reaped even if children outlive it.
    for owned in list(_live):
        owned.disown()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Publisher:
    """Publishes one pool's record; only the process that created it may update or remove it.

    ``name`` defaults to ``<model>-<pid>-<random>``; an explicit name that a live process already uses
    raises RecordExists. Sizes are bytes. ``limit``/``min`` seed the control block that other processes
    change through ``kvlab.limits`` (or ``kvlab.registry.set_control``); ``control()`` reads it.
    The record is removed by close(), at interpreter exit, or when the Publisher is garbage-collected;
    if the process is killed, readers reap it.
    """

    def __init__(self, model: str, capacity: int, page_size: int, *, name: str | None = None,
                 device: str = "cpu", device_uuid: str = "", limit: int | None = None, min: int = 0,
                 max_pages: int | None = None, root: str | os.PathLike | None = None, ranks: int = 1):
        capacity, page_size = check_size(capacity, "capacity"), check_size(page_size, "page_size")
        if page_size == 0:
            raise InvalidSize("page_size must be positive")
        max_pages = -(-capacity // page_size) if max_pages is None else check_size(max_pages, "max_pages")
        if max_pages > MAX_PAGES:
            raise InvalidSize(f"{max_pages} pages is more than a record holds ({MAX_PAGES}): publish bigger pages")
        limit = None if limit is None else check_size(limit, "limit")
        min = check_size(min, "min")
        check_control(limit, min, capacity)
        if isinstance(ranks, bool) or not isinstance(ranks, int) or not 1 <= ranks < 1 << 16:
            raise InvalidSize(f"ranks must be a whole number from 1 to 65535, got {ranks!r}")
        pid, ticks, ns = proc.me()
        name = check_name(name if name is not None else default_name(str(model), pid))
        header = encode_header(Header(MAGIC, VERSION, PAGES_OFF, pid, ticks, ns, max_pages, time.time_ns(),
                                      capacity, page_size, name, str(model), str(device), str(device_uuid), ranks))
        self._fields = dict(revision=0, mapped=0, used=0, retained=0, limit=-1 if limit is None else limit,
                            min=min, n_maps=0, n_unmaps=0, heartbeat_ns=time.time_ns(), n_pages=0, control_ack=0,
                            map_ns=0)
        self._pages_crc = zlib.crc32(b"")
        self.name, self.max_pages = name, max_pages
        self._lock = threading.Lock()  # a seqlock has one writer: threads of the owner take turns
        file = self._create(registry_dir(root, create=True), root, header, file_size(max_pages), limit, min)
        self._owned = _Owned(file, pid)
        self._finalizer = weakref.finalize(self, self._owned.close)

    def _create(self, d, root, header: bytes, size: int, limit, minimum) -> RecordFile:
        """Build the record under a temporary name, locked, then link() it into place: link fails if the
        name exists (O_EXCL for publication), and nobody ever sees a half-written or unlocked record."""
        pid, ticks, ns = proc.me()
        for _ in range(5):
            tmp = d / f"{TMP_PREFIX}{pid}-{ticks}-{ns}-{secrets.token_hex(4)}"
            try:
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                break
            except FileNotFoundError:  # the last publisher removed the empty directory meanwhile
                registry_dir(root, create=True)
        else:
            raise RecordExists(f"could not create a record in {d}")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, size)
            os.pwrite(fd, header, 0)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        try:
            file = RecordFile(tmp, write=True, fd=fd)  # closes fd itself if it fails
        except BaseException:
            os.unlink(tmp)
            raise
        try:
            init_control(file.mm, limit, minimum)
            write_data(file.mm, file.words, self._fields, b"", self._pages_crc)
            file.path = d / (self.name + SUFFIX)
            self._link(tmp, file.path)
        except BaseException:
            file.close()
            raise
        finally:
            os.unlink(tmp)
        return file

    def _link(self, tmp, path) -> None:
        for _ in range(2):
            try:
                os.link(tmp, path)
                return
            except FileExistsError:
                try:
                    with RecordFile(path) as old:
                        if old.header is None or old.owner_alive() or not old.reap():
                            break
                except FileNotFoundError:
                    pass  # it went away meanwhile: try again
        raise RecordExists(f"a live process already publishes a pool named {self.name!r}: pick another name "
                           f"or leave name=None for a unique one")

    def _file(self) -> RecordFile:
        if self._owned.closed:
            raise RecordClosed(f"pool {self.name!r}: publisher is closed (or this is a forked child of its owner)")
        return self._owned.file

    @property
    def path(self):
        return self._owned.file.path

    @property
    def closed(self) -> bool:
        return self._owned.closed

    def update(self, *, mapped: int | None = None, used: int | None = None, retained: int | None = None,
               limit=_KEEP, min: int | None = None, n_maps: int | None = None, n_unmaps: int | None = None,
               control_ack: int | None = None, map_ns: int | None = None, pages=None) -> int:
        """Publish new values (omitted ones stay) and a heartbeat; returns the record's revision.

        ``pages``: one state per page (``PageState``, or bools), at most ``max_pages`` long.
        ``limit=None`` publishes "no limit". ``control_ack``: the control revision now applied. ``map_ns``:
        total nanoseconds spent mapping so far.
        """
        with self._lock:
            return self._update(mapped=mapped, used=used, retained=retained, limit=limit, min=min, n_maps=n_maps,
                                n_unmaps=n_unmaps, control_ack=control_ack, map_ns=map_ns, pages=pages)

    def _update(self, *, mapped, used, retained, limit, min, n_maps, n_unmaps, control_ack, map_ns, pages) -> int:
        file = self._file()
        new = dict(self._fields)
        given = dict(mapped=mapped, used=used, retained=retained, min=min, n_maps=n_maps, n_unmaps=n_unmaps,
                     control_ack=control_ack, map_ns=map_ns)
        for key in _COUNTERS:
            if given[key] is not None:
                new[key] = check_size(given[key], key)
        if limit is not _KEEP:
            new["limit"] = -1 if limit is None else check_size(limit, "limit")
        data = None
        if pages is not None:
            data = self._encode_pages(pages)
            new["n_pages"], crc = len(data), zlib.crc32(data)
        new["revision"] += 1
        new["heartbeat_ns"] = time.time_ns()
        write_data(file.mm, file.words, new, data, crc if data is not None else self._pages_crc)
        self._fields = new
        if data is not None:
            self._pages_crc = crc
        return new["revision"]

    def _encode_pages(self, pages) -> bytes:
        if isinstance(pages, (bytes, bytearray, memoryview)):
            arr = np.frombuffer(pages, dtype=np.uint8)
        else:
            arr = np.asarray(pages)
            if arr.ndim != 1 or arr.dtype.kind not in "biu":
                raise InvalidSize(f"pages must be a 1-D array of page states, got {arr.dtype} with shape {arr.shape}")
            if arr.dtype != np.uint8 and arr.dtype != np.bool_ and arr.size and (arr.min() < 0 or arr.max() > 255):
                raise InvalidSize("page states must be between 0 and 255")
        if len(arr) > self.max_pages:
            raise InvalidSize(f"pool {self.name!r}: {len(arr)} pages given, the record holds {self.max_pages}")
        return arr.astype(np.uint8, copy=False).tobytes()

    def heartbeat(self) -> int:
        return self.update()

    def control(self, timeout: float = 0.5) -> Control:
        """The limit/min other processes asked for; react when ``revision`` changes, then ack it."""
        return self._file().control(timeout)

    def record(self) -> Record:
        return self._file().snapshot()

    def close(self) -> None:
        """Remove the record. Idempotent; in a forked child it leaves the parent's record alone."""
        self._finalizer()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Publisher({self.name!r}, {'closed' if self.closed else 'open'})"
