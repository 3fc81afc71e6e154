"""The garbage collector of a server process while it starts (server.api.collector)."""

from __future__ import annotations

import gc
import weakref

import pytest

from server.api import collector


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_start_that_waits_long_still_has_its_garbage_collected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A start that waits (a slow model download, a remote storage that does not answer)
    while something makes garbage with cycles (a broker reconnecting in the background)
    keeps at most START_COLLECTION_OBJECTS of it uncollected: before, the collector was off
    until the model was loaded, and such garbage grew for as long as the start waited."""
    monkeypatch.setattr(collector, "START_COLLECTION_OBJECTS", 5_000)
    was_enabled, previous = gc.isenabled(), gc.get_threshold()
    gc.collect()
    with collector.collected_once_at_start():
        first = _Cycle()
        dropped = weakref.ref(first)
        del first
        for _ in range(20_000):  # the waiting's garbage, well past the bound
            _Cycle()
        assert dropped() is None
        survivors = [_Cycle() for _ in range(20)]
    assert (gc.isenabled(), gc.get_threshold()) == (was_enabled, previous)
    assert len(survivors) == 20


def test_a_start_makes_no_collection_before_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The imports and the model load (some 210,000 objects that live on) are not walked by
    the collector while a server starts."""
    seen: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.collect()
    kept: list[dict[str, int]] = []
    gc.callbacks.append(count)
    try:
        with collector.collected_once_at_start():
            kept.extend({"n": n} for n in range(100_000))
            while_starting = list(seen)
    finally:
        gc.callbacks.remove(count)
    assert while_starting == []
    assert len(kept) == 100_000


@pytest.mark.parametrize(
    ("value", "thresholds"),
    [
        (None, (5000, 20, 100)),
        ("", (5000, 20, 100)),
        (" 700, 10,10 ", (700, 10, 10)),
        ("0,0,0", (0, 0, 0)),
    ],
)
def test_the_thresholds_a_server_collects_by_once_started(
    monkeypatch: pytest.MonkeyPatch, value: str | None, thresholds: tuple[int, int, int]
) -> None:
    """BOTSERVER_GC_THRESHOLDS, as Python's gc takes them (0 first: no automatic collection);
    unset or empty, the server's own."""
    if value is None:
        monkeypatch.delenv(collector.GC_THRESHOLDS_ENV, raising=False)
    else:
        monkeypatch.setenv(collector.GC_THRESHOLDS_ENV, value)
    assert collector.gc_thresholds() == thresholds
