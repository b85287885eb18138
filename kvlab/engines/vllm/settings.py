"""Where an engine's ElasticSettings (kvlab.settings) come from and how they travel inside vLLM.

In the process that builds the engine's config (``EngineArgs.create_engine_config``, see plugin.py) the
settings are ``additional_config["kvlab"]`` when the engine was given one (``kvlab.lab.Server`` does,
from ``Server(..., elastic=ElasticSettings(...))``), else the ``KVLAB_*`` environment (``vllm serve``
users). They travel to the scheduler and worker processes as ``vllm_config.additional_config["kvlab"]``
(``ElasticSettings.to_dict()``), so every process of one engine agrees on them even when the environment
differs, and each process parses them once.
"""

from __future__ import annotations

from collections.abc import Mapping

from kvlab.settings import ElasticSettings

CONFIG_KEY = "kvlab"
_parsed: dict[str, ElasticSettings] = {}  # engine_id -> settings: the scheduler and its in-process workers


def _carried(config) -> Mapping | None:
    extra = getattr(config, "additional_config", None) or {}
    data = extra.get(CONFIG_KEY) if isinstance(extra, Mapping) else None
    return data if isinstance(data, Mapping) else None


def for_engine_args(engine_args) -> ElasticSettings:
    """The settings an engine is being built with: its ``additional_config["kvlab"]``, else the environment."""
    data = _carried(engine_args)
    return ElasticSettings.from_dict(data) if data is not None else ElasticSettings.from_env()


def carry(vllm_config, settings: ElasticSettings) -> None:
    """Put ``settings`` (with an engine_id) into the engine's config, for its other processes; this process
    has parsed them already, so it keeps them."""
    extra = vllm_config.additional_config
    if not isinstance(extra, dict):
        raise ValueError("kvlab needs additional_config to be a dict to carry its settings")
    settings = settings.with_engine_id()
    extra[CONFIG_KEY] = settings.to_dict()
    _parsed[settings.engine_id] = settings


def from_vllm_config(vllm_config) -> ElasticSettings:
    """The settings an engine was built with (elastic=False when kvlab did not touch it); parsed once per process."""
    data = _carried(vllm_config)
    if data is None:
        return ElasticSettings(elastic=False)
    key = str(data.get("engine_id", ""))
    if key and key in _parsed:
        return _parsed[key]
    settings = ElasticSettings.from_dict(data)
    if key:
        _parsed[key] = settings
    return settings
