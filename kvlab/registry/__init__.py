"""kvlab.registry: one small shared-memory record per pool, for `kvlab top`, `kvlab ctl`, widgets and limits.

The owner publishes with a ``Publisher``; anyone reads with ``list_records()``/``read()`` and requests limits
with ``set_limit()``/``set_min()``. Records of dead processes are reaped by readers, never reported.
Imports only the standard library and numpy: no torch, no CUDA context, no native module.
"""

from .publisher import Publisher
from .errors import (InvalidName, InvalidSize, LimitBelowMinimum, PoolNotFound, RecordBusy, RecordClosed, RecordExists,
                     RecordOwned, RegistryError)
from .record import PAGE_MAPPED, PAGE_UNMAPPED, PAGE_USED, Control, Record
from .store import default_root, list_records, read, reap, record_path, remove, set_control, set_limit, set_min

__all__ = [
    "Publisher", "Record", "Control", "list_records", "read", "reap", "remove", "set_limit", "set_min",
    "set_control", "default_root", "record_path", "PAGE_UNMAPPED", "PAGE_MAPPED", "PAGE_USED",
    "RegistryError", "PoolNotFound", "InvalidSize", "InvalidName", "LimitBelowMinimum", "RecordExists",
    "RecordOwned", "RecordBusy", "RecordClosed",
]
