"""Workloads: plain objects that produce a schedule of requests; ``run_workload`` sends them.

A schedule is a list of ``Request``s grouped in *phases*. A phase starts when every request of the
previous phase has finished; a request's ``at`` is its arrival offset from the start of its phase.
So ``bursty(3, 8, pause=5)`` means: 8 requests at once, wait for them, idle 5 s, the next 8, ... —
the idle gap is exactly ``pause`` however long a burst takes, which is what memory needs to shrink.
Open-loop workloads (``poisson``, trace replay) are one phase.

Prompts are given as text (``prompts=[...]``, cycled) or as an exact token length (``prompt_len``),
built from the served tokenizer at run time — random-weight models need no meaningful text.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .errors import WorkloadError


def _int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WorkloadError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise WorkloadError(f"{name} must be >= {minimum}, got {value}")
    return value


def _seconds(name: str, value, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise WorkloadError(f"{name} must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise WorkloadError(f"{name} must be {'>= 0' if allow_zero else '> 0'} seconds, got {value}")
    return float(value)


@dataclass(frozen=True)
class Request:
    """One scheduled request. ``target``: None (spread over the targets round-robin), an index into
    the targets, or a model name or server URL."""

    at: float
    max_tokens: int
    prompt: str | None = None
    prompt_len: int | None = None
    target: int | str | None = None
    phase: int = 0
    seed: int = 0

    def __post_init__(self):
        _seconds("at", self.at)
        _int("max_tokens", self.max_tokens)
        _int("phase", self.phase, 0)
        if (self.prompt is None) == (self.prompt_len is None):
            raise WorkloadError("a request needs exactly one of prompt (text) or prompt_len (tokens)")
        if self.prompt is not None and (not isinstance(self.prompt, str) or not self.prompt):
            raise WorkloadError(f"prompt must be a non-empty string, got {self.prompt!r}")
        if self.prompt_len is not None:
            _int("prompt_len", self.prompt_len)


class Workload:
    """Base class: subclasses return their schedule from ``requests()``."""

    def requests(self) -> list[Request]:
        raise NotImplementedError


def _prompt_source(prompts, prompt_len):
    if prompts is not None:
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) and p for p in prompts):
            raise WorkloadError("prompts must be a non-empty list of non-empty strings")
        if prompt_len is not None:
            raise WorkloadError("give prompts or prompt_len, not both")
        return prompts, None
    return None, _int("prompt_len", 32 if prompt_len is None else prompt_len)


def _prompt_kw(prompts, prompt_len, i: int) -> dict:
    return {"prompt": prompts[i % len(prompts)]} if prompts else {"prompt_len": prompt_len}


def _check_bursts(w) -> None:
    """Validation shared by the burst-shaped workloads (Bursty, Alternating)."""
    _int("burst_size", w.burst_size)
    _seconds("pause", w.pause)
    _int("max_tokens", w.max_tokens)
    _prompt_source(w.prompts, w.prompt_len)


def _burst(w, phase: int, first: int, prompts, plen, target=None) -> list[Request]:
    """One burst of ``w.burst_size`` requests, sent ``w.pause`` s after the previous phase (none before
    the first). Request i gets its own seed, so prompts differ and the prefix cache does not share them."""
    return [Request(at=w.pause if phase else 0.0, max_tokens=w.max_tokens, target=target, phase=phase,
                    seed=w.seed * 1_000_003 + i, **_prompt_kw(prompts, plen, i))
            for i in range(first, first + w.burst_size)]


@dataclass(frozen=True)
class Bursty(Workload):
    n_bursts: int
    burst_size: int
    pause: float
    max_tokens: int = 64
    prompts: tuple | list | None = None
    prompt_len: int | None = None
    seed: int = 0

    def __post_init__(self):
        _int("n_bursts", self.n_bursts)
        _check_bursts(self)

    def requests(self) -> list[Request]:
        prompts, plen = _prompt_source(self.prompts, self.prompt_len)
        return [r for b in range(self.n_bursts) for r in _burst(self, b, b * self.burst_size, prompts, plen)]


@dataclass(frozen=True)
class Poisson(Workload):
    rate: float           # requests per second
    duration: float       # seconds of arrivals
    max_tokens: int = 64
    seed: int = 0
    prompts: tuple | list | None = None
    prompt_len: int | None = None
    max_requests: int = 100_000

    def __post_init__(self):
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not math.isfinite(self.rate) \
                or self.rate <= 0:
            raise WorkloadError(f"rate must be a positive number of requests per second, got {self.rate!r}")
        _seconds("duration", self.duration, allow_zero=False)
        _int("max_tokens", self.max_tokens)
        _int("seed", self.seed, -(2**63))
        _prompt_source(self.prompts, self.prompt_len)
        if self.rate * self.duration > self.max_requests:
            raise WorkloadError(f"rate*duration expects {self.rate * self.duration:.0f} requests, more than "
                                f"max_requests={self.max_requests}; lower the rate or the duration")

    def requests(self) -> list[Request]:
        prompts, plen = _prompt_source(self.prompts, self.prompt_len)
        rng = random.Random(self.seed)
        out, t = [], rng.expovariate(self.rate)
        while t < self.duration:
            i = len(out)
            out.append(Request(at=t, max_tokens=self.max_tokens, seed=self.seed * 1_000_003 + i,
                               **_prompt_kw(prompts, plen, i)))
            t += rng.expovariate(self.rate)
        return out


def target_key(target) -> int | str:
    """How a schedule names a target: an int index, or a string (model name or URL); objects with a
    ``url`` (Server, Client) are named by it, which stays unique when two servers serve one model."""
    if isinstance(target, bool):
        raise WorkloadError(f"not a target: {target!r}")
    if isinstance(target, (int, str)):
        return target
    url = getattr(target, "url", None)
    if isinstance(url, str):
        return url
    raise WorkloadError(f"not a target: {target!r} (give servers, clients, model names, URLs or indices)")


@dataclass(frozen=True)
class Alternating(Workload):
    """``rounds`` rounds; in each, one burst per server in turn, each after ``pause`` idle seconds."""

    servers: tuple | list
    rounds: int
    burst_size: int = 8
    pause: float = 5.0
    max_tokens: int = 64
    prompts: tuple | list | None = None
    prompt_len: int | None = None
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.servers, (str, bytes)) or not hasattr(self.servers, "__iter__"):
            raise WorkloadError("servers must be a list of servers, clients, model names or indices")
        keys = [target_key(s) for s in self.servers]
        if len(keys) < 1:
            raise WorkloadError("alternating needs at least one server")
        if len(set(keys)) != len(keys):
            raise WorkloadError(f"alternating got the same server twice: {keys}")
        object.__setattr__(self, "servers", tuple(self.servers))
        _int("rounds", self.rounds)
        _check_bursts(self)

    def requests(self) -> list[Request]:
        prompts, plen = _prompt_source(self.prompts, self.prompt_len)
        keys = [target_key(s) for s in self.servers]
        out, phase = [], 0
        for _ in range(self.rounds):
            for key in keys:
                out += _burst(self, phase, len(out), prompts, plen, target=key)
                phase += 1
        return out


def bursty(n_bursts: int, burst_size: int, pause: float, max_tokens: int = 64, prompts=None,
           prompt_len: int | None = None, seed: int = 0) -> Bursty:
    """``n_bursts`` bursts of ``burst_size`` simultaneous requests, ``pause`` idle seconds between them."""
    return Bursty(n_bursts, burst_size, pause, max_tokens, prompts, prompt_len, seed)


def poisson(rate: float, duration: float, max_tokens: int = 64, seed: int = 0, prompts=None,
            prompt_len: int | None = None) -> Poisson:
    """Open-loop Poisson arrivals at ``rate`` per second for ``duration`` seconds (reproducible by ``seed``)."""
    return Poisson(rate, duration, max_tokens, seed, prompts, prompt_len)


def alternating(servers, rounds: int, burst_size: int = 8, pause: float = 5.0, max_tokens: int = 64,
                prompts=None, prompt_len: int | None = None, seed: int = 0) -> Alternating:
    """Drive ``servers`` one after another: a burst to each in turn, ``rounds`` times."""
    return Alternating(servers, rounds, burst_size, pause, max_tokens, prompts, prompt_len, seed)
