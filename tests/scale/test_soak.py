"""A short soak of one `botserver run` process (the long form: bench/soak.py): over a couple
of thousand turns and hundreds of conversations, its open file descriptors and database
connections stay flat after the warm-up, and its memory grows by no more than its caches
hold."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bench.soak import print_report, soak_run

pytestmark = [pytest.mark.slow, pytest.mark.service, pytest.mark.timeout(240)]

TURNS = 1_600
EVERY = 200
# What the hot-session caches take after the warm-up's 400 turns (about 2,000 events of the
# default 10,000 in): 10-13 MB measured over 2,000 turns. A leak of 20 KiB a turn fails.
RSS_GROWTH_MB = 24


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_a_long_run_keeps_descriptors_connections_and_memory_flat(
    store: str, tmp_path: Path, moodbot_copy: Callable[[str], Path]
) -> None:
    result = await soak_run(moodbot_copy("soak"), store, TURNS, EVERY, 8, tmp_path)
    print_report(result)
    assert result["answered"] == TURNS, result["failed"]
    assert result["conversations"] > 200
    growth = result["growth_after_warm_up"]
    # A descriptor or connection kept per turn, or per conversation, would add hundreds.
    assert growth["fds"] <= 2, result["samples"]
    if store == "postgres":
        assert growth["db_connections"] <= 1, result["samples"]
    assert growth["rss_mb"] <= RSS_GROWTH_MB, result["samples"]
