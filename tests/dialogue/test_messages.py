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


def test_collected_elements_are_texts_with_buttons_and_no_null_buttons_key() -> None:
    """Rasa's collecting channel (REST, callback) sends each element as "title : subtitle" with
    its buttons; an element whose buttons are null has no `buttons` key (Rasa's message drops
    None values), where ours sent `"buttons": null`."""
    elements = [
        {"title": "Hotel", "subtitle": "3 stars", "buttons": [{"title": "Book"}]},
        {"title": "Inn", "subtitle": "cheap", "buttons": None},
        {"title": "Flat"},
    ]
    assert split_message({"elements": elements}, collecting=True) == [
        {"text": "Hotel : 3 stars", "buttons": [{"title": "Book"}]},
        {"text": "Inn : cheap"},
        {"text": "Flat : ", "buttons": []},
    ]
