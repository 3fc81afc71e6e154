"""A store's snapshot of a growing list reads as the list did when it was taken."""

from __future__ import annotations

import pytest

from server.trackers.snapshot import Snapshot


def test_a_snapshot_reads_the_items_it_was_taken_with_after_the_list_grows() -> None:
    items = ["a", "b", "c", "d"]
    snapshot = Snapshot(items, 1)
    items.append("e")

    assert len(snapshot) == 3
    assert [snapshot[0], snapshot[2], snapshot[-1], snapshot[-3]] == ["b", "d", "d", "b"]
    assert snapshot[True] == "c"  # an int subclass indexes as its value
    assert snapshot[0:2] == ["b", "c"] and snapshot[1:] == ["c", "d"]
    assert snapshot[::2] == ["b", "d"]
    assert list(snapshot) == ["b", "c", "d"]
    for index in (3, -4, 10):
        with pytest.raises(IndexError):
            snapshot[index]
    with pytest.raises(TypeError):
        snapshot["1"]  # type: ignore[call-overload]
