"""ElasticSettings: how one engine's elastic KV memory behaves, typed and validated once.

Two ways to give them, one object either way:

* from Python: ``Server(model, memory="elastic", elastic=ElasticSettings(limit="2G", reserve="64M",
  idle_release=30, page_size="2MiB"))`` (also ``Fleet`` and the experiments, which pass it on);
* for ``vllm serve``: the environment, ``KVLAB_ELASTIC=1`` plus ``KVLAB_LIMIT``, ``KVLAB_RESERVE``, ...
  (``ENV`` lists them), read by ``from_env``.

Bad input raises a typed error here, before any engine process starts. The settings travel to the
engine's processes serialized in one piece (``to_dict``; vLLM carries it in ``additional_config``) and
each process parses them once. This module imports neither vLLM nor torch, so the lab can use it.
The handle size's granularity (a multiple of the device's mapping unit) is checked by the native page
pool, which knows the device.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace

from kvlab import units
from kvlab.registry.control import check_control
from kvlab.registry.names import check_name

# field -> the environment variable that sets it for `vllm serve` users
ENV = {"elastic": "KVLAB_ELASTIC", "page_size": "KVLAB_PAGE_SIZE", "handle_size": "KVLAB_HANDLE_SIZE",
       "limit": "KVLAB_LIMIT", "reserve": "KVLAB_RESERVE", "release_delay": "KVLAB_RELEASE_DELAY",
       "idle_release": "KVLAB_IDLE_RELEASE", "pool_name": "KVLAB_POOL_NAME", "min": "KVLAB_MIN",
       "headroom": "KVLAB_HEADROOM"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
_NEVER = {"off", "never", "none"}  # idle_release: keep the reserve however long the engine is idle


class InvalidSettings(ValueError):
    """An elastic-memory setting that cannot work (its message names the field and its variable)."""


def _name(field: str) -> str:
    return f"{field} ({ENV[field]})" if field in ENV else field


def _flag(value, field: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidSettings(f"{_name(field)}={value!r} is not a boolean: use 1 or 0")


def _size(value, field: str) -> int:
    try:
        return units.parse_size(value)
    except units.SizeError as e:
        raise InvalidSettings(f"{_name(field)}: {e}") from None


def _seconds(value, field: str) -> float:
    if not isinstance(value, bool):  # float(True) is 1.0: a flag where seconds belong is a mistake
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = math.nan
        if seconds >= 0 and math.isfinite(seconds):
            return seconds
    raise InvalidSettings(f"{_name(field)}={value!r} must be a finite number of seconds >= 0"
                          + (", or off" if field == "idle_release" else ""))


@dataclass(frozen=True)
class ElasticSettings:
    """Sizes are bytes or strings such as "2G"/"64MiB"; they are stored as ints. Seconds are numbers."""

    page_size: int = 2 * units.MiB     # page map granularity; the CUDA VMM granularity on current GPUs
    handle_size: int = 0               # bytes per physical allocation, a multiple of page_size; 0: page_size
    limit: int | None = None           # most KV bytes mapped at once; None: the device is the limit
    reserve: int = 32 * units.MiB      # free, mapped KV memory kept so that bursts do not thrash
    release_delay: float = 1.0         # seconds a chunk must stay free (while busy) before it is unmapped
    idle_release: float | None = 30.0  # seconds idle before the reserve is unmapped too; None ("off"): never
    min: int = 0                       # guarantee: other pools' growth leaves this much room for this one
    headroom: str = ""                 # kept free on the device: a size or "N%" of it; "" = 1 GiB GPU, 5% host
    pool_name: str = ""                # the pool's registry record; "" = <model>-<pid>-<random>
    elastic: bool = True               # False: stock vLLM (the environment route's default)
    engine_id: str = ""                # ties one engine's scheduler to its in-process workers

    def __post_init__(self):
        def put(field, value):
            object.__setattr__(self, field, value)

        put("elastic", _flag(self.elastic, "elastic"))
        put("page_size", _size(self.page_size, "page_size"))
        if self.page_size == 0:
            raise InvalidSettings(f"{_name('page_size')} must be positive")
        put("handle_size", _size(self.handle_size, "handle_size"))
        if self.handle_size % self.page_size:
            raise InvalidSettings(f"{_name('handle_size')}={self.handle_size} must be a multiple of "
                                  f"{_name('page_size')}={self.page_size} (or 0: one handle per page)")
        if self.limit is not None:
            put("limit", _size(self.limit, "limit"))
            if self.limit == 0:
                raise InvalidSettings(f"{_name('limit')} must be positive (None, or leave it unset, for no limit)")
        put("reserve", _size(self.reserve, "reserve"))
        put("min", _size(self.min, "min"))
        put("release_delay", _seconds(self.release_delay, "release_delay"))
        never = self.idle_release is None or (isinstance(self.idle_release, str)
                                              and self.idle_release.strip().lower() in _NEVER)
        put("idle_release", None if never else _seconds(self.idle_release, "idle_release"))
        put("headroom", str(self.headroom).strip())
        if self.headroom:
            try:
                units.parse_amount(self.headroom)
            except units.SizeError as e:
                raise InvalidSettings(f"{_name('headroom')}={self.headroom!r}: {e}") from None
        if self.pool_name:
            check_name(self.pool_name)
        check_control(self.limit, self.min)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ElasticSettings":
        """The settings of ``vllm serve`` users: ``KVLAB_*`` variables (unset or empty: the default);
        elastic only where ``KVLAB_ELASTIC`` says so."""
        env = os.environ if environ is None else environ
        given = {field: env[var].strip() for field, var in ENV.items() if env.get(var, "").strip()}
        return cls(**{"elastic": False, **given})

    @classmethod
    def from_dict(cls, data: Mapping) -> "ElasticSettings":
        """The settings ``to_dict`` wrote (sizes may also be strings): what reaches an engine's processes."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidSettings(f"unknown kvlab settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_env(self) -> dict[str, str]:
        """The ``KVLAB_*`` variables that ``from_env`` reads back as these settings, for engines whose
        processes take them from the environment (SGLang's scheduler)."""
        out = {}
        for field, var in ENV.items():
            value = getattr(self, field)
            if value is None:
                out[var] = "off" if field == "idle_release" else ""
            elif isinstance(value, bool):
                out[var] = "1" if value else "0"
            else:
                out[var] = str(value)
        return out

    @property
    def handle_bytes(self) -> int:
        """The unit each layer's share of a chunk fills: one physical handle (the driver maps a handle only
        whole, and a chunk is what the planner releases, so a chunk never splits a handle)."""
        return self.handle_size or self.page_size

    def with_engine_id(self) -> "ElasticSettings":
        return self if self.engine_id else replace(self, engine_id=uuid.uuid4().hex)
