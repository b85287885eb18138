"""Parsing of byte sizes ("2MiB", "1G", 4096) and device names ("cpu", "cuda", "cuda:1")."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidArgument

MiB = 1 << 20
GiB = 1 << 30

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": MiB, "mb": MiB, "mib": MiB,
          "g": GiB, "gb": GiB, "gib": GiB, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as ``"512MiB"`` or ``"1.5G"`` (binary units throughout)."""
    if isinstance(value, bool):
        raise InvalidArgument(f"expected a size in bytes, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise InvalidArgument(f"size must not be negative, got {value}")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m and m.group(2).lower() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise InvalidArgument(f"cannot read {value!r} as a size: use bytes or a number with KiB/MiB/GiB/TiB")


def format_size(n: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class Device:
    """A memory device: the host ("cpu", host backend) or a CUDA GPU ("cuda:N", cuda backend)."""

    kind: str
    index: int = 0

    @property
    def backend(self) -> str:
        return "host" if self.kind == "cpu" else "cuda"

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"


def parse_device(device: str | Device | None) -> Device:
    if isinstance(device, Device):
        return device
    if device is None or device == "cpu":
        return Device("cpu")
    text = str(device)  # also accepts torch.device
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not m:
        raise InvalidArgument(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")
    return Device("cuda", int(m.group(1) or 0))
