"""The memory layer's arguments: byte sizes (read by ``kvlab.units``, refused with this layer's InvalidArgument)
and devices ("cpu", "cuda", "cuda:1")."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvlab import units as _units
from kvlab.units import GiB, MiB, format_size  # noqa: F401  (re-exported)

from .errors import InvalidArgument


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as ``"512MiB"`` or ``"1.5G"`` (``kvlab.units.parse_size``, binary
    units throughout), raising this layer's ``InvalidArgument``."""
    try:
        return _units.parse_size(value)
    except _units.SizeError as e:
        raise InvalidArgument(str(e)) from None


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
