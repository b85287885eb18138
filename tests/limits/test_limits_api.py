"""kvlab.limits: targets (pool, model, Server), sizes and shares, and bad input that changes nothing."""

from types import SimpleNamespace

import pytest

from kvlab import limits
from kvlab.registry import InvalidSize, LimitBelowMinimum, PoolNotFound, Publisher, read

MiB, GiB = 1 << 20, 1 << 30


@pytest.fixture
def pools(root):
    with Publisher("org/tiny", GiB, 2 * MiB, name="a") as a, Publisher("org/tiny", GiB, 2 * MiB, name="b") as b, \
            Publisher("other/tiny", 2 * GiB, 2 * MiB, name="c") as c:
        yield a, b, c


def _controls(*names):
    return [read(n).control for n in names]


def test_targets_and_sizes(pools):
    assert [p.name for p in limits.list_pools()] == ["a", "b", "c"]
    limits.set_limit("a", "512MiB")
    assert limits.limit_of("a") == 512 * MiB
    limits.set_limit("org/tiny", "25%")                    # a model: all its pools, % of each one's capacity
    assert _controls("a", "b")[0].limit == _controls("a", "b")[1].limit == GiB // 4
    limits.set_limit("c", "10%")
    assert limits.limit_of(SimpleNamespace(pool_name="c")) == 2 * GiB // 10  # a Server-like object
    limits.set_min("c", "100MiB")
    limits.unlimit("c")
    assert limits.limit_of("c") is None and read("c").control.min == 100 * MiB


def test_bad_input_changes_nothing(pools):
    limits.set_min("a", "256MiB")
    before = _controls("a", "b", "c")
    cases = [(PoolNotFound, lambda: limits.set_limit("nope", "1G")),
             (InvalidSize, lambda: limits.set_limit("a", "lots")),
             (InvalidSize, lambda: limits.set_limit("a", "-1G")),
             (InvalidSize, lambda: limits.set_limit("a", "101%")),
             (InvalidSize, lambda: limits.set_min("a", "2G")),                  # over its capacity
             (LimitBelowMinimum, lambda: limits.set_limit("a", "128MiB")),
             (LimitBelowMinimum, lambda: limits.set_limit("org/tiny", "200MiB")),  # b would take it: a refuses
             (limits.AmbiguousTarget, lambda: limits.set_limit("tiny", "1G")),  # two models' basename
             (limits.AmbiguousTarget, lambda: limits.limit_of("org/tiny")),     # two pools, one answer asked
             (PoolNotFound, lambda: limits.set_limit(SimpleNamespace(pool_name=None), "1G")),  # a static Server
             (TypeError, lambda: limits.set_limit(42, "1G"))]
    for error, call in cases:
        with pytest.raises(error):
            call()
    assert _controls("a", "b", "c") == before
    assert issubclass(PoolNotFound, LookupError) and issubclass(InvalidSize, ValueError)
    assert issubclass(limits.AmbiguousTarget, LookupError) and issubclass(LimitBelowMinimum, ValueError)


def test_wait_times_out_when_nobody_applies_it(pools):
    with pytest.raises(TimeoutError, match="did not apply"):
        limits.set_limit("a", "1G", wait=0.2)      # a bare Publisher never acknowledges
    assert read("a").control.limit == GiB          # but the request stands
