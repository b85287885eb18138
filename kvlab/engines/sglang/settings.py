"""The elastic settings of an SGLang engine: kvlab's one ``ElasticSettings`` (the same ``KVLAB_*`` keys as
for vLLM), read from the environment of the scheduler process, which SGLang starts with the server's
environment. Read once per pool, when SGLang builds it."""

from __future__ import annotations

from kvlab.engines.vllm.settings import ElasticSettings


def pool_settings(environ=None) -> ElasticSettings:
    return ElasticSettings.from_env(environ)


__all__ = ["ElasticSettings", "pool_settings"]
