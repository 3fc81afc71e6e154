"""When a server process's garbage collector runs: hardly ever while it starts, once its
startup model is loaded, and then, with what is left exempt, less often than by default."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

from server.errors import InvalidConfig

# A server's young objects mostly die within the request: collect them less often, and walk
# the whole heap (about 0.5 µs per live object here) ten times less often than by default.
GC_THRESHOLDS = (5000, 20, 100)
GC_THRESHOLDS_ENV = "BOTSERVER_GC_THRESHOLDS"
_MOST = 2**31 - 1


def gc_thresholds() -> tuple[int, int, int]:
    """GC_THRESHOLDS_ENV's value: three whole numbers, 0 or more, as `gc.set_threshold`
    takes them (GC_THRESHOLDS when unset or empty)."""
    raw = os.environ.get(GC_THRESHOLDS_ENV, "").strip()
    if not raw:
        return GC_THRESHOLDS
    try:
        values = [int(part) for part in raw.split(",")]
    except ValueError:
        values = []
    # (gc.set_threshold takes C ints: a larger one failed the start once the model loaded)
    if len(values) != 3 or min(values) < 0 or max(values) > _MOST:
        default = ",".join(map(str, GC_THRESHOLDS))
        raise InvalidConfig(
            f"{GC_THRESHOLDS_ENV} must be three whole numbers, 0 to {_MOST}, separated by "
            f"commas (Python's gc thresholds; default {default}), not {raw!r}"
        )
    return values[0], values[1], values[2]


# While a server process starts: no collection before this many more container objects
# than it has freed. A start makes some 210,000 (moodbot), which all live on; one that waits
# (a slow model download, a remote storage that does not answer, up to their timeouts) while
# something makes garbage with cycles (a broker reconnecting in the background: some 10
# objects a second) still has it collected, at most this many objects later.
START_COLLECTION_OBJECTS = 500_000


def collect_rarely_while_starting() -> None:
    """A server process's collector from its first import to `freeze_after_load`: the
    collections of the imports and the model load (340 with Python's thresholds) skipped,
    and a bound on what a start that waits long leaves uncollected. A collector the process
    has disabled stays so."""
    gc.set_threshold(START_COLLECTION_OBJECTS)


@contextmanager
def collected_once_at_start() -> Iterator[None]:
    """No collection while a server process starts (`collect_rarely_while_starting`), one
    once its startup model is loaded (`freeze_after_load`), and the collector as it was for
    a caller that goes on after the server. The imports and the model make some 150,000
    objects that live as long as the process, and free almost none (20 objects here): with
    Python's thresholds (700, 10, 10) the collector walked them in 340 collections, three of
    them whole, for 0.2 s of a 1.1 s start; with the server's, 75 collections and 0.15 s."""
    was_enabled = gc.isenabled()
    previous = gc.get_threshold()
    collect_rarely_while_starting()
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        if was_enabled:
            gc.enable()
        else:
            gc.disable()


def freeze_after_load() -> None:
    """Imports and the model live as long as the process: out of the collector's sight, a
    full collection no longer walks them (110 ms per pass here, every few seconds under
    load)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*gc_thresholds())
    gc.enable()
