"""What a lab call is pointed at: a Server, a Fleet, a list of either (nested), or None.

Telemetry, the Dashboard and run_workload all accept the same shapes; ``flatten`` turns them into the
list of leaves, and each caller checks that the leaves are what it can use (servers with processes,
servers with names, or clients) and says so in its own words.
"""

from __future__ import annotations


def flatten(targets) -> list:
    """The leaves of ``targets``: lists and tuples are walked, a Fleet (anything with ``.servers``)
    stands for its servers, None for nothing; anything else is a leaf."""
    if targets is None:
        return []
    if isinstance(targets, (list, tuple)):
        return [leaf for t in targets for leaf in flatten(t)]
    inner = getattr(targets, "servers", None)
    if inner is not None:
        return flatten(list(inner))
    return [targets]


def require(leaves: list, has: tuple[str, ...], message: str) -> list:
    """``leaves``, after checking each has the attributes ``has``; a TypeError naming the first that does not."""
    for leaf in leaves:
        if not all(hasattr(leaf, a) for a in has):
            raise TypeError(f"{message}, got {leaf!r}")
    return leaves
