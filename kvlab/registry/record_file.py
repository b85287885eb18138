"""An open, mapped record file and what can be done with one: judge its owner, reap it, snapshot it.

Ownership is a flock: the owner takes LOCK_EX before the record is visible and holds it for its lifetime;
the kernel drops it when the process dies, even on SIGKILL. Deleting a record requires that lock, so an
owner's record is never deleted under it. Whether a record is *trusted* is decided by the owner's
(pid, start time), which a reused pid does not match; across pid namespaces the lock is the only witness.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import time
from pathlib import Path

import numpy as np

from . import proc
from .errors import RecordBusy
from .record import (PAGES_OFF, SUFFIX, VERSION, Control, Header, Record, decode_header, try_read_control,
                     try_read_data)


class RecordFile:
    """An open record file, mapped; ``words`` is its uint64 view for the sequence words."""

    def __init__(self, path: Path, write: bool = False, fd: int | None = None):
        self.path = path
        self.fd = fd if fd is not None else os.open(path, (os.O_RDWR if write else os.O_RDONLY) | os.O_CLOEXEC)
        try:
            st = os.fstat(self.fd)
            self.ident = (st.st_dev, st.st_ino)
            self.mm = mmap.mmap(self.fd, st.st_size, access=mmap.ACCESS_WRITE if write else mmap.ACCESS_READ) \
                if st.st_size else None
            self.header: Header | None = decode_header(self.mm) if self.mm else None
            # Only the words before the pages are ever read as integers (the sequence words).
            self.words = np.frombuffer(self.mm, dtype="<u8", count=PAGES_OFF // 8) \
                if self.header and self.header.version == VERSION else None
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        self.words = None  # the mmap cannot close while numpy still exports its buffer
        try:
            if self.mm is not None:
                self.mm.close()
        except BufferError:
            pass  # a caller still holds a view into it: the mapping goes when that view does
        os.close(self.fd)

    def __enter__(self) -> "RecordFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def readable(self) -> bool:
        """A record of our version whose name matches its file (a renamed or copied file is not trusted)."""
        h = self.header
        return h is not None and h.version == VERSION and h.name + SUFFIX == self.path.name

    def owner_alive(self) -> bool:
        h = self.header
        verdict = proc.alive(h.pid, h.start_ticks, h.pidns)
        if verdict is not None:
            return verdict
        try:  # another pid namespace: a shared probe fails only while the owner holds its exclusive lock
            fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        return False

    def reap(self) -> bool:
        """Unlink this dead owner's record. Holding its lock excludes the owner and other reapers; checking
        that the path still names our inode means we delete what we judged, never a newcomer's record."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a forked child still holds it, or another reaper is at work: try again later
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) != self.ident:
                return False
            os.unlink(self.path)
            return True
        except FileNotFoundError:
            return False
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def control(self, timeout: float = 0.5) -> Control:
        return _retry(lambda: try_read_control(self.mm, self.words), timeout, self.path)

    def snapshot(self, timeout: float = 0.5) -> Record:
        h = self.header
        fields, pages = _retry(lambda: try_read_data(self.mm, self.words, h.max_pages), timeout, self.path)
        limit = fields.pop("limit")
        fields.pop("n_pages")
        return Record(name=h.name, model=h.model, pid=h.pid, start_ticks=h.start_ticks, device=h.device,
                      device_uuid=h.device_uuid, capacity=h.capacity, page_size=h.page_size,
                      created=h.created_ns / 1e9, heartbeat=fields.pop("heartbeat_ns") / 1e9,
                      limit=None if limit < 0 else limit, control=self.control(timeout), pages=pages, ranks=h.ranks,
                      **fields)


def _retry(attempt, timeout: float, path: Path):
    """Spin briefly, then back off: a writer holds the seqlock for microseconds, but may lose the GIL."""
    deadline, n = time.monotonic() + timeout, 0
    while True:
        got = attempt()
        if got is not None:
            return got
        n += 1
        if n > 64:
            if time.monotonic() > deadline:
                raise RecordBusy(f"{path.name}: no consistent snapshot in {timeout:.2f}s; is its owner stopped?")
            time.sleep(min(1e-3, 1e-5 * n))
