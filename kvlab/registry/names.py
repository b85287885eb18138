"""How pools are named: record names people can read in listings, unique across engines and pid reuse."""

from __future__ import annotations

import re
import secrets

from .errors import InvalidName

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def short_model(model: str) -> str:
    """A model's last path component ("/models/qwen2-tiny/" -> "qwen2-tiny"), as listings show it."""
    return model.rstrip("/").rsplit("/", 1)[-1]


def slug(text: str, width: int) -> str:
    """``text`` as the start of a valid record name (letters, digits, '.', '_', '-'), at most ``width`` long."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:width] or "pool"


def default_name(model: str, pid: int) -> str:
    """``<model>-<pid>-<random>``: readable in `kvlab ctl list`, and unique across engines and pid reuse."""
    return f"{slug(short_model(model), 40)}-{pid}-{secrets.token_hex(2)}"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidName(f"pool name {name!r} must be 1-63 characters of letters, digits, '.', '_' or '-', "
                          f"starting with a letter or digit")
    return name
