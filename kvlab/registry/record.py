"""Binary layout of one registry record, its codecs and the registry's typed errors.

A record is one small file, little-endian and 8-byte aligned, never pickled (any reader, in any language or
kvlab version, can decode it):

    0    header   written once, before the file is published under its name, so it never changes.
                  Its first 48 bytes (magic .. pidns) keep this layout in every version, so that any
                  kvlab can tell whether a record's owner is alive and reap it.
    384  control  limit/min requested by other processes: a write counter and two slots. A writer fills
                  the slot the counter does not point at and then bumps the counter, so a writer killed
                  mid-write leaves the last good slot readable (a seqlock would stay odd forever).
    512  data     written only by the owner, under a seqlock (odd while being written).
    640  pages    one state byte per page (``PageState``), under the same seqlock. Pools of hybrid models
                  (several KV cache groups) mark a page in use by group g as USED + g (g < MAX_GROUPS;
                  later groups share the last value): any state >= USED is in use, and a one-group pool
                  writes exactly the three PageStates.

The seq and counter words are read and written through numpy uint64 views (one aligned 8-byte access).
Stores are ordered on x86 but not on ARM, and Python cannot issue fences, so each block also carries a
crc32: a reader accepts a snapshot only if the sequence word was even and unchanged *and* the crc matches.
"""

from __future__ import annotations

import enum
import struct
import time
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import InvalidName

MAGIC = b"KVLABREG"
VERSION = 3  # header ranks + data map_ns; records of other versions are read by their identity prefix only
MAX_GROUPS = 8  # in-use states USED .. USED + 7 (hybrid models' KV cache groups): one digit each in as_dict
NO_LIMIT = -1  # stored for "no limit"; Record/Control expose it as None
SUFFIX, TMP_PREFIX = ".kvr", ".tmp-"  # record files; temp files of creators not yet published
MAX_PAGES = 1 << 24  # 16 MiB of page states; larger pools should publish coarser pages


class PageState(enum.IntEnum):
    """What one page of a pool holds: the byte per page in a record, a cell of `kvlab top`, a colour of
    the PageMap."""

    UNMAPPED = 0  # no physical memory behind it
    MAPPED = 1    # physical memory without a live KV block (free or retained)
    USED = 2      # holds live KV blocks


# magic, version, header size, pid, start ticks, pid namespace | max_pages, created_ns, capacity, page_size,
# name, model, device, device uuid, ranks (in what were zero padding bytes: 0 in older records means 1)
HEADER = struct.Struct("<8sIIQQQ QQQQ 64s128s32s64s I4x")
PREFIX = struct.Struct("<8sIIQQQ")
CTL_OFF, CTL_WORD = 384, 384 // 8
CTL_SLOT = struct.Struct("<QqqQ")  # revision, limit, min, crc32 of the first three
CTL_SLOTS = (392, 392 + CTL_SLOT.size)
CTL_SIZE = 8 + 2 * CTL_SLOT.size
DATA_OFF, DATA_SEQ = 512, 512 // 8
# crc, then: revision, mapped, used, retained, limit, min, n_maps, n_unmaps, heartbeat_ns, n_pages, control_ack,
# map_ns
CRC = struct.Struct("<Q")
FIELDS = struct.Struct("<QQQQqQQQQQQQ")
FIELD_NAMES = ("revision", "mapped", "used", "retained", "limit", "min", "n_maps", "n_unmaps", "heartbeat_ns",
               "n_pages", "control_ack", "map_ns")
PAGES_OFF = 640
assert HEADER.size <= CTL_OFF and CTL_OFF + CTL_SIZE <= DATA_OFF and DATA_OFF + 16 + FIELDS.size <= PAGES_OFF


@dataclass(frozen=True)
class Header:
    magic: bytes
    version: int
    header_size: int
    pid: int
    start_ticks: int
    pidns: int
    max_pages: int = 0
    created_ns: int = 0
    capacity: int = 0
    page_size: int = 0
    name: str = ""
    model: str = ""
    device: str = ""
    device_uuid: str = ""
    ranks: int = 1


@dataclass(frozen=True)
class Control:
    """Limit and minimum requested by other processes; ``revision`` grows by one per change."""

    limit: int | None
    min: int
    revision: int


@dataclass(frozen=True, eq=False)
class Record:
    """One consistent snapshot of a pool, as its owner last published it. Sizes are bytes."""

    name: str
    model: str
    pid: int
    start_ticks: int
    device: str
    device_uuid: str
    capacity: int
    page_size: int
    created: float
    revision: int
    mapped: int
    used: int
    retained: int
    limit: int | None  # what the owner enforces now (control.limit is what was asked for)
    min: int
    n_maps: int
    n_unmaps: int
    heartbeat: float
    control: Control
    control_ack: int  # control revision the owner has applied; < control.revision while it catches up
    map_ns: int  # total time the owner's mappers spent mapping (0 where it cannot see them)
    pages: bytes  # one PageState byte per page (USED + g: in use by KV cache group g)
    # Worker processes (tensor x pipeline parallel ranks) that each map their shard of every mapped
    # page; sizes above are of the whole engine, split evenly over them.
    ranks: int = 1

    @property
    def rank_mapped(self) -> list[int]:
        """Mapped bytes of each rank: every rank maps the same chunks, all or none (see the vLLM adapter)."""
        return [self.mapped // self.ranks] * self.ranks

    @property
    def n_pages(self) -> int:
        return len(self.pages)

    @property
    def heartbeat_age(self) -> float:
        return max(0.0, time.time() - self.heartbeat)

    def page_states(self) -> np.ndarray:
        return np.frombuffer(self.pages, dtype=np.uint8).copy()

    def used_pages_per_group(self) -> list[int]:
        """Pages in use per KV cache group (one entry for pools that do not tell groups apart)."""
        states = np.frombuffer(self.pages, dtype=np.uint8)
        counts = np.bincount(states[states >= PageState.USED] - PageState.USED, minlength=1)
        return [int(c) for c in counts]

    def as_dict(self) -> dict:
        """JSON-ready; pages become a string of digits, one per page ("0012221...")."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("control", "pages")}
        d["rank_mapped"] = self.rank_mapped
        d["control"] = {"limit": self.control.limit, "min": self.control.min, "revision": self.control.revision}
        d["pages"] = self.pages.translate(bytes(range(48, 48 + 10)) + bytes(246)).decode("ascii")
        return d


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def encode_text(value: str, size: int, what: str) -> bytes:
    raw = str(value).encode("utf-8")
    if len(raw) >= size:
        raise InvalidName(f"{what} {value!r} is too long: at most {size - 1} UTF-8 bytes")
    return raw


def decode_header(buf) -> Header | None:
    """The header, or None if ``buf`` is not a record (too short, foreign magic)."""
    if len(buf) < PREFIX.size or bytes(buf[:8]) != MAGIC:
        return None
    prefix = PREFIX.unpack_from(buf)
    if prefix[1] != VERSION or len(buf) < PAGES_OFF:
        return Header(*prefix)  # other version: identity is still readable, the rest is not
    *ints, name, model, device, uuid, ranks = HEADER.unpack_from(buf)
    return Header(*ints, _text(name), _text(model), _text(device), _text(uuid), max(1, ranks))


def encode_header(h: Header) -> bytes:
    return HEADER.pack(MAGIC, VERSION, PAGES_OFF, h.pid, h.start_ticks, h.pidns, h.max_pages, h.created_ns,
                       h.capacity, h.page_size, encode_text(h.name, 64, "pool name"),
                       encode_text(h.model, 128, "model name"), encode_text(h.device, 32, "device"),
                       encode_text(h.device_uuid, 64, "device UUID"), h.ranks)


def file_size(max_pages: int) -> int:
    return PAGES_OFF + (max_pages + 7) // 8 * 8


# ---- control block: many writers (serialised by the caller), any number of readers ----

def _ctl_slot(revision: int, limit: int | None, minimum: int) -> bytes:
    body = struct.pack("<Qqq", revision, NO_LIMIT if limit is None else limit, minimum)
    return body + CRC.pack(zlib.crc32(body))


def write_control(buf, words: np.ndarray, limit: int | None, minimum: int) -> int:
    """Publish a new control value; the caller holds the control lock. Returns its revision."""
    revision = int(words[CTL_WORD]) + 1
    off = CTL_SLOTS[revision & 1]
    buf[off:off + CTL_SLOT.size] = _ctl_slot(revision, limit, minimum)
    words[CTL_WORD] = revision  # the commit point
    return revision


def init_control(buf, limit: int | None, minimum: int) -> None:
    buf[CTL_SLOTS[0]:CTL_SLOTS[0] + CTL_SLOT.size] = _ctl_slot(0, limit, minimum)


def try_read_control(buf, words: np.ndarray) -> Control | None:
    """One attempt; None if a writer overtook us (retry)."""
    revision = int(words[CTL_WORD])
    off = CTL_SLOTS[revision & 1]
    raw = bytes(buf[off:off + CTL_SLOT.size])
    if int(words[CTL_WORD]) != revision:
        return None
    rev, limit, minimum, crc = CTL_SLOT.unpack(raw)
    if rev != revision or crc != zlib.crc32(raw[:24]):
        return None
    return Control(None if limit == NO_LIMIT else limit, minimum, revision)


# ---- data block: one writer (the owner), any number of readers ----

def write_data(buf, words: np.ndarray, fields: dict, pages: bytes | None, pages_crc: int) -> None:
    body = FIELDS.pack(*(fields[k] for k in FIELD_NAMES))
    head = CRC.pack(zlib.crc32(body, pages_crc)) + body
    seq = int(words[DATA_SEQ])
    words[DATA_SEQ] = seq + 1  # odd: readers retry
    if pages is not None:
        buf[PAGES_OFF:PAGES_OFF + len(pages)] = pages
    buf[DATA_OFF + 8:DATA_OFF + 8 + len(head)] = head
    words[DATA_SEQ] = seq + 2


def try_read_data(buf, words: np.ndarray, max_pages: int) -> tuple[dict, bytes] | None:
    """One attempt at a consistent (fields, pages) snapshot; None if torn (retry)."""
    seq = int(words[DATA_SEQ])
    if seq & 1:
        return None
    head = bytes(buf[DATA_OFF + 8:DATA_OFF + 16 + FIELDS.size])
    values = FIELDS.unpack_from(head, 8)
    n_pages = min(values[FIELD_NAMES.index("n_pages")], max_pages)  # torn n_pages must not overrun
    pages = bytes(buf[PAGES_OFF:PAGES_OFF + n_pages])
    if int(words[DATA_SEQ]) != seq or CRC.unpack_from(head)[0] != zlib.crc32(head[8:], zlib.crc32(pages)):
        return None
    return dict(zip(FIELD_NAMES, values)), pages
