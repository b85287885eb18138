"""A Dashboard in a real ipykernel: after its cell returned, the Telemetry's sampler thread keeps the views
current through IOPub, coalesced, and the last state arrives. Runs against the installed ipykernel (>= 7.1)
and against ipykernel 6.29 (the ``kernel`` fixture, tests/views/conftest.py).
"""

import time
from pathlib import Path

import pytest

pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")
pytest.importorskip("anywidget")

ROOT = Path(__file__).resolve().parents[2]
CELL = f"""
import sys, threading, time
sys.path.insert(0, {str(ROOT)!r})
import numpy as np, ipykernel
from kvlab import views
from kvlab.lab import Server
from kvlab.models import synthetic
from kvlab.registry import Publisher
server = Server(synthetic("qwen2", "tiny"), memory="elastic", device="cpu", start=False, name="k")
pub = Publisher("k", 256 << 21, 2 << 20, name=server.pool_name)
dash = views.watch(server, interval=0.05)
def engine():  # an engine's scheduler publishing its pool, 40 times a second
    for i in range(120):
        s = np.zeros(256, np.uint8); s[:i + 1] = 2
        pub.update(mapped=(i + 1) << 21, used=(i + 1) << 21, pages=s)
        time.sleep(0.025)
threading.Thread(target=engine, daemon=True).start()
(dash.pagemap.comm.comm_id, ipykernel.__version__)
"""


def test_dashboard_updates_reach_iopub_from_the_sampler_thread(kernel):
    msg_id = kernel.execute(CELL)
    comm_id, version, used, t_idle, t_end = None, None, [], None, time.monotonic() + 30
    while time.monotonic() < t_end:
        if used and used[-1][1] == 120 and time.monotonic() - used[-1][0] > 1.0:
            break  # the final state came, and nothing after it (the timeline's messages go on)
        try:
            msg = kernel.get_iopub_msg(timeout=0.5)
        except Exception:  # queue.Empty: quiet for 0.5 s
            continue
        content = msg["content"]
        if msg["msg_type"] == "error":
            raise AssertionError("\n".join(content["traceback"]))
        if msg["msg_type"] == "execute_result" and msg["parent_header"].get("msg_id") == msg_id:
            comm_id, version = eval(content["data"]["text/plain"])
        elif msg["msg_type"] == "status" and content["execution_state"] == "idle" and t_idle is None:
            t_idle = time.monotonic()
        elif msg["msg_type"] == "comm_msg" and content["comm_id"] == comm_id and msg["buffers"]:
            states = content["data"]["state"].get("states", {})
            for path, buf in zip(content["data"].get("buffer_paths", []), msg["buffers"]):
                if path[-1] == "k" and path[0] == "states" and states is not None:
                    used.append((time.monotonic(), sum(1 for b in bytes(buf) if b == 2)))
    kernel.execute("dash.close(); pub.close()")
    print(f"ipykernel {version}: {len(used)} page map updates")
    assert comm_id and used, "no page map update reached IOPub"
    assert used[-1][1] == 120, f"the last state never arrived: {used[-3:]}"
    assert sum(t > t_idle for t, _ in used) >= 5, "updates did not keep flowing after the cell returned"
    span = max(used[-1][0] - used[0][0], 0.1)
    assert len(used) <= span * 10 + 3, f"{len(used)} page map messages in {span:.2f} s: not coalesced"
