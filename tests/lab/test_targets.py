"""The one walk over lab targets that Telemetry, the Dashboard and run_workload share."""

import pytest

from kvlab.lab.targets import flatten, require


class _Server:
    def __init__(self, name):
        self.name, self.url, self.pids = name, f"http://{name}", [1]


class _Fleet:
    def __init__(self, *servers):
        self.servers = servers


def test_flatten_walks_lists_and_fleets_in_order():
    a, b, c = _Server("a"), _Server("b"), _Server("c")
    assert flatten(None) == []
    assert flatten(a) == [a]
    assert flatten([a, (_Fleet(b, c),)]) == [a, b, c]
    assert flatten(_Fleet()) == []


def test_require_names_the_leaf_that_lacks_an_attribute():
    a = _Server("a")
    assert require([a], ("url", "pids"), "need servers") == [a]
    with pytest.raises(TypeError, match=r"need servers, got 'oops'"):
        require([a, "oops"], ("url",), "need servers")
