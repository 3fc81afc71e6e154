"""A short soak of one `botserver run` process (the long form: bench/soak.py): over 1,000 turns
and more than a hundred conversations, its open file descriptors and database
connections stay flat after the warm-up, and its memory grows by no more than its caches
hold."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bench.soak import print_report, soak_run

pytestmark = [pytest.mark.slow, pytest.mark.service, pytest.mark.timeout(240)]

# Enough to fail on a descriptor kept per 100 turns (6 more after the warm-up). The warm-up
# is 400 turns: SQLite's descriptors settle between the 200th and the 400th.
TURNS = 1_000
EVERY = 100
CLIENTS = 8
WARM_UP = 0.4
# What the hot-session caches take in after the warm-up (about 1,000 events of the default
# 10,000): about 0.9 MB per 100 turns, 5-7 MB over these 600. A leak of 20 KiB a turn (12 MB
# more) fails.
RSS_GROWTH_MB = 15


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_a_long_run_keeps_descriptors_connections_and_memory_flat(
    store: str, tmp_path: Path, moodbot_copy: Callable[[str], Path]
) -> None:
    result = await soak_run(moodbot_copy("soak"), store, TURNS, EVERY, CLIENTS, tmp_path, WARM_UP)
    print_report(result)
    assert result["answered"] == TURNS, result["failed"]
    assert result["conversations"] > 100
    growth = result["growth_after_warm_up"]
    # A descriptor or connection kept per turn, or per conversation, would add hundreds.
    assert growth["fds"] <= 2, result["samples"]
    if store == "postgres":
        assert growth["db_connections"] <= 1, result["samples"]
    else:  # the pool opens one as the turns in flight need it, at any moment: never more
        assert max(s["db_connections"] for s in result["samples"]) <= CLIENTS, result["samples"]
    assert growth["rss_mb"] <= RSS_GROWTH_MB, result["samples"]
