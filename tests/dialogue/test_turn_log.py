"""The debug lines of a turn: a huge slot or entity value costs a short line, not its repr."""

from __future__ import annotations

import logging

import pytest

from server.dialogue import turn_log
from server.trackers.events import SlotSet


class Counted:
    """A value that counts how often it is shown."""

    shown = 0

    def __repr__(self) -> str:
        Counted.shown += 1
        return "x"


def test_a_huge_slot_value_is_cut_without_showing_all_of_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    Counted.shown = 0
    huge = [[Counted() for _ in range(1000)] for _ in range(100)]  # 100,000 values
    with caplog.at_level(logging.DEBUG, logger=turn_log.logger.name):
        turn_log.log_action("ana", "action_store", "RulePolicy", 1.0, [SlotSet("big", huge)])

    (line,) = caplog.messages
    assert "slot big=[[x, x" in line
    assert len(line) < 200
    # Before: every one of the 100,000 values was shown, then all but 60 characters dropped.
    assert Counted.shown <= 8**3  # eight items a level, three levels


def test_a_long_text_value_is_cut_to_one_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=turn_log.logger.name):
        turn_log.log_action("ana", "action_store", None, None, [SlotSet("note", "a" * 10**6)])

    (line,) = caplog.messages
    assert "slot note='aaa" in line
    assert len(line) < 200


def test_a_long_text_is_shown_from_its_start_as_before(caplog: pytest.LogCaptureFixture) -> None:
    # reprlib shows a long string's start and end: "'The weather in Berlin will ...24 degrees
    # at noon.'", a text the message never held (in a list, cut twice). Before it and now,
    # its first characters, then `...`.
    text = "The weather in Berlin will be sunny tomorrow, with a light breeze and 24 degrees."
    with caplog.at_level(logging.DEBUG, logger=turn_log.logger.name):
        turn_log.log_action("ana", "action_store", None, None, [SlotSet("note", text)])
        turn_log.log_action("ana", "action_store", None, None, [SlotSet("notes", [text, "b"])])

    assert f"slot note={text!r}"[: 10 + 57] + "..." in caplog.messages[0]
    assert f"slot notes={[text, 'b']!r}"[: 11 + 57] + "..." in caplog.messages[1]
