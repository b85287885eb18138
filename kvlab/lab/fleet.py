"""Fleet: several servers (usually on one device) started and stopped together."""

from __future__ import annotations

import os

from .server import Server


class Fleet:
    """``Fleet([Server(a, start=False), "path/to/b", {"model": c, "memory": "static"}], memory="elastic")``

    Items are Servers (adopted as they are) or specs: a model path/id, or a dict of Server arguments;
    keyword arguments are defaults for the specs. Servers start one after another (engines load
    faster alone, and each sees what the previous one took); if one fails, the ones started are
    stopped and the error is raised. ``stop()`` stops every server even if some fail to stop.
    """

    def __init__(self, servers, *, start: bool = True, **defaults):
        items = list(servers)
        if not items:
            raise ValueError("a Fleet needs at least one server")
        self.servers: list[Server] = []
        for item in items:
            if isinstance(item, Server):
                self.servers.append(item)
            elif isinstance(item, dict):
                self.servers.append(Server(**{**defaults, **item, "start": False}))
            elif isinstance(item, (str, os.PathLike)):
                self.servers.append(Server(item, **{**defaults, "start": False}))
            else:
                raise TypeError(f"a Fleet item must be a Server, a model path/id or a dict of Server arguments, got {item!r}")
        if start:
            self.start()

    def start(self) -> "Fleet":
        try:
            for server in self.servers:
                server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float | None = None) -> None:
        errors = []
        for server in reversed(self.servers):
            try:
                server.stop(grace=grace)
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]

    @property
    def alive(self) -> bool:
        return all(s.alive for s in self.servers)

    def clients(self, **kwargs) -> list:
        return [s.client(**kwargs) for s in self.servers]

    def __enter__(self) -> "Fleet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __iter__(self):
        return iter(self.servers)

    def __len__(self) -> int:
        return len(self.servers)

    def __getitem__(self, i) -> Server:
        return self.servers[i]

    def __repr__(self) -> str:
        return "Fleet([\n" + "".join(f"  {s!r},\n" for s in self.servers) + "])"
