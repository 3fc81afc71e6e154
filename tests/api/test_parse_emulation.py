"""Parse results in the format of wit.ai, LUIS and Dialogflow (`?emulation_mode=`)."""

from __future__ import annotations

from typing import Any

from server.api.parse_emulation import as_dialogflow, as_luis, as_wit

PARSED = {
    "text": "fly from Berlin to NYC",
    "intent": {"name": "book", "confidence": 0.9},
    "intent_ranking": [
        {"name": "book", "confidence": 0.9},
        {"name": "greet", "confidence": 0.1},
    ],
    "entities": [
        {
            "entity": "city",
            "role": "from",
            "value": "Berlin",
            "start": 9,
            "end": 15,
            "confidence_entity": 0.8,
            "extractor": "CRFEntityExtractor",
        },
        {
            "entity": "city",
            "role": "to",
            "value": "New York",
            "start": 19,
            "end": 22,
            "extractor": "EntitySynonymMapper",
        },
    ],
}


def test_wit_groups_entities_by_name_and_role_and_keeps_the_typed_text() -> None:
    wit = as_wit(PARSED)
    assert wit["intents"] == [{"name": "book", "confidence": 0.9}]
    assert wit["entities"]["city:to"] == [
        {
            "confidence": 1,
            "name": "city",
            "value": "New York",
            "body": "NYC",
            "start": 19,
            "end": 22,
            "role": "to",
            "entities": [],
        }
    ]
    assert wit["entities"]["city:from"][0]["confidence"] == 0.8


def test_luis_keys_entities_by_role_with_their_instances() -> None:
    prediction = as_luis(PARSED)["prediction"]
    assert prediction["topIntent"] == "book"
    assert prediction["intents"] == {"book": {"score": 0.9}, "greet": {"score": 0.1}}
    assert prediction["entities"]["from"] == ["Berlin"]
    assert prediction["entities"]["$instance"]["to"] == [
        {
            "role": "to",
            "type": "city",
            "text": "New York",
            "startIndex": 19,
            "length": 3,
            "score": None,
            "modelType": "EntitySynonymMapper",
        }
    ]


def test_dialogflow_lists_values_per_entity() -> None:
    result = as_dialogflow(PARSED)["queryResult"]
    assert result["parameters"] == {"city": ["Berlin", "New York"]}
    assert result["intent"] == {"name": "book", "displayName": "book"}


def test_a_message_without_an_intent_emulates_without_one() -> None:
    bare: dict[str, Any] = {"text": "", "intent": None, "entities": []}
    assert as_luis(bare)["prediction"]["topIntent"] is None
    assert as_luis(bare)["prediction"]["intents"] == {}
    assert as_wit(bare)["intents"] == []
    assert as_dialogflow(bare)["queryResult"]["intent"] == {"name": None, "displayName": None}
