"""One page plan, every rank: the ranks of a tensor- (or pipeline-) parallel engine agree on the outcome.

Each rank maps its own shard of the same chunks. A rank that cannot map must not let the step run: its
peers would read its unmapped pages in their forward pass (a fault), or wait for it in a collective
forever. So after applying a plan every rank tells every other one how it went (one small all-gather on
the CPU group, only on steps that carry a plan). If any rank failed, every rank undoes this plan's maps,
so all ranks keep the same mapped chunks and none is half-mapped, and none runs the forward pass. The
failure travels back with the step's output to the scheduler, which turns it into a scheduling miss.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvlab.memory import KvlabMemoryError

# The ModelRunnerOutput attribute that carries a MapFailure from the workers to the scheduler.
FAILURE_ATTR = "kvlab_map_failure"
# The SchedulerOutput attribute that says how many misses the scheduler had handled when it made the step.
MISSES_ATTR = "kvlab_misses"


@dataclass(frozen=True)
class MapFailure:
    """Rank ``rank`` of ``ranks`` could not apply plan ``seq``'s maps of ``chunks``; ``reason`` says why.

    ``recoverable``: the map ran out of memory (or the backend refused it) and was rolled back, so the
    step can be retried later. Anything else leaves a rank's state unknown and stops the engine.
    """

    rank: int
    ranks: int
    seq: int
    chunks: tuple[int, ...]
    reason: str
    recoverable: bool = True

    def describe(self) -> str:
        return (f"rank {self.rank} of {self.ranks} could not map KV chunks {list(self.chunks)} of plan {self.seq}: "
                f"{self.reason}")


class RankMapError(KvlabMemoryError):
    """A rank could not apply a page plan and its state could not be made consistent: the engine stops."""

    def __init__(self, failure: MapFailure):
        super().__init__(f"kvlab: {failure.describe()}")
        self.failure = failure


def agree(local: MapFailure | None, group) -> MapFailure | None:
    """Every rank's outcome of the same plan, exchanged; returns the lowest failing rank's, or None.

    ``group`` is ``(rank, world size, CPU process group)`` or None for a single rank. Every rank must
    call it for the same plans in the same order (they do: each applies every step's plan).
    """
    if group is None or group[1] == 1:
        return local
    import torch.distributed as dist

    _, world, cpu_group = group
    outcomes: list[MapFailure | None] = [None] * world
    dist.all_gather_object(outcomes, local, group=cpu_group)
    failures = [f for f in outcomes if f is not None]
    if not failures:
        return None
    worst = [f for f in failures if not f.recoverable]
    return min(worst or failures, key=lambda f: f.rank)
