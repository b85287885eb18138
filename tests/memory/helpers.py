"""Measuring what the kernel really holds: resident bytes of an address range from /proc/self/smaps."""

import re

_RANGE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ")


def resident_bytes(base: int, size: int) -> int:
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            m = _RANGE.match(line)
            if m:
                lo, hi = int(m[1], 16), int(m[2], 16)
                inside = lo < base + size and hi > base
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total
