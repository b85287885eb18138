"""The GPU server tests use the limits tests' private registry directory and tiny model."""

from tests.limits.conftest import root, tiny_model  # noqa: F401  (fixtures)
