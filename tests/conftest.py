"""Fixtures for every test directory: one tiny model, and GPU tests skipped where no GPU can run them."""

import pytest


@pytest.fixture(scope="session")
def tiny_model():
    """A Qwen2-shaped model with random weights, made offline (kvlab's model cache: built once per machine)."""
    pytest.importorskip("tokenizers")
    from kvlab.models import synthetic

    return synthetic("qwen2", "tiny")


def _cuda_usable() -> bool:
    try:
        from kvlab.memory import _native_loader

        native = _native_loader.native()
        return any(d["vmm_supported"] for d in native.cuda_devices())
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_usable():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with VMM support (run on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
