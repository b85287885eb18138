"""Measuring what the kernel really holds in this process's arenas."""

from tests import residency


def resident_bytes(base: int, size: int) -> int:
    """Resident bytes of [base, base + size) in this process."""
    return residency.resident_bytes(base, size)
