"""Reading an engine's log while it starts: milestones for the progress bar, readable last lines, tails."""

from __future__ import annotations

import os
import re
from collections import deque
from pathlib import Path

_LOG_PREFIX = re.compile(r"^\((?:APIServer|EngineCore\w*|\w*Worker[-\w]*) pid=\d+\)\s+"
                         r"(?:INFO|WARNING|ERROR|DEBUG|CRITICAL)?\s*(?:\d\d-\d\d \d\d:\d\d:\d\d)?\s*(?:\[[^\]]*\]\s*)?")
# Milestones of a vLLM start in its log, in order: the progress bar's steps.
STAGES = (
    ("non-default args", "arguments parsed"),
    ("Initializing a V1 LLM engine", "engine initialising"),
    ("Loading weights took", "weights loaded"),
    ("KV cache size", "KV cache allocated"),
    ("init engine", "engine ready"),
    ("Starting vLLM API server", "API server starting"),
    ("Application startup complete", "API server up"),
)


def short(line: str, width: int = 90) -> str:
    """A log line without vLLM's process/level/time/source prefix, cut to ``width``."""
    line = _LOG_PREFIX.sub("", line.strip())
    return line if len(line) <= width else line[: width - 1] + "…"


def tail(path: Path, n: int) -> str:
    """The last ``n`` lines of a log file (only its end is read: logs of long runs grow large)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(deque(text.splitlines(), maxlen=n))


def read_new(path: Path, offset: int) -> tuple[int, list[str]]:
    """Whole lines written since ``offset``, and the offset to read from next time."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return offset, []
    cut = data.rfind(b"\n") + 1  # only whole lines; the rest is read next time
    return offset + cut, data[:cut].decode(errors="replace").replace("\r", "\n").splitlines()


def progress_bar(enabled: bool, desc: str, total: int):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, bar_format="{desc} |{bar}| {elapsed}", leave=True, dynamic_ncols=True)
