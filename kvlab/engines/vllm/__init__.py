"""kvlab.engines.vllm: vLLM serving from elastic KV memory.

Turn it on with ``KVLAB_ELASTIC=1`` (vLLM loads ``register`` through its ``vllm.general_plugins``
entry point in every process). Optional: ``KVLAB_LIMIT`` (most KV bytes mapped at once),
``KVLAB_RESERVE`` (free headroom kept mapped), ``KVLAB_RELEASE_DELAY`` (seconds),
``KVLAB_IDLE_RELEASE`` (seconds idle before the reserve goes too, default 30; ``off`` keeps it),
``KVLAB_PAGE_SIZE``, ``KVLAB_POOL_NAME`` (the pool's registry record), ``KVLAB_MIN`` (a guarantee),
``KVLAB_HEADROOM`` (device memory no pool grows into); or per engine
``additional_config={"kvlab": ElasticSettings(...).to_dict()}``, which replaces the environment's
settings (``kvlab.lab.Server(..., elastic=ElasticSettings(...))`` passes it so). Limits change at run time through the registry
(``kvlab.limits``, ``kvlab ctl``).
Design: docs/design/vllm-integration.md.
"""

from kvlab.settings import ElasticSettings

from .geometry import UnsupportedModel
from .plugin import register
from .versions import SUPPORTED, UnsupportedVLLM

__all__ = ["register", "ElasticSettings", "SUPPORTED", "UnsupportedVLLM", "UnsupportedModel"]
