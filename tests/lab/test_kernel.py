"""A Server started in a Jupyter kernel is stopped when the kernel shuts down or is restarted."""

import json
import time

import pytest

pytest.importorskip("vllm")
pytest.importorskip("ipykernel")
jupyter_client = pytest.importorskip("jupyter_client")
pytestmark = pytest.mark.slow

from .conftest import wait_gone  # noqa: E402


def _run(kc, code: str, timeout: float = 240) -> str:
    msg_id = kc.execute(code)
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            out.append(content["text"])
        elif kind == "error":
            raise AssertionError("\n".join(content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(out)
    raise TimeoutError(code)


def test_kernel_shutdown_and_restart_stop_the_engine(tiny_model):
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3")
    try:
        start = ("import json\nfrom kvlab.lab import Server\n"
                 f"s = Server({str(tiny_model)!r}, memory='static', progress=False, max_model_len=512, "
                 "kv_cache_memory_bytes=64 << 20)\n"
                 "print(json.dumps({'pgid': s.pgid, 'pids': s.pids()}))\n")
        first = json.loads(_run(kc, start).strip().splitlines()[-1])
        assert len(first["pids"]) >= 3
        km.restart_kernel(now=True)  # what "Restart kernel" does to a busy kernel: SIGKILL
        assert wait_gone(first["pgid"], 15) == [], "engine outlived a kernel restart"

        kc.wait_for_ready(timeout=60)
        second = json.loads(_run(kc, start).strip().splitlines()[-1])
        t0 = time.monotonic()
        km.shutdown_kernel(now=False)  # a polite shutdown: the kernel exits, atexit stops the server
        assert wait_gone(second["pgid"], 15) == [], "engine outlived the kernel's shutdown"
        print(f"engine gone {time.monotonic() - t0:.1f} s after the shutdown request")
    finally:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=True)
