"""`kvlab top` on a hybrid model's pool: pages in use by KV cache group g are PageState.USED + g in the record."""

from kvlab.cli.top import page_map, used_text

MiB = 1 << 20


def test_pages_of_every_group_count_as_used_and_are_counted_per_group():
    pages = "2233333" + "1" * 3 + "0" * 6  # group 0 holds 2 pages, group 1 five; 3 mapped free, 6 unmapped
    assert page_map(pages, 16) == "█" * 7 + "▒" * 3 + "·" * 6
    assert used_text({"pages": pages, "used": 7 * MiB}) == "7.00 MiB (g0:2p g1:5p)"
    assert used_text({"pages": "2210", "used": 2 * MiB}) == "2.00 MiB"  # one group: as before
