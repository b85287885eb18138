"""Typed errors of the memory layer.

The native core raises these directly (they are registered with it at import), so callers can turn
``OutOfPhysicalMemory`` or ``LimitExceeded`` into a scheduling miss instead of a crash.
"""


class KvlabMemoryError(RuntimeError):
    """Base class of every error raised by kvlab.memory."""


class OutOfPhysicalMemory(KvlabMemoryError):
    """The device (or its page pool's physical cap) has no room for the pages asked for."""


class LimitExceeded(KvlabMemoryError):
    """Mapping would take an arena over its configured limit."""


class BackendError(KvlabMemoryError):
    """The driver or the OS refused an operation for a reason other than memory."""


class InvalidPages(KvlabMemoryError, IndexError):
    """Page indices out of range, or not integers."""


class ArenaClosed(KvlabMemoryError):
    """The arena was used after close()."""


class InvalidArgument(KvlabMemoryError, ValueError):
    """A size, device, dtype or shape that cannot work."""


# Order matches kvlab::ErrorKind in native/src/errors.h.
NATIVE_ORDER = (OutOfPhysicalMemory, LimitExceeded, BackendError, InvalidPages, ArenaClosed, InvalidArgument)
