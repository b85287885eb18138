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


@pytest.fixture(autouse=True)
def _sigint_handler_restored(request):
    """Give SIGINT's handler back after every test, and name a test that changed it.

    ``_thread.interrupt_main`` (what a Jupyter kernel's interrupt does to a run here) raises nothing under
    a handler another test left behind; test_interrupt_keeps_records failed so, twice in the whole suite.
    """
    import signal
    import warnings

    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before:
        signal.signal(signal.SIGINT, before)
        warnings.warn(f"{request.node.nodeid} left SIGINT's handler {after!r} (was {before!r}); restored")
