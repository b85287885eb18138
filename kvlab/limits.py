"""Memory limits of live pools, from any process: the Python side of `kvlab ctl`.

>>> import kvlab.limits as limits
>>> [p.name for p in limits.list_pools()]
['tiny-a-41233', 'tiny-b-41377']
>>> limits.set_limit("tiny-a-41233", "256MiB")   # or a model name (all its pools), or a Server
>>> limits.set_min(server, "30%")                 # 30 % of the pool's capacity
>>> limits.unlimit("tiny-a-41233")

A target is a pool name, a model name (every pool serving it; its basename works too), or an object with a
``pool_name`` attribute (``kvlab.lab.Server``). A size is bytes, a string such as ``"2G"``/``"512MiB"``, a
share of the pool's capacity (``"30%"``), or None (no limit). The request goes into the pool's registry
control block; the engine applies it within about a tenth of a second, idle or not (see
docs/design/vllm-integration.md, section 6). Changes are validated for every pool first and then written,
so bad input changes nothing. Imports no torch and no native code.
"""

from __future__ import annotations

import os
import time

from kvlab import registry, units
from kvlab.registry import Control, InvalidSize, PoolNotFound, Record, RegistryError
from kvlab.registry.control import check_control
from kvlab.registry.names import short_model

__all__ = ["list_pools", "pools_of", "set_limit", "set_min", "unlimit", "limit_of", "AmbiguousTarget"]


class AmbiguousTarget(RegistryError, LookupError):
    """A name that matches pools of more than one model (or, where one pool is needed, several pools)."""


def list_pools(root: str | os.PathLike | None = None) -> list[Record]:
    """Every live pool, by name (dead owners' records are reaped on the way)."""
    return sorted(registry.list_records(root), key=lambda r: r.name)


def pools_of(target, root: str | os.PathLike | None = None) -> list[Record]:
    """The live pools ``target`` names: a pool, a model's pools, or a Server's pool."""
    if not isinstance(target, str):
        if not hasattr(target, "pool_name"):
            raise TypeError(f"a target is a pool name, a model name or a Server, not {type(target).__name__}")
        name = target.pool_name
        if name is None:
            raise PoolNotFound(f"{target!r} has no pool: it does not run elastic memory")
        return [registry.read(name, root)]
    pools = list_pools(root)
    by_name = [p for p in pools if p.name == target]
    if by_name:
        return by_name
    by_model = [p for p in pools if p.model == target] or [p for p in pools if short_model(p.model) == target]
    models = sorted({p.model for p in by_model})
    if len(models) > 1:
        raise AmbiguousTarget(f"{target!r} names pools of several models: "
                              + "; ".join(f"{m}: {', '.join(p.name for p in by_model if p.model == m)}"
                                          for m in models) + ". Name a pool or the full model instead")
    if not by_model:
        known = ", ".join(f"{p.name} ({p.model})" for p in pools) or "none are running"
        raise PoolNotFound(f"no live pool or model named {target!r}; pools: {known}")
    return by_model


def _bytes(size, pool: Record, what: str) -> int:
    try:
        value = units.resolve(size, pool.capacity)
    except units.SizeError as e:
        raise InvalidSize(f"{what} {size!r}: {e}") from None
    return value


def _apply(target, root, wait: float, **changes) -> list[Control]:
    """Validate ``changes`` (limit=/minimum= as given by the caller) for every pool, then write them."""
    pools = pools_of(target, root)
    plans = []
    for pool in pools:
        cur = pool.control
        limit = cur.limit
        minimum = cur.min
        if "limit" in changes:
            limit = None if changes["limit"] is None else _bytes(changes["limit"], pool, "limit")
        if "minimum" in changes:
            minimum = _bytes(changes["minimum"], pool, "minimum")
        check_control(limit, minimum, pool.capacity, pool=pool.name,
                      changing="limit" if "limit" in changes else "minimum")
        plans.append((pool.name, {k: (limit if k == "limit" else minimum) for k in changes}))
    done = [registry.set_control(name, root=root, **kw) for name, kw in plans]
    if wait > 0:
        _wait_applied([name for name, _ in plans], done, root, wait)
    return done


def _wait_applied(names, controls, root, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(zip(names, (c.revision for c in controls)))
    while pending:
        for name, revision in list(pending.items()):
            if registry.read(name, root).control_ack >= revision:
                del pending[name]
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"pools {sorted(pending)} did not apply the change within {timeout:g} s")
            time.sleep(0.02)


def set_limit(target, size, *, wait: float = 0.0, root: str | os.PathLike | None = None) -> list[Control]:
    """Most bytes ``target``'s pools may map (None: no limit). ``wait``: seconds to wait for the engines'
    acknowledgement (TimeoutError if they do not); the default returns as soon as the request is written."""
    return _apply(target, root, wait, limit=size)


def set_min(target, size, *, wait: float = 0.0, root: str | os.PathLike | None = None) -> list[Control]:
    """A guarantee: other pools on the device leave this much room for ``target``'s pools to grow into."""
    return _apply(target, root, wait, minimum=0 if size is None else size)


def unlimit(target, *, wait: float = 0.0, root: str | os.PathLike | None = None) -> list[Control]:
    return _apply(target, root, wait, limit=None)


def limit_of(target, root: str | os.PathLike | None = None) -> int | None:
    """The limit requested for one pool (None: no limit); a model with several pools is ambiguous."""
    pools = pools_of(target, root)
    if len(pools) > 1:
        raise AmbiguousTarget(f"{target!r} has {len(pools)} pools ({', '.join(p.name for p in pools)}): "
                              f"name one of them")
    return pools[0].control.limit
