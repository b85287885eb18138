"""Imports kvlab._native once and registers kvlab's error classes with it."""

from __future__ import annotations

import functools

from .errors import NATIVE_ORDER


@functools.cache
def native():
    try:
        from kvlab import _native
    except ImportError as exc:  # a source checkout that was never built
        raise ImportError(
            "kvlab's native module is not built: run `make test` (or `pip install -e .`) in the checkout"
        ) from exc
    _native.set_error_types(NATIVE_ORDER)
    return _native
