"""Typed errors of the registry: each says what happened and what to do about it."""


class RegistryError(Exception):
    """Base class of every error raised by kvlab.registry."""


class PoolNotFound(RegistryError, LookupError):
    """No live pool of that name (it never existed, was closed, or its process died)."""


class InvalidSize(RegistryError, ValueError):
    """A size, count or page map that is negative, not an integer, or out of range."""


class InvalidName(RegistryError, ValueError):
    """A pool name that cannot be a record name."""


class LimitBelowMinimum(RegistryError, ValueError):
    """A limit below the pool's minimum guarantee (or a minimum above its limit)."""


class RecordExists(RegistryError, FileExistsError):
    """Another live process already publishes a pool under that name."""


class RecordOwned(RegistryError, PermissionError):
    """The record belongs to a live process; only that process may remove it."""


class RecordBusy(RegistryError, TimeoutError):
    """No consistent snapshot within the time allowed (the owner is stopped mid-write, or hammering it)."""


class RecordClosed(RegistryError):
    """The publisher was used after close(), or in a forked child that does not own the record."""
