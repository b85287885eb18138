"""kvlab.memory: elastic memory arenas, physical page pools and their typed errors."""

from .arena import DEFAULT_PAGE_SIZE, Arena
from .errors import (ArenaClosed, BackendError, InvalidArgument, InvalidPages, KvlabMemoryError, LimitExceeded,
                     OutOfPhysicalMemory)
from .pool import PagePool
from .args import GiB, MiB, Device, format_size, parse_device, parse_size

__all__ = [
    "Arena", "PagePool", "DEFAULT_PAGE_SIZE", "MiB", "GiB", "Device", "parse_device", "parse_size", "format_size",
    "KvlabMemoryError", "OutOfPhysicalMemory", "LimitExceeded", "BackendError", "InvalidPages",
    "ArenaClosed", "InvalidArgument",
]
