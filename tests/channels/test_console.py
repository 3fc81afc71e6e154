"""`botserver shell`'s printing of bot messages, and the picking of buttons by number."""

from __future__ import annotations

import io

from server.channels.console import choose, format_message


def test_buttons_that_are_not_objects_are_printed_and_picked_by_number() -> None:
    # An NLG or action server may send bare strings as buttons (botserver says such a
    # message, docs/differences-from-rasa.md). Before, the shell stopped on an AttributeError
    # ('str' object has no attribute 'get').
    out = io.StringIO()
    message = {"text": "Sure?", "buttons": ["yes", {"title": "No", "payload": "/deny"}]}
    buttons = format_message(message, out)
    assert out.getvalue() == "Sure?\n  1: yes (yes)\n  2: No (/deny)\n"
    assert choose("1", buttons) == "yes"
    assert choose("2", buttons) == "/deny"
