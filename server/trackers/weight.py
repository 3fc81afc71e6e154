"""What a cached event weighs against `cache_events`: 1, plus 1 for each full KiB of its
stored JSON, so that a few huge events bound a cache as many ordinary ones do; and which
cached conversation goes first when the caches are over that bound."""

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


# The share of the bound that conversations used again since they were read (or new ones)
# keep before those only read once go: under a cyclic load larger than the cache, this part
# stays and keeps answering, where the least recently used went first and every turn read
# its conversation again.
PROTECTED_SHARE = 0.75


class Probation:
    """The conversations of a cache that were read from the store and not loaded again since,
    in the order they were read, with their weight then: they go first (`evict_least_recent`)
    while the others weigh at most `PROTECTED_SHARE` of the bound. A conversation the
    process starts, or one loaded again while cached, is no longer on probation."""

    def __init__(self) -> None:
        # Their weight when read, by key (a turn tests `key in read_once`, without a call).
        self.read_once: dict[str, int] = {}
        self.weight = 0  # what they weighed when read

    def read(self, key: str, weight: int) -> None:
        """`key` was just read from the store, weighing `weight`."""
        self.used(key)
        self.read_once[key] = weight
        self.weight += weight

    def used(self, key: str) -> None:
        """`key` was loaded again while cached, or left the cache."""
        if self.read_once:
            self.weight -= self.read_once.pop(key, 0)

    def oldest(self) -> str | None:
        """The first read of those on probation, unless it is the only one (the one just read
        stays until another is read after it)."""
        if len(self.read_once) < 2:
            return None
        return next(iter(self.read_once))


def evict_least_recent(
    entries: OrderedDict[str, E],
    weight: int,
    bound: int,
    weight_of: Callable[[E], int],
    extra_of_entry: Callable[[E], int],
    let_go: Callable[[E], None],
    probation: Probation | None = None,
) -> int:
    """Evicts from `entries` (in recency order) while `weight`, their total, is over `bound`,
    handing each to `let_go`: first those on `probation` (read once, oldest first) while the
    others weigh at most `PROTECTED_SHARE` of the bound, else the least recently used. The
    last one left stays unless its heavy events alone (`extra_of_entry`) weigh more than the
    bound: a long conversation of ordinary events, a few of a KiB among them or not, stays
    cached alone. Returns the weight left."""
    while weight > bound and entries:
        if len(entries) == 1 and extra_of_entry(next(iter(entries.values()))) <= bound:
            break
        key = None
        if probation is not None and weight - probation.weight <= bound * PROTECTED_SHARE:
            key = probation.oldest()
        if key is None:
            key = next(iter(entries))
        evicted = entries.pop(key, None)
        if probation is not None:
            probation.used(key)
        if evicted is None:  # (a caller that let one go without telling its probation)
            continue
        weight -= weight_of(evicted)
        let_go(evicted)
    return weight
