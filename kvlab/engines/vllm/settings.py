"""Elastic-memory settings: typed, validated, read once per engine.

The switch is ``KVLAB_ELASTIC=1``. The settings are read in the process that builds the engine's
config (``EngineArgs.create_engine_config``) and travel to the scheduler and worker processes inside
``vllm_config.additional_config["kvlab"]``, so every process of one engine agrees on them even when
the environment differs. A per-engine override is ``additional_config={"kvlab": {...}}`` with the
same keys as ``to_dict()`` (``elastic``, ``page_size``, ``handle_size``, ``limit``, ``reserve``, ``release_delay``,
``idle_release``, ``pool_name``, ``min``, ``headroom``).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

from kvlab import units
from kvlab.registry.control import check_control
from kvlab.units import MiB, parse_size

CONFIG_KEY = "kvlab"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
_NEVER = {"off", "never", "none"}  # idle_release: keep the reserve however long the engine is idle


def _flag(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name}={value!r} is not a boolean: use 1 or 0")


def _seconds(value, name: str) -> float:
    if isinstance(value, bool):  # float(True) is 1.0: a flag where seconds belong is a mistake
        raise ValueError(f"{name}={value!r} is not a number of seconds")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number of seconds") from None


def _grace(value, name: str) -> float | None:
    """``idle_release``: seconds, or None (never) for ``off``/``never``/``none``."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _NEVER):
        return None
    return _seconds(value, name)


@dataclass(frozen=True)
class ElasticSettings:
    elastic: bool = False
    page_size: int = 2 * MiB          # page map granularity; the CUDA VMM granularity on current GPUs
    handle_size: int = 0              # bytes per physical allocation, a multiple of page_size; 0 = page_size
    limit: int | None = None          # most KV bytes mapped at once; None: the device is the limit
    reserve: int = 32 * MiB           # free, mapped KV memory kept as headroom so bursts don't thrash
    release_delay: float = 1.0        # seconds a chunk must stay free (while busy) before it is unmapped
    idle_release: float | None = 30.0  # seconds idle before the reserve is unmapped too; None: never
    engine_id: str = ""               # ties one engine's scheduler to its in-process workers
    pool_name: str = ""               # the pool's registry record; "" = <model>-<pid>-<random>
    min: int = 0                      # guarantee: other pools' growth leaves this much room for this one
    headroom: str = ""                # kept free on the device: a size or "N%" of it; "" = 1 GiB GPU, 5% host

    def __post_init__(self):
        if self.page_size <= 0 or self.page_size % 4096:
            raise ValueError(f"KVLAB_PAGE_SIZE={self.page_size} must be a positive multiple of 4 KiB")
        if self.handle_size < 0 or self.handle_size % self.page_size:
            raise ValueError(f"KVLAB_HANDLE_SIZE={self.handle_size} must be a multiple of KVLAB_PAGE_SIZE="
                             f"{self.page_size} (or 0: one handle per page)")
        if self.limit is not None and self.limit <= 0:
            raise ValueError("KVLAB_LIMIT must be positive (leave it unset for no limit)")
        if self.reserve < 0:
            raise ValueError("KVLAB_RESERVE must be >= 0")
        if not (self.release_delay >= 0 and math.isfinite(self.release_delay)):
            raise ValueError("KVLAB_RELEASE_DELAY must be a finite number of seconds >= 0")
        if self.idle_release is not None and not (self.idle_release >= 0 and math.isfinite(self.idle_release)):
            raise ValueError(f"KVLAB_IDLE_RELEASE={self.idle_release!r} must be a finite number of seconds >= 0, "
                             f"or off")
        if self.min < 0:
            raise ValueError("KVLAB_MIN must be >= 0")
        check_control(self.limit, self.min)
        if self.pool_name:
            from kvlab.registry.names import check_name

            check_name(self.pool_name)
        if self.headroom:
            try:
                units.parse_amount(self.headroom)
            except units.SizeError as e:
                raise ValueError(f"KVLAB_HEADROOM={self.headroom!r}: {e}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ElasticSettings":
        env = os.environ if environ is None else environ
        kw = {"elastic": _flag(env.get("KVLAB_ELASTIC", ""), "KVLAB_ELASTIC")}
        if env.get("KVLAB_PAGE_SIZE"):
            kw["page_size"] = parse_size(env["KVLAB_PAGE_SIZE"])
        if env.get("KVLAB_HANDLE_SIZE"):
            kw["handle_size"] = parse_size(env["KVLAB_HANDLE_SIZE"])
        if env.get("KVLAB_LIMIT"):
            kw["limit"] = parse_size(env["KVLAB_LIMIT"])
        if env.get("KVLAB_RESERVE"):
            kw["reserve"] = parse_size(env["KVLAB_RESERVE"])
        if env.get("KVLAB_RELEASE_DELAY"):
            kw["release_delay"] = _seconds(env["KVLAB_RELEASE_DELAY"], "KVLAB_RELEASE_DELAY")
        if env.get("KVLAB_IDLE_RELEASE"):
            kw["idle_release"] = _grace(env["KVLAB_IDLE_RELEASE"], "KVLAB_IDLE_RELEASE")
        if env.get("KVLAB_POOL_NAME"):
            kw["pool_name"] = env["KVLAB_POOL_NAME"]
        if env.get("KVLAB_MIN"):
            kw["min"] = parse_size(env["KVLAB_MIN"])
        if env.get("KVLAB_HEADROOM"):
            kw["headroom"] = env["KVLAB_HEADROOM"].strip()
        return cls(**kw)

    def merged(self, overrides: Mapping | None) -> "ElasticSettings":
        """These settings with ``overrides`` (a dict as in ``to_dict``, sizes may be strings) applied."""
        if not overrides:
            return self
        unknown = set(overrides) - {f for f in asdict(self)}
        if unknown:
            raise ValueError(f"unknown kvlab settings {sorted(unknown)}; known: {sorted(asdict(self))}")
        kw = dict(overrides)
        if "elastic" in kw:
            kw["elastic"] = _flag(kw["elastic"], "elastic")
        for key in ("page_size", "handle_size", "reserve", "min"):
            if key in kw:
                kw[key] = parse_size(kw[key])
        if kw.get("limit") is not None:
            kw["limit"] = parse_size(kw["limit"])
        if "release_delay" in kw:
            kw["release_delay"] = _seconds(kw["release_delay"], "KVLAB_RELEASE_DELAY")
        if "idle_release" in kw:
            if kw["idle_release"] == "":
                del kw["idle_release"]  # the default, as an empty KVLAB_IDLE_RELEASE means
            else:
                kw["idle_release"] = _grace(kw["idle_release"], "KVLAB_IDLE_RELEASE")
        return replace(self, **kw)

    @property
    def handle_bytes(self) -> int:
        """The unit each layer's share of a chunk fills: one physical handle (the driver maps a handle only
        whole, and a chunk is what the planner releases, so a chunk never splits a handle)."""
        return self.handle_size or self.page_size

    def with_engine_id(self) -> "ElasticSettings":
        return self if self.engine_id else replace(self, engine_id=uuid.uuid4().hex)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_vllm_config(cls, vllm_config) -> "ElasticSettings":
        """The settings an engine was built with (elastic=False when kvlab did not touch it)."""
        extra = getattr(vllm_config, "additional_config", None) or {}
        data = extra.get(CONFIG_KEY) if isinstance(extra, Mapping) else None
        return cls().merged(data) if data else cls()
