"""kvlab.registry: one small shared-memory record per pool, for `kvlab top`, `kvlab ctl`, widgets and limits.

The owner publishes with a ``Publisher``; anyone reads with ``list_records()``/``read()`` and requests a limit or
minimum with ``set_control()`` (bytes, one pool; ``kvlab.limits`` is the API for people). Records of dead
processes are reaped by readers, never reported.
Imports only the standard library and numpy: no torch, no CUDA context, no native module.
"""

from .publisher import Publisher
from .errors import (InvalidName, InvalidSize, LimitBelowMinimum, PoolNotFound, RecordBusy, RecordClosed, RecordExists,
                     RecordOwned, RegistryError)
from .record import Control, PageState, Record
from .store import default_root, list_records, read, reap, record_path, remove, set_control

__all__ = [
    "Publisher", "Record", "Control", "list_records", "read", "reap", "remove", "set_control", "default_root", "record_path", "PageState",
    "RegistryError", "PoolNotFound", "InvalidSize", "InvalidName", "LimitBelowMinimum", "RecordExists",
    "RecordOwned", "RecordBusy", "RecordClosed",
]
