"""Memory a model keeps for MemoizationPolicy and AugmentedMemoizationPolicy of the same
`max_history` (they learn the same histories), against MemoizationPolicy alone: an ensemble
trained on 2,000 random stories of 10 user turns (20 intents, 20 actions), written, then
loaded under `tracemalloc` (the Python memory kept and the peak), and the CPU time of the
load (median of 5, without `tracemalloc`), with the code on PYTHONPATH (run once with the
base's, once with the head's):

    PYTHONPATH=<checkout> python bench/memoization_twins.py
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from memoization_histories import random_stories  # (bench/, this script's folder)

from server.dialogue.domain import Domain
from server.dialogue.policies.ensemble import PolicyEnsemble
from server.dialogue.story_steps import TrainingStory


def _measure(config: list[dict[str, Any]], domain: Domain, stories: list[TrainingStory]) -> str:
    ensemble = PolicyEnsemble.train(config, stories, domain)
    with tempfile.TemporaryDirectory() as written:
        ensemble.persist(Path(written))
        del ensemble
        gc.collect()
        tracemalloc.start()
        loaded = PolicyEnsemble.load(Path(written), domain)
        kept, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del loaded
        times = []
        for _ in range(5):
            gc.collect()
            start = time.process_time()
            loaded = PolicyEnsemble.load(Path(written), domain)
            times.append(time.process_time() - start)
            del loaded
    return (
        f"kept {kept / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB, load "
        f"{statistics.median(times) * 1000:.0f} ms CPU"
    )


def main() -> None:
    domain, stories = random_stories()
    one = [{"name": "MemoizationPolicy", "max_history": 5}]
    both = [*one, {"name": "AugmentedMemoizationPolicy", "max_history": 5}]
    print("MemoizationPolicy alone:", _measure(one, domain, stories))
    print("with AugmentedMemoizationPolicy:", _measure(both, domain, stories))


if __name__ == "__main__":
    main()
