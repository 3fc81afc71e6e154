"""`POST /model/parse?emulation_mode=`: a parse result in the response format of wit.ai,
LUIS (prediction API v3) or Dialogflow (ES v2 `detectIntent`), as Rasa 3.6 answers."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

ParseResult = dict[str, Any]


def _intent(parsed: ParseResult) -> dict[str, Any]:
    intent = parsed.get("intent")
    return intent if isinstance(intent, dict) else {}


def _entities(parsed: ParseResult) -> list[dict[str, Any]]:
    found = parsed.get("entities") or []
    return [e for e in found if isinstance(e, dict) and isinstance(e.get("entity"), str)]


def as_wit(parsed: ParseResult) -> dict[str, Any]:
    """wit.ai's `GET /message`: entities keyed `<name>:<role>`, each with the typed text."""
    text = parsed.get("text") or ""
    entities: dict[str, list[dict[str, Any]]] = {}
    for entity in _entities(parsed):
        name = entity["entity"]
        role = entity.get("role") or name
        start, end = entity.get("start"), entity.get("end")
        entities.setdefault(f"{name}:{role}", []).append(
            {
                "confidence": entity.get("confidence_entity") or 1,
                "name": name,
                "value": entity.get("value"),
                # The words as typed, before a synonym mapper changed the value.
                "body": text[start or 0 : end or 0],
                "start": start,
                "end": end,
                "role": role,
                "entities": [],
            }
        )
    intent = _intent(parsed)
    return {"text": text, "intents": [intent] if intent else [], "entities": entities}


def as_luis(parsed: ParseResult) -> dict[str, Any]:
    """LUIS v3 `predict`: intents scored by name, entities keyed by role (else type)."""
    top = _intent(parsed)
    ranking = parsed.get("intent_ranking") or ([top] if top else [])
    entities: dict[str, Any] = {"$instance": {}}
    for entity in _entities(parsed):
        key = entity.get("role") or entity["entity"]
        start, end = entity.get("start"), entity.get("end")
        entities[key] = [entity.get("value")]
        entities["$instance"][key] = [
            {
                "role": entity.get("role"),
                "type": entity["entity"],
                "text": entity.get("value"),
                "startIndex": start,
                "length": end - start if start is not None and end is not None else None,
                "score": entity.get("confidence_entity", entity.get("confidence")),
                "modelType": entity.get("extractor"),
            }
        ]
    return {
        "query": parsed.get("text"),
        "prediction": {
            "normalizedQuery": parsed.get("text"),
            "topIntent": top.get("name"),
            "intents": {
                i.get("name"): {"score": i.get("confidence")}
                for i in ranking
                if isinstance(i, dict)
            },
            "entities": entities,
        },
    }


def as_dialogflow(parsed: ParseResult) -> dict[str, Any]:
    """Dialogflow ES `detectIntent`: the intent as action, entity values as parameters."""
    intent = _intent(parsed)
    parameters: dict[str, list[Any]] = {}
    for entity in _entities(parsed):
        parameters.setdefault(entity["entity"], []).append(entity.get("value"))
    return {
        "responseId": str(uuid.uuid4()),
        "queryResult": {
            "queryText": parsed.get("text"),
            "action": intent.get("name"),
            "parameters": parameters,
            "fulfillmentText": "",
            "fulfillmentMessages": [],
            "outputContexts": [],
            "intent": {"name": intent.get("name"), "displayName": intent.get("name")},
            "intentDetectionConfidence": intent.get("confidence"),
        },
    }


EMULATORS: dict[str, Callable[[ParseResult], dict[str, Any]]] = {
    "WIT": as_wit,
    "LUIS": as_luis,
    "DIALOGFLOW": as_dialogflow,
}
