"""In a real ipykernel: a thread updating a view 1000 times a second after its cell returned.

That is the case ipykernel 7.0 broke (comm messages from threads) and 7.1 fixed; it runs against
the installed ipykernel (>= 7.1) and against ipykernel 6.29 (the ``kernel`` fixture in conftest.py).
"""

import time
from pathlib import Path

import pytest

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")
pytest.importorskip("anywidget")

ROOT = Path(__file__).resolve().parents[2]
CELL = f"""
import sys, threading, time
sys.path.insert(0, {str(ROOT)!r})
import numpy as np
from kvlab.views import PageMap
pm = PageMap()
def storm():
    for i in range(1000):
        pm.update("p", np.full(64, i % 3, np.uint8), {{"i": i}})
        time.sleep(0.001)
threading.Thread(target=storm, daemon=True).start()
pm.comm.comm_id
"""


def test_thread_updates_reach_iopub_coalesced(kernel):
    msg_id = kernel.execute(CELL)
    comm_id, updates, t_idle, t_end = None, [], None, time.monotonic() + 15
    while time.monotonic() < t_end:
        try:
            msg = kernel.get_iopub_msg(timeout=0.5)
        except Exception:  # queue.Empty: quiet for 0.5 s
            if t_idle is not None and updates and updates[-1]["i"] == 999:
                break
            continue
        content = msg["content"]
        if msg["msg_type"] == "execute_result" and msg["parent_header"].get("msg_id") == msg_id:
            comm_id = eval(content["data"]["text/plain"])
        elif msg["msg_type"] == "status" and content["execution_state"] == "idle" and t_idle is None:
            t_idle = time.monotonic()
        elif msg["msg_type"] == "comm_msg" and content["data"].get("method") == "update":
            info = content["data"]["state"].get("infos", {}).get("p")
            if info is not None:
                updates.append({"t": time.monotonic(), "comm": content["comm_id"], "i": info["i"]})
    print(f"{len(updates)} updates over {updates[-1]['t'] - updates[0]['t']:.2f} s" if updates else "none")
    assert comm_id and updates, "no widget update reached IOPub from the background thread"
    assert {u["comm"] for u in updates} == {comm_id}
    assert updates[-1]["i"] == 999, "the last value never arrived"
    span = max(updates[-1]["t"] - updates[0]["t"], 0.1)
    assert len(updates) <= span * 10 + 3, f"{len(updates)} messages in {span:.2f} s"
    assert len(updates) >= 5  # and they flowed while the storm ran, after the cell had returned
