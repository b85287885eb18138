"""The GPU server tests use the limits tests' private registry directory and tiny model."""

from tests.limits.conftest import root  # noqa: F401  (fixture; tiny_model is tests/conftest.py's)
