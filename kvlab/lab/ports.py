"""Free ports for engine servers, and a clear answer when an asked-for port is taken."""

from __future__ import annotations

import errno
import socket

from .errors import PortInUse


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel picks it; a race with another process is
    still possible, so the server retries on 'address in use')."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    # SO_REUSEADDR like uvicorn: a port in TIME_WAIT is usable, one with a listener is not.
    for bind_host in {host, "0.0.0.0"}:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((bind_host, port))
            except OSError as e:
                if e.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                raise
    return True


def check_port(port: int, host: str = "127.0.0.1") -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    if not port_is_free(port, host):
        raise PortInUse(errno.EADDRINUSE,
                        f"port {port} is already in use (another server?): pass port=None to pick a free one, "
                        f"or stop what listens there")
    return port
