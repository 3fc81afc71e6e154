"""What a cached event weighs against `cache_events`: 1, plus 1 for each full KiB of its
stored JSON, so that a few huge events bound a cache as many ordinary ones do."""

from __future__ import annotations

from collections.abc import Iterable

# An event whose stored JSON is shorter than this weighs 1, as every event did before.
KIB = 1024

# (position among the cached events, extra weight) of each event of KIB characters or more.
Heavy = list[tuple[int, int]]


def extra_of_texts(texts: Iterable[str | bytes]) -> int:
    """What events stored as JSON `texts` weigh beyond 1 each (a slice tells a short text,
    without a call)."""
    return sum([len(text) // KIB for text in texts if text[KIB - 1 :]])


def after(heavy: Heavy, start: int) -> Heavy:
    """`heavy` of the events from `start` on, once those before are dropped."""
    return [(position - start, extra) for position, extra in heavy if position >= start]


def extra_of(heavy: Heavy) -> int:
    return sum(extra for _, extra in heavy)
