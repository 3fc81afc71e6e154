"""The outage log's policy, on a clock the test moves: one line when a dependency goes away,
one a window while it stays away, one when it is back."""

from __future__ import annotations

import pytest

from server.outages import Outages

DB = "PostgreSQL at 127.0.0.1:5432 (the tracker store)"


def test_a_long_outage_is_one_line_a_window_and_the_count_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    outages = Outages(window=60.0, clock=lambda: now[0])
    for second in range(150):  # 150 s down, 10 refusals a second
        now[0] = float(second)
        for _ in range(10):
            outages.refused(DB, "[Errno 111] Connection refused", "503 ServiceUnavailable")
    outages.reached(DB)
    outages.reached(DB)  # once is enough
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 4, lines
    assert lines[0].startswith(f"{DB} is unreachable: [Errno 111] Connection refused. ")
    assert lines[1].startswith(f"{DB} still unreachable after 60 s: 600 more requests answered ")
    assert lines[2].startswith(f"{DB} still unreachable after 120 s: 600 more requests answered ")
    assert lines[3] == f"{DB} reachable again after 149.0 s, 1500 requests refused meanwhile"


def test_a_dependency_that_was_never_away_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    outages = Outages()
    outages.reached(DB)
    assert not caplog.records
