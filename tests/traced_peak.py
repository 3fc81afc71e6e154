"""The peak of Python's allocations during a piece of work (tracemalloc): memory bounded by
counts, not by the host's RSS."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable


def traced_peak(work: Callable[[], object]) -> int:
    """The most memory Python held while `work()` ran, beyond what it held before."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
