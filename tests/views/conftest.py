import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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


# ipykernel 7.0 broke comm messages sent from threads and 7.1 fixed them; the views must work on 6.x and
# on >= 7.1. The installed one is >= 7.1; `make test` also puts ipykernel 6.29 in .venv/ipykernel6, which
# goes first on the kernel's PYTHONPATH (the rest of the kernel's packages are shared and fit both).
IPYKERNEL6 = ROOT / ".venv" / "ipykernel6"


def _kernel_env(which: str) -> dict:
    env = dict(os.environ)
    if which == "ipykernel6":
        if not (IPYKERNEL6 / "ipykernel").is_dir():
            pytest.skip(f"ipykernel 6 is not in {IPYKERNEL6} (make test puts it there)")
        env["PYTHONPATH"] = os.pathsep.join([str(IPYKERNEL6), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    got = subprocess.run([sys.executable, "-c", "import ipykernel; print(ipykernel.__version__)"], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert got.startswith("6.") if which == "ipykernel6" else not got.startswith("7.0"), got
    return env


@pytest.fixture(params=["installed", "ipykernel6"])
def kernel(request, tmp_path):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    env = _kernel_env(request.param)
    spec = tmp_path / "kernels" / "kvlab-test"
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(json.dumps(
        {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": "kvlab test", "language": "python"}))
    km = KernelManager(kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]),
                       kernel_name="kvlab-test")
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=30)
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)
