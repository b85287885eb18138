"""Replay of a request trace from CSV or JSONL.

Columns (CSV header / JSON keys):
  arrival      seconds from the trace's start (aliases: arrival_time, timestamp, time)
  prompt_len   prompt length in tokens (alias: input_len)   } exactly one of the two
  prompt       prompt text                                   }
  output_len   tokens to generate (aliases: max_tokens, output_tokens)
  model        optional: the target's model name or URL

The whole file is checked before anything is sent; every bad row is reported (row numbers count
lines as an editor does, the CSV header being row 1) in one TraceError.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TraceError, WorkloadError
from .workloads import Request, Workload

_ALIASES = {
    "arrival": ("arrival", "arrival_time", "timestamp", "time"),
    "prompt_len": ("prompt_len", "input_len"),
    "prompt": ("prompt",),
    "output_len": ("output_len", "max_tokens", "output_tokens"),
    "model": ("model",),
}


def _pick(row: dict, name: str):
    for key in _ALIASES[name]:
        value = row.get(key)
        if value is not None and not (isinstance(value, str) and value.strip() == ""):
            return value
    return None


def _number(value, what: str, integer: bool):
    if isinstance(value, bool):
        raise ValueError(f"{what} is {value!r}, not a number")
    if isinstance(value, str):
        value = value.strip()
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                raise ValueError(f"{what} {value!r} is not a number") from None
            if integer and f.is_integer():
                value = int(f)
            else:
                raise ValueError(f"{what} {value!r} is not a whole number") from None
    if integer and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{what} {value!r} is not a whole number")
        value = int(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} {value!r} is not a finite number")
    return value


def _parse_row(row: dict) -> tuple[float, dict]:
    arrival = _pick(row, "arrival")
    if arrival is None:
        raise ValueError("arrival time is missing")
    arrival = float(_number(arrival, "arrival time", integer=False))
    if arrival < 0:
        raise ValueError(f"arrival time {arrival} is negative")
    plen, prompt = _pick(row, "prompt_len"), _pick(row, "prompt")
    if (plen is None) == (prompt is None):
        raise ValueError("give exactly one of prompt_len and prompt" if plen is not None else
                         "prompt_len or prompt is missing")
    kw: dict = {}
    if plen is not None:
        n = _number(plen, "prompt_len", integer=True)
        if n < 1:
            raise ValueError(f"prompt_len {n} must be >= 1")
        kw["prompt_len"] = n
    else:
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be text, got {type(prompt).__name__}")
        kw["prompt"] = prompt
    out = _pick(row, "output_len")
    if out is None:
        raise ValueError("output_len is missing")
    n = _number(out, "output_len", integer=True)
    if n < 1:
        raise ValueError(f"output_len {n} must be >= 1")
    kw["max_tokens"] = n
    model = _pick(row, "model")
    if model is not None:
        kw["target"] = str(model).strip()
    return arrival, kw


def _rows(path: Path):
    """(row number, dict or an error string) for every data row."""
    text = path.read_text(encoding="utf-8-sig")  # spreadsheets write a BOM
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                yield number, f"not valid JSON ({e.msg})"
                continue
            yield number, obj if isinstance(obj, dict) else f"expected a JSON object, got {type(obj).__name__}"
    else:
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames:
            return
        header = {h.strip() for h in reader.fieldnames if h}
        if not header & set(_ALIASES["arrival"]):
            yield 1, f"the header has no arrival column (one of {', '.join(_ALIASES['arrival'])}); it has {sorted(header)}"
            return
        for row in reader:
            number = reader.line_num
            if None in row:
                yield number, f"more fields than the header's {len(reader.fieldnames)}"
                continue
            yield number, {k.strip(): v for k, v in row.items() if k}


@dataclass(frozen=True)
class Trace(Workload):
    path: str
    time_scale: float = 1.0   # 2.0 replays twice as fast
    _requests: tuple = field(default=(), repr=False, compare=False)

    def __post_init__(self):
        if isinstance(self.time_scale, bool) or not isinstance(self.time_scale, (int, float)) \
                or not math.isfinite(self.time_scale) or self.time_scale <= 0:
            raise WorkloadError(f"time_scale must be a positive number, got {self.time_scale!r}")
        path = Path(self.path)
        if not path.is_file():
            raise WorkloadError(f"trace file {path} does not exist")
        problems, parsed = [], []
        for number, row in _rows(path):
            if isinstance(row, str):
                problems.append((number, row))
                continue
            try:
                parsed.append(_parse_row(row))
            except ValueError as e:
                problems.append((number, str(e)))
        if problems:
            raise TraceError(path, problems)
        if not parsed:
            raise TraceError(path, [(1, "the trace has no requests")])
        parsed.sort(key=lambda r: r[0])  # stable: equal arrivals keep file order
        reqs = tuple(Request(at=a / self.time_scale, seed=i, **kw) for i, (a, kw) in enumerate(parsed))
        object.__setattr__(self, "_requests", reqs)

    def requests(self) -> list[Request]:
        return list(self._requests)


def trace(path, time_scale: float = 1.0) -> Trace:
    """Load and check a CSV or JSONL trace (see the module doc for its columns)."""
    return Trace(str(path), time_scale)
