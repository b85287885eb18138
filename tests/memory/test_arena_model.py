"""Property test: random map/unmap sequences against a plain-Python model of the arena."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.memory import Arena, LimitExceeded, MiB

from .helpers import resident_bytes

N_PAGES = 24
PAGE = 2 * MiB

pages = st.lists(st.integers(0, N_PAGES - 1), max_size=12)
ops = st.lists(st.tuples(st.sampled_from(["map", "unmap", "limit"]), pages), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_random_sequences_match_model(sequence):
    model: set[int] = set()
    limit = None
    with Arena(N_PAGES * PAGE, device="cpu") as arena:
        for op, ps in sequence:
            if op == "limit":
                limit = (len(ps) + 1) * PAGE if len(ps) % 3 else None
                arena.limit = limit
                continue
            if op == "map":
                new = set(ps) - model
                if new and limit is not None and (len(model) + len(new)) * PAGE > limit:
                    try:
                        arena.map(ps)
                        raise AssertionError("map over the limit succeeded")
                    except LimitExceeded:
                        pass  # and nothing changed: checked below
                else:
                    assert arena.map(ps) == len(new)
                    model |= new
            else:
                gone = set(ps) & model
                assert arena.unmap(ps) == len(gone)
                model -= gone
            expected = np.zeros(N_PAGES, dtype=bool)
            expected[sorted(model)] = True
            assert (arena.mapped == expected).all()
            assert arena.mapped_bytes == len(model) * PAGE
        assert resident_bytes(arena.base, arena.capacity) == len(model) * PAGE
