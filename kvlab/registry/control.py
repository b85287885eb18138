"""The rule between a pool's limit, its minimum guarantee and its capacity, in one place.

Checked wherever a limit or minimum is set: a pool's own settings (``ElasticSettings``), a new record
(``Publisher``), and a request from another process (``kvlab.limits``, ``set_control``), so all of them
refuse the same things with the same words.
"""

from __future__ import annotations

from kvlab.units import format_size

from .errors import InvalidSize, LimitBelowMinimum


def check_control(limit: int | None, minimum: int, capacity: int | None = None, *, pool: str = "",
                  changing: str = "") -> None:
    """Raise unless ``limit`` (None: no limit) >= ``minimum`` and ``minimum`` <= ``capacity`` (None: unknown).

    ``pool`` names the pool in the message; ``changing`` ("limit" or "minimum") says which of the two the
    caller is changing, so the message says which one to fix first.
    """
    where = f"pool {pool!r}: " if pool else ""
    if capacity is not None and minimum > capacity:
        raise InvalidSize(f"{where}minimum {format_size(minimum)} exceeds its capacity {format_size(capacity)}")
    if limit is not None and limit < minimum:
        fix = {"limit": "; lower the minimum first", "minimum": "; raise or remove the limit first"}.get(changing, "")
        raise LimitBelowMinimum(f"{where}limit {format_size(limit)} is below its minimum guarantee "
                                f"{format_size(minimum)}{fix}")
