"""Sizes as people write them: ``4096``, ``"512MiB"``, ``"2G"``, ``"1.5GB"``, and shares: ``"30%"``.

Native-free and dependency-free, so the CLI, the registry tools and the engine settings can parse sizes
without loading kvlab's native module or torch. Units are binary throughout (``"1G"`` = ``"1GB"`` =
``"1GiB"`` = 2**30 bytes): memory is paged in powers of two, and a limit of "2G" that came out as
1.86 GiB would surprise more than it helps. Fractions of a byte are rounded down.

``kvlab.memory.args.parse_size`` is ``parse_size`` with the memory layer's error type.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40

_UNITS = {"": 1, "b": 1, "k": KiB, "kb": KiB, "kib": KiB, "m": MiB, "mb": MiB, "mib": MiB,
          "g": GiB, "gb": GiB, "gib": GiB, "t": TiB, "tb": TiB, "tib": TiB}
_SIZE = re.compile(r"^\s*([+-]?)\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")
_PERCENT = re.compile(r"^\s*([+-]?)\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


class SizeError(ValueError):
    """A size or share that cannot be read: garbage, negative, or a percentage over 100."""


@dataclass(frozen=True)
class Share:
    """A fraction of something not known yet (a pool's capacity), written ``"30%"``; ``percent`` in [0, 100]."""

    percent: float

    def of(self, whole: int) -> int:
        return int(whole * self.percent / 100)

    def __str__(self) -> str:
        return f"{self.percent:g}%"


def parse_size(value: int | str) -> int:
    """Bytes from a non-negative int or a string such as ``"512MiB"``, ``"1.5G"`` or ``"4096"``."""
    if isinstance(value, bool):
        raise SizeError(f"expected a size in bytes, got {value!r}")
    if isinstance(value, numbers.Integral):
        if value < 0:
            raise SizeError(f"a size must not be negative, got {value}")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0 or not value.is_integer():
            raise SizeError(f"a size in bytes must be a whole, non-negative number, got {value!r}")
        return int(value)
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m and m.group(3).lower() in _UNITS:
            if m.group(1) == "-":
                raise SizeError(f"a size must not be negative, got {value!r}")
            return int(float(m.group(2)) * _UNITS[m.group(3).lower()])
        if _PERCENT.match(value):
            raise SizeError(f"{value!r} is a percentage; a size in bytes is needed here (e.g. '2GiB')")
    raise SizeError(f"cannot read {value!r} as a size: use bytes or a number with K/M/G/T (binary: 1G = 1GiB)")


def parse_amount(value: int | str | Share) -> int | Share:
    """Bytes (as ``parse_size``) or a ``Share`` for ``"30%"`` (0-100 %, resolved later against a capacity)."""
    if isinstance(value, Share):
        return value
    if isinstance(value, str) and "%" in value:
        m = _PERCENT.match(value)
        if not m:
            raise SizeError(f"cannot read {value!r} as a percentage: write it like '30%'")
        pct = float(m.group(2))
        if m.group(1) == "-":
            raise SizeError(f"a percentage must not be negative, got {value!r}")
        if pct > 100:
            raise SizeError(f"{value!r} is more than 100% of the pool")
        return Share(pct)
    return parse_size(value)


def resolve(value: int | str | Share, capacity: int) -> int:
    """Bytes for a size or a share of ``capacity``."""
    amount = parse_amount(value)
    return amount.of(capacity) if isinstance(amount, Share) else amount


def format_size(n: int | None) -> str:
    """``"1.50 GiB"``; ``"none"`` for None (no limit)."""
    if n is None:
        return "none"
    for unit, scale in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
