"""Typed errors of the lab layer: each says what happened and what to do next."""

from __future__ import annotations


class LabError(Exception):
    """Base class of every error raised by kvlab.lab."""


class ServerError(LabError):
    """Starting, watching or stopping an engine server failed."""


class ModelNotFound(ServerError, FileNotFoundError):
    """The model path does not exist or is not a model directory (checked before anything starts)."""


class PortInUse(ServerError, OSError):
    """The port asked for is already taken by another process."""


class UnsupportedSetup(ServerError, RuntimeError):
    """This memory mode or device cannot work here (no GPU, kvcached missing, wrong vLLM build)."""


class StartTimeout(ServerError, TimeoutError):
    """The engine did not answer its health check within the start timeout (it has been stopped)."""

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(message)
        self.log_tail = log_tail


class EngineDied(ServerError, RuntimeError):
    """The engine process exited, during start or later. ``log_tail`` holds its last log lines and
    ``records`` whatever a workload had measured when it happened."""

    def __init__(self, message: str, log_tail: str = "", exit_code: int | None = None, records=None):
        super().__init__(message)
        self.log_tail = log_tail
        self.exit_code = exit_code
        self.records = records if records is not None else []


class InvalidEngineArgs(EngineDied, ValueError):
    """vLLM refused the engine arguments and exited at once."""


class WorkloadError(LabError, ValueError):
    """A workload's parameters cannot produce a valid schedule."""


class TraceError(WorkloadError):
    """A trace file has bad rows. ``problems`` lists (row number, reason), counted from 1 as in an editor."""

    def __init__(self, path, problems: list[tuple[int, str]]):
        self.path = str(path)
        self.problems = list(problems)
        shown = "\n".join(f"  row {row}: {why}" for row, why in self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(f"trace {self.path} has {len(self.problems)} bad row(s); nothing was sent:\n{shown}{more}")


class RunInterrupted(LabError, KeyboardInterrupt):
    """A workload was interrupted (Ctrl-C / kernel interrupt); ``records`` keeps what was measured."""

    def __init__(self, message: str, records=None):
        super().__init__(message)
        self.records = records if records is not None else []
