import json
import sys

import pytest


@pytest.fixture
def cap():
    """Widgets created in the test send their comm messages here instead of to a kernel."""
    from kvlab.views.capture import capture

    with capture() as c:
        yield c


@pytest.fixture
def coalescer():
    """A private views thread, so one test's widgets never wait on another's."""
    from kvlab.views import Coalescer

    c = Coalescer()
    yield c
    c.stop()


@pytest.fixture
def kernel(tmp_path):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = tmp_path / "kernels" / "kvlab-test"
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(json.dumps(
        {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": "kvlab test", "language": "python"}))
    km = KernelManager(kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]),
                       kernel_name="kvlab-test")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=30)
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)
