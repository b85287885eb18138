"""The `kvlab serve` configuration: YAML read with line numbers, validated by pydantic in one place.

    host: 127.0.0.1          # 0.0.0.0 needs api_key (writing endpoints are never open off loopback)
    port: 8000
    api_key: ${KVLAB_API_KEY} # guards POST /kvlab/*; ${VAR} reads the environment
    max_awake: 2             # at most this many engines awake; the least recently used one sleeps first
    models:
      qwen-a:
        model: synthetic:qwen2/tiny      # a path, a hub id, or synthetic:<arch>/<size>
        idle_timeout: 60                 # seconds without requests before it sleeps (null: never)
        sleep: auto                      # auto | vllm | stop
        limit: 256MiB
        engine_args: {max_model_len: 512}

A bad file fails at load with ``ConfigError("serve.yaml:7: models.qwen-a.idle_timeout: ...")``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kvlab import units

SLEEP_POLICIES = ("auto", "vllm", "stop")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ConfigError(ValueError):
    """A configuration that cannot be served; the message starts with ``file:line:``."""


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    memory: Literal["elastic", "static"] = "elastic"
    device: str | None = None
    engine_args: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    min: int = 0
    limit: int | None = None
    idle_timeout: float | None = 300.0
    sleep: Literal["auto", "vllm", "stop"] = "auto"
    max_restarts: int = Field(default=1, ge=0)
    start_timeout: float = Field(default=900.0, gt=0)

    @field_validator("min", "limit", mode="before")
    @classmethod
    def _size(cls, v):
        return None if v is None else units.parse_size(v)

    @field_validator("idle_timeout")
    @classmethod
    def _timeout(cls, v):
        if v is not None and v <= 0:
            raise ValueError("must be positive seconds, or null to never sleep")
        return v

    @field_validator("engine_args")
    @classmethod
    def _engine_args(cls, v):
        for reserved in ("model", "port", "host", "served_model_name"):
            if reserved in v:
                raise ValueError(f"{reserved!r} is set by kvlab serve, not in engine_args")
        return v

    @model_validator(mode="after")
    def _budget(self):
        if self.limit is not None and self.limit < self.min:
            raise ValueError(f"limit ({units.format_size(self.limit)}) is below min ({units.format_size(self.min)})")
        if self.memory == "static" and (self.min or self.limit is not None):
            raise ValueError("min/limit need memory: elastic")
        return self


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_key: str | None = None
    max_awake: int | None = Field(default=None, ge=1)
    sample_interval: float = Field(default=1.0, gt=0)
    models: dict[str, ModelSpec]

    @field_validator("models")
    @classmethod
    def _models(cls, v):
        if not v:
            raise ValueError("at least one model is needed")
        for name in v:
            if not _NAME.match(name):
                raise ValueError(f"model name {name!r}: letters, digits and . _ : / - only (up to 64)")
        return v

    @model_validator(mode="after")
    def _guarded(self):
        if self.host not in LOOPBACK and not self.api_key:
            raise ValueError(f"host {self.host!r} is reachable from other machines: set api_key "
                             "(writing endpoints are open only on 127.0.0.1)")
        return self


def load(path: str | os.PathLike) -> ServeConfig:
    """Read and validate a YAML file; every error names the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration: {e.strerror or e}") from None
    return parse(text, str(path))


def parse(text: str, source: str = "<config>") -> ServeConfig:
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise ConfigError(f"{source}:1: the configuration is empty")
            lines: dict[tuple, int] = {}
            _index(node, (), lines, source)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(f"{source}:{line}: not valid YAML: {e.problem or e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the configuration must be a mapping (host, port, models, ...)")
    data = _expand_env(data, (), lines, source)
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        raise ConfigError(f"{source}:{_line_of(loc, lines)}: {where}: {err['msg']}") from None


def _index(node, path: tuple, lines: dict, source: str) -> None:
    """Record the line of every key (and list item); refuse duplicate keys, which YAML would silently merge."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            k = key.value
            if k in seen:
                raise ConfigError(f"{source}:{key.start_mark.line + 1}: {'.'.join(map(str, path + (k,)))} is given twice")
            seen.add(k)
            lines[path + (k,)] = key.start_mark.line + 1
            _index(value, path + (k,), lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, path + (i,), lines, source)


def _line_of(loc: tuple, lines: dict) -> int:
    """The line of the longest prefix of ``loc`` in the file (a missing key: the line of its parent)."""
    for n in range(len(loc), -1, -1):
        key = tuple(str(p) if not isinstance(p, int) else p for p in loc[:n])
        if key in lines:
            return lines[key]
    return 1


def _expand_env(value, path: tuple, lines: dict, source: str):
    if isinstance(value, dict):
        return {k: _expand_env(v, path + (k,), lines, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, path + (i,), lines, source) for i, v in enumerate(value)]
    if isinstance(value, str):
        def sub(m):
            if m.group(1) not in os.environ:
                raise ConfigError(f"{source}:{_line_of(path, lines)}: {'.'.join(map(str, path))}: "
                                  f"environment variable {m.group(1)} is not set")
            return os.environ[m.group(1)]

        return _ENV_REF.sub(sub, value)
    return value
