"""Where records live, and what any process may do with them: list, read, reap, set limits.

Records are files in one private directory on tmpfs (``/dev/shm/kvlab-<uid>``), so `ls` shows them and
`rm` cleans up by hand. Files instead of multiprocessing.shared_memory because its resource tracker unlinks
segments it did not create and cannot tell who owns one. Who may delete what: see record_file.py.
"""

from __future__ import annotations

import fcntl
import numbers
import os
import struct
import tempfile
from pathlib import Path

from . import proc
from .control import check_control
from .errors import InvalidSize, PoolNotFound, RecordBusy, RecordOwned, RegistryError
from .names import check_name
from .record import CTL_OFF, CTL_SIZE, SUFFIX, TMP_PREFIX, Control, Record, write_control
from .record_file import RecordFile

_KEEP = object()
_default_root: Path | None = None


def default_root() -> Path:
    """``$KVLAB_REGISTRY_DIR`` or ``/dev/shm/kvlab-<uid>``; read once, so every caller agrees."""
    global _default_root
    if _default_root is None:
        env = os.environ.get("KVLAB_REGISTRY_DIR")
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
        _default_root = Path(env) if env else Path(shm) / f"kvlab-{os.getuid()}"
    return _default_root


def registry_dir(root: str | os.PathLike | None = None, create: bool = False) -> Path:
    """The registry directory, refused if another user owns it (they could forge or read our records)."""
    path = Path(root) if root is not None else default_root()
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.getuid():
        raise RegistryError(f"{path} is not a directory owned by uid {os.getuid()}: remove it or set "
                            f"KVLAB_REGISTRY_DIR to a private directory")
    return path


def check_size(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidSize(f"{what} must be a whole number of bytes, got {value!r}")
    if not 0 <= int(value) < 1 << 63:
        raise InvalidSize(f"{what} must be between 0 and 2**63-1 bytes, got {value}")
    return int(value)


def _open_live(name: str, root, write: bool = False) -> RecordFile:
    """The record of a live pool; reaps it and raises PoolNotFound if its owner is gone."""
    path = registry_dir(root) / (check_name(name) + SUFFIX)
    try:
        view = RecordFile(path, write)
    except FileNotFoundError:
        raise PoolNotFound(f"no pool named {name!r} in {path.parent}; `kvlab ctl list` shows the pools") from None
    h = view.header
    alive = h is not None and view.owner_alive()
    if alive and view.readable():
        return view
    if h is not None and not alive:
        view.reap()
    view.close()
    why = "its process is gone" if h is not None and not alive else "its record is not one this kvlab can read"
    raise PoolNotFound(f"pool {name!r} is not live: {why}")


def _scan(root):
    """Yield (name, view) for every live, readable record, and (name, None) for each dead one reaped."""
    d = registry_dir(root)
    try:
        entries = sorted(os.listdir(d))
    except FileNotFoundError:
        return
    reaped = False
    for entry in entries:
        if entry.startswith(TMP_PREFIX):
            _reap_tmp(d / entry)
        if not entry.endswith(SUFFIX):
            continue
        try:
            view = RecordFile(d / entry)
        except FileNotFoundError:
            continue  # closed while we listed
        with view:
            if view.header is None:
                continue
            if not view.owner_alive():
                if view.reap():
                    reaped = True
                    yield entry[:-len(SUFFIX)], None
            elif view.readable():
                yield entry[:-len(SUFFIX)], view
    if reaped:
        try:
            os.rmdir(d)  # as Publisher.close() does: the directory lives only while it holds records
        except OSError:
            pass


def _reap_tmp(path: Path) -> None:
    """A creator that died before publishing leaves ``.tmp-<pid>-<ticks>-<pidns>-<rand>``."""
    try:
        pid, ticks, ns = (int(x) for x in path.name[len(TMP_PREFIX):].split("-")[:3])
    except ValueError:
        return
    if proc.alive(pid, ticks, ns) is False:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def list_records(root: str | os.PathLike | None = None, timeout: float = 0.2) -> list[Record]:
    """Snapshots of every live pool, by name; records of dead processes are reaped on the way."""
    out = []
    for _, view in _scan(root):
        if view is not None:
            try:
                out.append(view.snapshot(timeout))
            except RecordBusy:
                continue  # its owner is stopped mid-write; it shows up again once it runs
    return out


def live_names(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the live, readable pools (dead owners' records reaped on the way), without snapshotting them:
    for readers that keep records open and snapshot them themselves."""
    return [name for name, view in _scan(root) if view is not None]


def read(name: str, root: str | os.PathLike | None = None, timeout: float = 0.5) -> Record:
    with _open_live(name, root) as view:
        return view.snapshot(timeout)


def reap(root: str | os.PathLike | None = None) -> list[str]:
    """Remove the records of dead processes now; returns their names."""
    return [name for name, view in _scan(root) if view is None]


def remove(name: str, root: str | os.PathLike | None = None) -> bool:
    """Remove a dead pool's record by name (True if it was there). A live pool's record is refused:
    only its owner removes it."""
    try:
        view = RecordFile(record_path(name, root))
    except FileNotFoundError:
        return False
    with view:
        if view.header is not None and view.owner_alive():
            raise RecordOwned(f"pool {name!r} belongs to live process {view.header.pid}; only that process can "
                              f"remove it (Publisher.close()), or stop the process")
        if not view.reap():
            raise RecordOwned(f"pool {name!r}: its lock is still held (by a forked child of its dead owner?)")
        return True


def _ofd_lock(fd: int, kind: int) -> None:
    # Open-file-description locks: per open(), so threads of one process exclude each other too, and
    # closing some other fd of the file does not drop them (as it would a POSIX lockf lock).
    fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, struct.pack("hhqqi4x", kind, os.SEEK_SET, CTL_OFF, CTL_SIZE, 0))


def set_control(name: str, limit=_KEEP, minimum=_KEEP, root: str | os.PathLike | None = None) -> Control:
    """Request a limit (None: no limit) and/or a minimum in bytes for one live pool; checked, then all or nothing.

    The registry's one writer of control blocks. People and notebooks use ``kvlab.limits.set_limit``/``set_min``,
    which take sizes such as "2G" or "30%" and targets such as a model or a Server, and can wait for the engine.
    """
    limit = limit if limit is _KEEP or limit is None else check_size(limit, "limit")
    minimum = minimum if minimum is _KEEP else check_size(minimum, "minimum")
    with _open_live(name, root, write=True) as view:
        _ofd_lock(view.fd, fcntl.F_WRLCK)
        try:
            cur = view.control()
            new_limit = cur.limit if limit is _KEEP else limit
            new_min = cur.min if minimum is _KEEP else minimum
            check_control(new_limit, new_min, view.header.capacity, pool=name,
                          changing="limit" if minimum is _KEEP else "minimum")
            revision = write_control(view.mm, view.words, new_limit, new_min)
        finally:
            _ofd_lock(view.fd, fcntl.F_UNLCK)
    return Control(new_limit, new_min, revision)


def record_path(name: str, root: str | os.PathLike | None = None) -> Path:
    return registry_dir(root) / (check_name(name) + SUFFIX)

