"""kvlab.units: sizes and shares as people write them, and clear errors for everything else."""

import pytest

from kvlab.units import GiB, MiB, Share, SizeError, format_size, parse_amount, parse_size, resolve


@pytest.mark.parametrize("text,value", [
    ("4096", 4096), (4096, 4096), ("2G", 2 * GiB), ("2g", 2 * GiB), ("512MiB", 512 * MiB), ("1.5GB", 3 * GiB // 2),
    (" 64 KiB ", 64 << 10), ("0", 0), ("1T", 1 << 40), (".5G", GiB // 2), (3.0, 3),
])
def test_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad,words", [
    ("-1G", "negative"), (-5, "negative"), ("garbage", "cannot read"), ("5 parsecs", "cannot read"),
    (True, "expected a size"), ("", "cannot read"), ("1.5.2G", "cannot read"), (float("nan"), "whole"),
    (1.5, "whole"), ("30%", "percentage"), (None, "cannot read"),
])
def test_bad_sizes_say_why(bad, words):
    with pytest.raises(SizeError, match=words):
        parse_size(bad)


def test_shares_of_a_capacity():
    assert parse_amount("30%") == Share(30.0) and str(Share(30.0)) == "30%"
    assert resolve("30%", 1000) == 300 and resolve("100%", 1000) == 1000 and resolve("0%", 1000) == 0
    assert resolve("12.5 %", 8 * MiB) == MiB and resolve("1G", 10) == GiB
    for bad, words in (("130%", "more than 100%"), ("-5%", "negative"), ("%", "percentage"), ("3%%", "percentage")):
        with pytest.raises(SizeError, match=words):
            parse_amount(bad)
    assert issubclass(SizeError, ValueError)


def test_memory_layer_keeps_its_error_type():
    pytest.importorskip("kvlab._native")
    from kvlab.memory import InvalidArgument
    from kvlab.memory import parse_size as memory_parse_size

    assert memory_parse_size("1.5GB") == 3 * GiB // 2
    with pytest.raises(InvalidArgument, match="negative"):
        memory_parse_size("-1G")


def test_format():
    assert format_size(None) == "none" and format_size(0) == "0 B" and format_size(3 * GiB // 2) == "1.50 GiB"
