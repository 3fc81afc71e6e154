"""How a bot message is split into the parts channels send one by one."""

from __future__ import annotations

from server.dialogue.messages import split_message


def test_text_is_stripped_and_split_on_blank_lines_then_the_other_parts_follow() -> None:
    assert split_message({"text": "  Hey! How are you?\n"}) == [{"text": "Hey! How are you?"}]
    assert split_message({"text": "\none\n\ntwo \n\n three\n", "image": "i.png"}) == [
        {"text": "one"},
        {"text": "two "},
        {"text": " three"},
        {"image": "i.png"},
    ]
    assert split_message({"text": "a\n\nb", "buttons": [{"title": "x"}]}) == [
        {"text": "a\n\nb", "buttons": [{"title": "x"}]}
    ]
    assert split_message({"text": "   ", "custom": {"k": 1}}) == [
        {"text": ""},
        {"custom": {"k": 1}},
    ]
