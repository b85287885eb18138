"""Record the comm messages widgets would send, without a kernel (tests and benchmarks).

ipywidgets asks ``comm.create_comm`` for its channel; outside a kernel that is a comm that drops
everything. ``capture()`` swaps in one that JSON-encodes each message, as the kernel's session would
(so the cost is measured), and keeps it for inspection.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field

import comm
from comm.base_comm import BaseComm


@dataclass
class Message:
    t: float  # time.monotonic() when sent
    comm_id: str
    msg_type: str  # comm_open, comm_msg, comm_close
    data: dict
    buffers: list[bytes]
    nbytes: int  # JSON + buffers, roughly what goes over IOPub


@dataclass
class Capture:
    messages: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def updates(self, comm_id: str | None = None) -> list[Message]:
        """comm_msg updates (state changes), optionally of one widget (``widget.comm.comm_id``)."""
        with self.lock:
            return [m for m in self.messages if m.msg_type == "comm_msg" and m.data.get("method") == "update"
                    and (comm_id is None or m.comm_id == comm_id)]

    def state(self, comm_id: str) -> dict:
        """The widget state a front end would hold after every message so far (buffers put back)."""
        state: dict = {}
        with self.lock:
            msgs = [m for m in self.messages if m.comm_id == comm_id and m.msg_type in ("comm_open", "comm_msg")]
        for m in msgs:
            s = json.loads(json.dumps(m.data.get("state", {})))
            for path, buf in zip(m.data.get("buffer_paths", []), m.buffers):
                obj = s
                for key in path[:-1]:
                    obj = obj[key]
                obj[path[-1]] = bytes(buf)
            state.update(s)
        return state


class _CaptureComm(BaseComm):
    sink: Capture

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        data = {} if data is None else data
        blob = json.dumps({"data": data, "comm_id": self.comm_id, **keys}, default=str)
        bufs = [bytes(b) for b in (buffers or [])]
        msg = Message(time.monotonic(), self.comm_id, msg_type, data, bufs, len(blob) + sum(map(len, bufs)))
        with self.sink.lock:
            self.sink.messages.append(msg)


@contextlib.contextmanager
def capture():
    """``with capture() as cap:`` widgets created inside record their messages in ``cap.messages``."""
    sink = Capture()
    cls = type("CaptureComm", (_CaptureComm,), {"sink": sink})
    previous = comm.create_comm
    comm.create_comm = lambda *a, **k: cls(*a, **k)
    try:
        yield sink
    finally:
        comm.create_comm = previous
