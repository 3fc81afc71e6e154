"""Which variation of a domain response is said, at random among the first of (as Rasa):
the output channel's own whose conditions the slots meet, the channel's own without a
condition, those for no channel whose conditions the slots meet, those for no channel."""

from __future__ import annotations

import random
from typing import Any

import pytest

from server.dialogue.domain import Domain
from server.dialogue.nlg import bot_data, render_response, uttered
from tests.dialogue.policy_fixtures import bot
from tests.shared_data import BOTS

SHARED_BOTS = sorted(d.name for d in BOTS.iterdir() if (d / "config.yml").is_file())

RESPONSES: dict[str, list[dict[str, Any]]] = {
    "utter_plain": [{"text": "one"}, {"text": "two"}, {"text": "three"}],
    "utter_channels": [
        {"text": "anywhere"},
        {"text": "on slack", "channel": "slack"},
        {"text": "also on slack", "channel": "slack"},
        {"text": "on telegram", "channel": "telegram"},
    ],
    "utter_only_slack": [{"text": "slack a"}, {"text": "slack b"}],
    "utter_conditions": [
        {"text": "no condition"},
        {"text": "gold", "condition": [{"type": "slot", "name": "tier", "value": "gold"}]},
        {
            "text": "gold on slack",
            "channel": "slack",
            "condition": [{"type": "slot", "name": "tier", "value": "gold"}],
        },
        {
            "text": "gold and happy",
            "condition": [
                {"type": "slot", "name": "tier", "value": "gold"},
                {"type": "slot", "name": "happy", "value": True},
            ],
        },
        {"text": "silver", "condition": [{"type": "slot", "name": "tier", "value": "silver"}]},
    ],
    "utter_channel_before_condition": [
        {"text": "gold", "condition": [{"type": "slot", "name": "tier", "value": "gold"}]},
        {"text": "hi on slack", "channel": "slack"},
        {"text": "hi"},
    ],
    "utter_only_conditions": [
        {"text": "gold only", "condition": [{"type": "slot", "name": "tier", "value": "gold"}]}
    ],
}
RESPONSES["utter_only_slack"] = [{**v, "channel": "slack"} for v in RESPONSES["utter_only_slack"]]


@pytest.fixture
def domain() -> Domain:
    return Domain.from_dict(
        {
            "slots": {
                "tier": {"type": "text", "mappings": [{"type": "custom"}]},
                "happy": {"type": "bool", "mappings": [{"type": "custom"}]},
            },
            "responses": RESPONSES,
        }
    )


def texts(domain: Domain, name: str, slots: dict[str, Any], channel: str | None) -> set[Any]:
    said = set()
    for _ in range(200):
        message = render_response(domain, name, slots, channel)
        said.add(None if message is None else message["text"])
    return said


def test_the_channels_own_variations_then_those_for_no_channel(domain: Domain) -> None:
    assert texts(domain, "utter_channels", {}, "slack") == {"on slack", "also on slack"}
    assert texts(domain, "utter_channels", {}, "telegram") == {"on telegram"}
    assert texts(domain, "utter_channels", {}, "rest") == {"anywhere"}
    assert texts(domain, "utter_channels", {}, None) == {"anywhere"}
    # Only other channels' variations: any of them.
    assert texts(domain, "utter_only_slack", {}, "rest") == {"slack a", "slack b"}
    assert texts(domain, "utter_plain", {}, "slack") == {"one", "two", "three"}


def test_variations_whose_conditions_the_slots_meet_come_first(domain: Domain) -> None:
    # The same domain, asked with slots that change between calls.
    assert texts(domain, "utter_conditions", {"tier": None}, None) == {"no condition"}
    assert texts(domain, "utter_conditions", {"tier": "gold"}, None) == {"gold"}
    assert texts(domain, "utter_conditions", {"tier": "gold"}, "slack") == {"gold on slack"}
    assert texts(domain, "utter_conditions", {"tier": "gold", "happy": True}, "rest") == {
        "gold",
        "gold and happy",
    }
    assert texts(domain, "utter_conditions", {"tier": "silver"}, "slack") == {"silver"}
    assert texts(domain, "utter_conditions", {"tier": "bronze"}, "slack") == {"no condition"}
    assert texts(domain, "utter_only_conditions", {"tier": "gold"}, None) == {"gold only"}
    assert texts(domain, "utter_only_conditions", {"tier": "silver"}, None) == {None}


def test_the_channels_own_variation_comes_before_a_condition_for_any_channel(
    domain: Domain,
) -> None:
    assert texts(domain, "utter_channel_before_condition", {"tier": "gold"}, "slack") == {
        "hi on slack"
    }
    assert texts(domain, "utter_channel_before_condition", {"tier": "gold"}, "rest") == {"gold"}
    assert texts(domain, "utter_channel_before_condition", {"tier": None}, "rest") == {"hi"}


def test_a_text_condition_is_met_whatever_the_case(domain: Domain) -> None:
    assert texts(domain, "utter_conditions", {"tier": "Gold"}, None) == {"gold"}
    assert texts(domain, "utter_conditions", {"tier": "SILVER"}, "slack") == {"silver"}
    # Other types compare as they are.
    assert texts(domain, "utter_conditions", {"tier": "gold", "happy": "true"}, None) == {"gold"}


def test_a_seeded_random_picks_what_filtering_every_call_would(domain: Domain) -> None:
    def filtered(variations: list[dict[str, Any]], slots: dict[str, Any], channel: str | None):
        def met(v: dict[str, Any]) -> bool:
            return all(slots.get(c.get("name")) == c.get("value") for c in v["condition"])

        conditional = [v for v in variations if v.get("condition") and met(v)]
        default = [v for v in variations if not v.get("condition")]
        pools = [
            [v for v in conditional if channel and v.get("channel") == channel],
            [v for v in default if channel and v.get("channel") == channel],
            [v for v in conditional if not v.get("channel")],
            [v for v in default if not v.get("channel")],
            default,
        ]
        pool = next((p for p in pools if p), None)
        return None if pool is None else random.choice(pool)

    for name, variations in RESPONSES.items():
        for slots in ({}, {"tier": "gold"}, {"tier": "gold", "happy": True}, {"tier": "silver"}):
            for channel in (None, "", "rest", "slack", "telegram"):
                random.seed(7)
                expected = [filtered(variations, slots, channel) for _ in range(20)]
                random.seed(7)
                got = [render_response(domain, name, slots, channel) for _ in range(20)]
                assert [None if e is None else e["text"] for e in expected] == [
                    None if g is None else g["text"] for g in got
                ], (name, slots, channel)


def test_a_response_replaced_on_the_domain_is_said_as_replaced(domain: Domain) -> None:
    assert texts(domain, "utter_plain", {}, None) == {"one", "two", "three"}
    domain.responses["utter_plain"] = [{"text": "new"}]
    assert texts(domain, "utter_plain", {}, None) == {"new"}


def test_a_message_is_the_variation_filled_in_and_never_the_domains_own() -> None:
    domain = Domain.from_dict(
        {
            "slots": {"name": {"type": "text", "mappings": [{"type": "custom"}]}},
            "responses": {
                "utter_literal": [{"text": "Hi!", "id": "x1", "response_ids": ["a"], "n": 3}],
                "utter_filled": [
                    {
                        "text": "Hi {name}, {missing} {day}",
                        "buttons": [{"title": "{name}", "payload": "/greet"}],
                        "custom": {"deep": ["{day}"]},
                    }
                ],
            },
        }
    )
    first = render_response(domain, "utter_literal", {"name": None})
    assert first == {"text": "Hi!", "id": "x1", "n": 3}
    assert first is not None
    first["text"] = "changed"
    assert render_response(domain, "utter_literal", {}) == {"text": "Hi!", "id": "x1", "n": 3}

    filled = render_response(domain, "utter_filled", {"name": "Ann"}, day="Monday")
    assert filled == {
        "text": "Hi Ann, {missing} Monday",
        "buttons": [{"title": "Ann", "payload": "/greet"}],
        "custom": {"deep": ["Monday"]},
    }
    assert filled is not None
    filled["buttons"][0]["title"] = "changed"
    again = render_response(domain, "utter_filled", {"name": None})
    assert again is not None
    assert again["buttons"] == [{"title": "None", "payload": "/greet"}]
    assert domain.responses["utter_filled"][0]["buttons"][0]["title"] == "{name}"


def test_buttons_without_placeholders_are_said_as_written_in_new_lists_and_objects() -> None:
    buttons = [{"title": "great", "payload": "/mood_great"}, {"title": "1e5", "payload": 2.5}]
    domain = Domain.from_dict(
        {
            "responses": {
                "utter_buttons": [
                    {"text": "How are you?", "buttons": buttons, "id": "b1", "custom": None}
                ],
                # orjson cannot read these back the same: said through the general path.
                "utter_tuple": [{"text": "t", "custom": {"pair": ("a", "b")}}],
                "utter_big": [{"text": "b", "custom": {"n": 2**70, "keys": {1: "one"}}}],
            }
        }
    )
    said = render_response(domain, "utter_buttons", {})
    assert said == {"text": "How are you?", "buttons": buttons, "id": "b1", "custom": None}
    assert said is not None
    said["buttons"][0]["title"] = "changed"
    said["buttons"].append({})
    assert render_response(domain, "utter_buttons", {}) == {
        "text": "How are you?",
        "buttons": buttons,
        "id": "b1",
        "custom": None,
    }
    assert domain.responses["utter_buttons"][0]["buttons"][0]["title"] == "great"
    assert render_response(domain, "utter_tuple", {}) == {
        "text": "t",
        "custom": {"pair": ("a", "b")},
    }
    assert render_response(domain, "utter_big", {}) == {
        "text": "b",
        "custom": {"n": 2**70, "keys": {1: "one"}},
    }


def test_double_braces_are_said_as_one_as_in_rasas_button_payloads() -> None:
    # Before: a button written as Rasa's docs show (`/inform{{"insurance":"motor"}}`) sent
    # its payload with the doubled braces, which no client turns back into the intent.
    domain = Domain.from_dict(
        {
            "slots": {"name": {"type": "text", "mappings": [{"type": "custom"}]}},
            "responses": {
                "utter_insurance": [
                    {
                        "text": "Motor or home, {name}? Say {{motor}} }}or{{ home",
                        "buttons": [
                            {"title": "Motor", "payload": '/inform{{"insurance":"motor"}}'},
                            {"title": "{name}", "payload": '/inform{{"who":"{name}"}}'},
                        ],
                    }
                ],
            },
        }
    )
    said = render_response(domain, "utter_insurance", {"name": "Ann"})
    assert said == {
        "text": "Motor or home, Ann? Say {motor} }or{ home",
        "buttons": [
            {"title": "Motor", "payload": '/inform{"insurance":"motor"}'},
            {"title": "Ann", "payload": '/inform{"who":"Ann"}'},
        ],
    }


def _said_afresh(
    domain: Domain, name: str, slots: dict[str, Any], channel: str | None, **kwargs: Any
) -> tuple[Any, ...] | None:
    """What a bot event uttering `name` held before its parts were split once: the rendered
    message split by `bot_data`, with the response's name in the metadata."""
    message = render_response(domain, name, slots, channel, **kwargs)
    if message is None:
        return None
    text, data, metadata = bot_data(message)
    return text, data, {**metadata, "utter_action": name}


SPLIT_ONCE: dict[str, list[dict[str, Any]]] = {
    "utter_literal": [{"text": "Hi!", "id": "x1", "response_ids": ["a"], "n": 3}],
    "utter_image": [{"text": "Look:", "image": "https://example.com/a.png"}],
    "utter_image_and_attachment": [{"image": "a.png", "attachment": "b.pdf"}],
    "utter_buttons": [
        {"text": "How are you?", "buttons": [{"title": "great", "payload": "/mood_great"}]}
    ],
    "utter_custom_extra": [{"custom": {"deep": [1, 2.5, None]}, "extra": {"k": ["v"]}}],
    "utter_filled": [{"text": "Hi {name}", "buttons": [{"title": "{name}", "payload": "/x"}]}],
    "utter_tuple": [{"text": "t", "custom": {"pair": ("a", "b")}}],
    "utter_big": [{"text": "b", "custom": {"n": 2**70}}],
    "utter_channel": [{"text": "any"}, {"text": "on slack {name}", "channel": "slack"}],
}


@pytest.mark.parametrize("name", sorted(SPLIT_ONCE))
@pytest.mark.parametrize("channel", [None, "slack"])
def test_a_bot_event_holds_the_rendered_message_split_in_parts_of_its_own(
    name: str, channel: str | None
) -> None:
    domain = Domain.from_dict(
        {
            "slots": {"name": {"type": "text", "mappings": [{"type": "custom"}]}},
            "responses": SPLIT_ONCE,
        }
    )
    slots = {"name": "Ann"}
    first = uttered(domain, name, slots, channel, day="Monday")
    assert first == _said_afresh(domain, name, slots, channel, day="Monday")
    assert first is not None
    # Each utterance's dicts and lists are its own: changing one changes no later one.
    text, data, metadata = first
    for value in (*data.values(), *metadata.values()):
        if isinstance(value, (list, dict)):
            value.clear()
    data.clear()
    metadata.clear()
    assert uttered(domain, name, slots, channel, day="Monday") == _said_afresh(
        domain, name, slots, channel, day="Monday"
    )
    assert domain.responses[name] == SPLIT_ONCE[name]
    assert uttered(domain, "utter_missing", slots, channel) is None


@pytest.mark.parametrize("bot_name", SHARED_BOTS)
def test_every_response_of_the_shared_bots_is_uttered_as_rendered(bot_name: str) -> None:
    domain = bot(bot_name)[0]
    slots = dict(domain.kept_slot_defaults)
    for name in domain.responses:
        for channel in (None, "slack", "collector"):
            random.seed(7)  # the same variation of several
            said = uttered(domain, name, slots, channel)
            random.seed(7)
            assert said == _said_afresh(domain, name, slots, channel), (bot_name, name, channel)


@pytest.mark.parametrize("empty", ["", {}, []])
def test_an_empty_attachment_is_the_image_as_a_missing_one_is(empty: Any) -> None:
    domain = Domain.from_dict(
        {"responses": {"utter_look": [{"text": "Look:", "image": "a.png", "attachment": empty}]}}
    )
    said = uttered(domain, "utter_look", {})
    assert said is not None
    # As in Rasa: the bot event's (and so every channel's) attachment is the image. Before,
    # the empty attachment stayed, and a channel reading only `attachment` showed nothing.
    assert said[1]["attachment"] == "a.png"
    assert said[1]["image"] == "a.png"


def test_a_placeholder_names_a_slot_whose_name_holds_spaces() -> None:
    domain = Domain.from_dict(
        {
            "slots": {"first name": {"type": "text", "mappings": [{"type": "custom"}]}},
            "responses": {"utter_hi": [{"text": "Hi {first name}! {no such} {{first name}}"}]},
        }
    )
    message = render_response(domain, "utter_hi", {"first name": "Ann"})
    # As in Rasa, a name is anything but braces and a line break. Before, `{first name}` was
    # said as written.
    assert message == {"text": "Hi Ann! {no such} {first name}"}


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # Rasa says the dict of every slot here ("{'name': 'Ann', 'pin': '1234'}").
        ("Your details: {}", "Your details: {}"),
        # Rasa's response fails on a lone brace (Python's format error): nothing is said.
        ("Hi {name", "Hi {name"),
        ("Hi {name}, total}", "Hi Ann, total}"),
        # Rasa says this one as written, braces doubled and {name} unfilled.
        ("{{name}} is {name}", "{name} is Ann"),
    ],
)
def test_braces_that_name_no_slot_are_said_as_written(text: str, said: str) -> None:
    domain = Domain.from_dict(
        {
            "slots": {
                "name": {"type": "text", "mappings": [{"type": "custom"}]},
                "pin": {"type": "text", "mappings": [{"type": "custom"}]},
            },
            "responses": {"utter_hi": [{"text": text}]},
        }
    )
    message = render_response(domain, "utter_hi", {"name": "Ann", "pin": "1234"})
    assert message == {"text": said}


@pytest.mark.parametrize("kind", ["slot", None, "entity"])
def test_every_condition_reads_the_slot_it_names_whatever_its_type(kind: str | None) -> None:
    condition: dict[str, Any] = {"name": "city", "value": "Berlin"}
    if kind is not None:
        condition["type"] = kind
    domain = Domain.from_dict(
        {
            "slots": {"city": {"type": "text", "mappings": [{"type": "custom"}]}},
            "responses": {
                "utter_hi": [{"text": "Hi Berlin", "condition": [condition]}, {"text": "Hi"}]
            },
        }
    )
    # As Rasa, which reads `type` nowhere. Before, a condition of another type (`entity`)
    # was met whatever the slots held, so "Hi Berlin" was said to Paris.
    assert render_response(domain, "utter_hi", {"city": "Paris"}) == {"text": "Hi"}
    assert render_response(domain, "utter_hi", {"city": "Berlin"}) == {
        "text": "Hi Berlin",
        "condition": [condition],
    }


@pytest.mark.parametrize("name", [["city"], {"city": 1}, 5])
def test_a_condition_naming_no_slot_is_not_met(name: Any) -> None:
    # A model's domain trained before training refused it (Rasa's schema does). Before, a
    # list or a mapping made every turn uttering the response fail with a TypeError.
    condition = {"name": name, "value": "Berlin"}
    domain = Domain.from_dict(
        {
            "slots": {"city": {"type": "text", "mappings": [{"type": "custom"}]}},
            "responses": {
                "utter_hi": [{"text": "Hi Berlin", "condition": [condition]}, {"text": "Hi"}]
            },
        }
    )
    assert render_response(domain, "utter_hi", {"city": "Berlin"}) == {"text": "Hi"}


def test_a_variation_with_an_empty_condition_list_is_one_without_a_condition() -> None:
    domain = Domain.from_dict(
        {"responses": {"utter_hi": [{"text": "listed", "condition": []}, {"text": "plain"}]}}
    )
    # Unlike Rasa 3.6, which never says it (neither conditional nor unconditional there).
    said = {render_response(domain, "utter_hi", {})["text"] for _ in range(200)}  # type: ignore[index]
    assert said == {"listed", "plain"}


def test_a_bot_event_keeps_the_chosen_variations_id_condition_and_channel_in_its_metadata() -> None:
    condition = [{"type": "slot", "name": "tier", "value": "gold"}]
    domain = Domain.from_dict(
        {
            "slots": {"tier": {"type": "text", "mappings": [{"type": "custom"}]}},
            "responses": {
                "utter_hi": [
                    {"text": "Hi {tier}", "id": "hi_gold", "condition": condition},
                    {"text": "Hi", "channel": "slack", "id": "hi_slack"},
                    {"text": "Hi"},
                ]
            },
        }
    )
    # As Rasa 3.6, whose bot event's metadata holds every key of the chosen variation
    # that is no part of the message. Before, they were dropped.
    gold = uttered(domain, "utter_hi", {"tier": "gold"})
    assert gold is not None
    assert gold[0] == "Hi gold"
    assert gold[2] == {"utter_action": "utter_hi", "id": "hi_gold", "condition": condition}
    # Named after the variation's own keys, as Rasa adds it: the bot event's JSON is the
    # same, byte for byte. Before, `utter_action` came first.
    assert list(gold[2]) == ["id", "condition", "utter_action"]
    slack = uttered(domain, "utter_hi", {"tier": None}, "slack")
    assert slack is not None
    assert slack[2] == {"utter_action": "utter_hi", "channel": "slack", "id": "hi_slack"}
    assert list(slack[2]) == ["channel", "id", "utter_action"]
    plain = uttered(domain, "utter_hi", {"tier": None})
    assert plain is not None and plain[2] == {"utter_action": "utter_hi"}


METADATA: dict[str, Any] = {
    "rephrase": True,
    "rephrase_prompt": "Rephrase {{current_input}} for {name}",
    "tags": ["{name}", {"deep": "{{x}}"}],
}


@pytest.mark.parametrize(
    "variation",
    [
        {"text": "Hi {name}", "metadata": METADATA, "lang": "{name}"},
        # Nothing to fill in the message: said from the parts split once.
        {"text": "Hi", "metadata": METADATA, "lang": "{name}"},
        {"text": "Hi", "lang": "{{name}}"},
    ],
)
def test_a_variations_metadata_reaches_the_bot_event_as_written(variation: dict[str, Any]) -> None:
    domain = Domain.from_dict(
        {
            "slots": {"name": {"type": "text", "mappings": [{"type": "custom"}]}},
            "responses": {"utter_hi": [variation]},
        }
    )
    said = uttered(domain, "utter_hi", {"name": "Ann"})
    assert said is not None
    # As in Rasa, which fills in only a message's parts. Before, `{{current_input}}` of a
    # prompt template reached the bot event as `{current_input}`, and `{name}` as `Ann`.
    expected = {k: v for k, v in variation.items() if k != "text"}
    assert said[2] == {"utter_action": "utter_hi", **expected}
    assert said[0] == variation["text"].replace("{name}", "Ann")
    # The bot event's own copy: changing it changes neither the domain nor a later event.
    if "metadata" in said[2]:
        said[2]["metadata"]["tags"][1]["deep"] = "changed"
        assert METADATA["tags"][1] == {"deep": "{{x}}"}
        again = uttered(domain, "utter_hi", {"name": "Ann"})
        assert again is not None and again[2]["metadata"] == METADATA
