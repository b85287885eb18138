"""kvlab.serve: several models behind one OpenAI-compatible endpoint; idle engines sleep, requests wake them.

>>> from kvlab.serve import serve
>>> gw = serve("serve.yaml")          # `kvlab serve serve.yaml` in a terminal
>>> gw.client().completions.create(model="qwen-a", prompt="Hi", max_tokens=8)
>>> gw.stop()

See config.py for the file, sleep.py for the sleep policies, router.py for waking and eviction, app.py
for the routes.
"""

from .config import ConfigError, ModelSpec, ServeConfig, load, parse
from .gateway import Gateway, serve
from .sleep import EngineUnavailable

__all__ = ["serve", "Gateway", "ServeConfig", "ModelSpec", "ConfigError", "EngineUnavailable", "load", "parse"]
