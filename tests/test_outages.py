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
    outages.reached(DB, outages.opened)
    outages.reached(DB, outages.opened)  # once is enough
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 4, lines
    assert lines[0].startswith(f"{DB} is unreachable: [Errno 111] Connection refused. ")
    assert lines[1].startswith(f"{DB} still unreachable after 60 s: 600 more requests answered ")
    assert lines[2].startswith(f"{DB} still unreachable after 120 s: 600 more requests answered ")
    assert lines[3] == f"{DB} reachable again after 149.0 s, 1500 requests refused meanwhile"


def test_a_dependency_that_was_never_away_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    outages = Outages()
    outages.reached(DB, outages.opened)
    assert not caplog.records


def test_an_answer_to_a_request_sent_before_the_outage_does_not_end_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection cut under load: a request whose answer was already on its way succeeds
    after another one's failure began the outage. Before, that success ended the outage
    "after 0.0 s" and the next refusal began a new one (seen in the outage log test on a
    loaded machine: four lines for one cut)."""
    now = [0.0]
    outages = Outages(window=60.0, clock=lambda: now[0])
    in_flight = outages.opened  # sent while PostgreSQL was answering
    outages.refused(DB, "connection was closed in the middle of operation", "503")
    now[0] = 0.01
    outages.reached(DB, in_flight)  # its answer arrives after the cut was seen
    outages.refused(DB, "[Errno 111] Connection refused", "503")
    now[0] = 1.5
    outages.reached(DB, outages.opened)  # sent after the outage began: it is over
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{DB} is unreachable: connection was closed")
    assert lines[1] == f"{DB} reachable again after 1.5 s, 2 requests refused meanwhile"


def test_a_second_outage_is_ended_by_requests_sent_after_it_began(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outages = Outages()
    outages.refused(DB, "refused", "503")
    outages.reached(DB, outages.opened)
    before_second = outages.opened
    outages.refused(DB, "refused", "503")
    outages.reached(DB, before_second)  # sent before the second outage began
    assert outages.any_away()
    outages.reached(DB, outages.opened)
    assert not outages.any_away()
    assert sum("reachable again" in record.getMessage() for record in caplog.records) == 2


def test_a_reason_that_ends_its_own_sentence_gets_no_second_full_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """redis-py's words end in a full stop ("... Connection refused."): before, the line read
    "Connection refused.. Requests that need it ...", and the later count "...refused."."""
    now = [0.0]
    outages = Outages(window=60.0, clock=lambda: now[0])
    reason = "Error 111 connecting to 127.0.0.1:6379. Connection refused."
    outages.refused(DB, reason, "503 ServiceUnavailable")
    now[0] = 61.0
    outages.refused(DB, reason, "503 ServiceUnavailable")
    lines = [record.getMessage() for record in caplog.records]
    assert ".." not in lines[0] and lines[0].startswith(
        f"{DB} is unreachable: Error 111 connecting to 127.0.0.1:6379. Connection refused. "
    ), lines
    assert lines[1].endswith(
        "last reason: Error 111 connecting to 127.0.0.1:6379. Connection refused"
    ), lines


def test_counts_of_one_read_in_the_singular(caplog: pytest.LogCaptureFixture) -> None:
    """Before: "1 more requests answered ...", and a burst of one repeat counted with %d."""
    now = [0.0]
    outages = Outages(window=60.0, clock=lambda: now[0])
    outages.refused(DB, "refused", "503")
    now[0] = 61.0
    outages.refused(DB, "refused", "503")
    outages.reached(DB, outages.opened)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[1] == (
        f"{DB} still unreachable after 61 s: 1 more request answered 503 (2 in all); "
        "last reason: refused"
    )
    assert lines[2] == f"{DB} reachable again after 61.0 s, 2 requests refused meanwhile"
