"""Fixtures for the limits tests: a private registry directory, and a tiny model for real engines."""

import pytest

from tests.registry.conftest import root  # noqa: F401  (the same private registry directory fixture)


@pytest.fixture(scope="session")
def tiny_model():
    pytest.importorskip("tokenizers")
    from kvlab.models import synthetic

    return synthetic("qwen2", "tiny")  # kvlab's model cache: built once per machine, shared with tests/lab
