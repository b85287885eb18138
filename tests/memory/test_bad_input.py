"""Bad input gets a clear, typed error and changes nothing."""

import numpy as np
import pytest

from kvlab.memory import (Arena, ArenaClosed, InvalidArgument, InvalidPages, LimitExceeded, MiB, PagePool,
                          parse_device, parse_size)


def test_capacity_zero():
    with pytest.raises(InvalidArgument, match="capacity must be positive"):
        Arena(0)


def test_capacity_is_rounded_up_to_pages():
    with Arena(3 * MiB) as a:
        assert a.capacity == 4 * MiB and a.n_pages == 2


@pytest.mark.parametrize("page_size", [1000, 4096 + 1, "3KiB"])
def test_page_size_not_multiple_of_granularity(page_size):
    with pytest.raises(InvalidArgument, match="not a multiple of the cpu granularity"):
        Arena("8MiB", page_size=page_size)
    with pytest.raises(InvalidArgument, match="not a multiple of the cpu granularity"):
        PagePool("cpu", page_size)  # the same rule in the same words: the native page pool checks it


@pytest.mark.parametrize("pages", [[32], [-1], [0, 1, 99], np.array([40])])
def test_pages_out_of_range_change_nothing(pages):
    with Arena("64MiB") as a:
        a.map([0])
        with pytest.raises(InvalidPages, match="out of range: this arena has 32 pages"):
            a.map(pages)
        with pytest.raises(InvalidPages):
            a.unmap(pages)
        assert a.mapped.nonzero()[0].tolist() == [0]


@pytest.mark.parametrize("pages", [[1.5], ["a"], np.zeros((2, 2), dtype=np.int64)])
def test_pages_of_wrong_type(pages):
    with Arena("8MiB") as a, pytest.raises(InvalidPages, match="1-D sequence of integers"):
        a.map(pages)


def test_use_after_close():
    a = Arena("8MiB")
    a.close()
    a.close()  # idempotent
    for call in (lambda: a.map([0]), lambda: a.unmap([0]), a.unmap_all, lambda: a.tensor("uint8", (1,))):
        with pytest.raises(ArenaClosed, match="closed"):
            call()


def test_limit_errors_and_semantics():
    with Arena("32MiB") as a:
        with pytest.raises(InvalidArgument, match="limit of 0 bytes"):
            a.limit = 0
        a.limit = "4MiB"
        a.map([0, 1])
        with pytest.raises(LimitExceeded, match="over its limit of 4 MiB"):
            a.map([2])
        a.limit = None
        a.map([2])
        assert a.mapped_pages == 3


@pytest.mark.parametrize("text,value", [("2MiB", 2 * MiB), ("1.5G", 3 << 29), (4096, 4096), ("10 kb", 10240)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["-1G", "lots", -5, "5 parsecs", True])
def test_parse_size_rejects_garbage(bad):
    with pytest.raises(InvalidArgument):
        parse_size(bad)


def test_devices():
    assert str(parse_device("cuda")) == "cuda:0"
    assert parse_device("cuda:3").index == 3
    with pytest.raises(InvalidArgument, match="unknown device"):
        parse_device("tpu:0")


def test_views_reject_bad_shapes_and_dtypes():
    with Arena("8MiB") as a:
        with pytest.raises(InvalidArgument, match="needs"):
            a.tensor("float32", (3 * MiB,))
        with pytest.raises(InvalidArgument, match="unsupported dtype"):
            a.tensor("complex64", (4,))
        with pytest.raises(InvalidArgument, match="multiple of"):
            a.tensor("float32", (4,), offset=2)
        with pytest.raises(InvalidArgument, match="do not fit"):
            a.tensor("float32", (4, 4), strides=(4,))


def test_unknown_cuda_device_or_missing_driver_is_clear():
    from kvlab.memory import BackendError

    with pytest.raises((BackendError, InvalidArgument), match="cuda"):
        Arena("8MiB", device="cuda:57")
