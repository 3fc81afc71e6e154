"""Memory and CPU of loading memoized histories at and past their bounds: an old archive's
lookup key of many states, a tree of more nodes than a policy may hold, a chain at the bound.

    PYTHONPATH=<checkout> python bench/memoization_bound.py [--lookup]

(`--lookup`: only an old archive's lookup of 29 keys of 10,000 states, converted.)

Each case's data is made before tracing; the peak is Python's (tracemalloc), the CPU time
is traced (tracemalloc slows allocation)."""

from __future__ import annotations

import sys
import time
import tracemalloc
from collections.abc import Callable
from functools import partial

from server.dialogue.policies.histories import MAX_LOOKUP_STATES, MAX_NODES, Histories
from server.errors import ModelError


def measure(name: str, load: Callable[[], object]) -> None:
    started = time.process_time()
    tracemalloc.start()
    try:
        result = load()  # kept until measured
        outcome = "loaded"
    except ModelError as e:
        result = None
        outcome = f"refused ({str(e)[:50]}...)"
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del result
    cpu = time.process_time() - started
    print(f"{name}: {outcome}; peak {peak / 1e6:.1f} MB, kept {kept / 1e6:.1f} MB, {cpu:.2f} CPU-s")


def key(states: int) -> str:
    return "[" + ",".join(["{}"] * states) + "]"


def main(lookup_only: bool) -> None:
    if lookup_only:
        tail = ",{}" * 9_999
        many = {f'[{{"a":{i}}}{tail}]': "a" for i in range(29)}
        measure("old lookup of 29 keys of 10,000 states", partial(Histories.from_lookup, many))
        return
    hostile = key(1_000_000)
    measure("old key of 1,000,000 states", lambda: Histories.from_lookup({hostile: "a"}))
    legit = key(MAX_LOOKUP_STATES)
    measure(f"old key of {MAX_LOOKUP_STATES:,} states", lambda: Histories.from_lookup({legit: "a"}))
    tail = ",{}" * (MAX_LOOKUP_STATES - 1)
    for keys in (29, 31):  # each its own first state: as many nodes as states
        many = {f'[{{"a":{i}}}{tail}]': "a" for i in range(keys)}
        measure(f"old lookup of {keys} such keys", partial(Histories.from_lookup, many))
    n = MAX_NODES + 1
    wide = {"states": ["{}"], "parents": [0] * n, "node_states": [0] * n, "actions": []}
    measure(f"{n:,} children of the root", lambda: Histories.from_data(wide))
    n = MAX_NODES
    chain = {"states": ["{}"], "parents": list(range(n)), "node_states": [0] * n}
    chain["actions"] = [[n, "a"]]
    measure(f"a chain of {n:,} nodes", lambda: Histories.from_data(chain))


if __name__ == "__main__":
    main("--lookup" in sys.argv[1:])
