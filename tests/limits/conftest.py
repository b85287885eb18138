"""Fixtures for the limits tests: a private registry directory (``tiny_model`` is tests/conftest.py's)."""

from tests.registry.conftest import root  # noqa: F401  (the same private registry directory fixture)
