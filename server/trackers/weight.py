"""What a cached event weighs against `cache_events`: 1, plus 1 for each full KiB of its
stored JSON, so that a few huge events bound a cache as many ordinary ones do."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TypeVar

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


E = TypeVar("E")


def evict_least_recent(
    entries: OrderedDict[str, E],
    weight: int,
    bound: int,
    weight_of: Callable[[E], int],
    extra_of_entry: Callable[[E], int],
    let_go: Callable[[E], None],
) -> int:
    """Evicts from `entries` (least recently used first) while `weight`, their total, is over
    `bound`, handing each to `let_go`; the last one left stays unless its heavy events alone
    (`extra_of_entry`) weigh more than the bound: a long conversation of ordinary events, a
    few of a KiB among them or not, stays cached alone. Returns the weight left."""
    while weight > bound and entries:
        if len(entries) == 1 and extra_of_entry(next(iter(entries.values()))) <= bound:
            break
        _, evicted = entries.popitem(last=False)
        weight -= weight_of(evicted)
        let_go(evicted)
    return weight
