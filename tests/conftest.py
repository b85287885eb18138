import pytest


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
