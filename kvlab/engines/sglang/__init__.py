"""kvlab.engines.sglang: SGLang serving from elastic KV memory.

Turn it on with ``KVLAB_ELASTIC=1`` in the environment of ``python -m sglang.launch_server`` (or
``Server(model, engine="sglang")``). SGLang loads ``register`` through its ``sglang.srt.plugins``
entry point in every scheduler process; with elastic memory on, it hooks SGLang's KV pool and
allocator construction and its scheduler loop (compat.py). The same settings as for vLLM apply
(``KVLAB_LIMIT``, ``KVLAB_RESERVE``, ``KVLAB_IDLE_RELEASE``, ``KVLAB_POOL_NAME``, ``KVLAB_MIN``, ...), and
the pool's registry record is read and limited like a vLLM pool's (``kvlab top``, ``kvlab ctl``).
Checked versions: ``compat.CHECKED``. Design: docs/design/sglang-integration.md.
"""

from __future__ import annotations

import logging

from .compat import CHECKED, SUPPORTED, UnsupportedSGLang

logger = logging.getLogger("sglang.kvlab")


def register() -> None:
    """Entry point of SGLang's ``sglang.srt.plugins`` group: cheap and inert unless KVLAB_ELASTIC=1."""
    from . import compat
    from .settings import pool_settings

    if not pool_settings().elastic:
        return
    compat.check(compat.installed_version() or "")
    compat.register_hooks()
    logger.info("kvlab: elastic KV memory on for SGLang %s", compat.installed_version())


__all__ = ["register", "CHECKED", "SUPPORTED", "UnsupportedSGLang"]
