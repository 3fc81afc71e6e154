"""Rasa's `/intent{"entity": "value"}` message syntax, parsed without a model."""

from __future__ import annotations

import json
import re
from typing import Any

_SYNTAX = re.compile(r"^\s*/(?P<intent>[^{@\s]+)(?P<entities>\{.*\})?\s*$", re.DOTALL)


def parse_intent_syntax(text: str) -> dict[str, Any] | None:
    """The parse result for `/intent` or `/intent{...}` text, or None for other text."""
    match = _SYNTAX.match(text or "")
    if match is None:
        return None
    intent = match.group("intent")
    entities: list[dict[str, Any]] = []
    raw = match.group("entities")
    if raw:
        try:
            values = json.loads(raw)
        except json.JSONDecodeError:
            values = None
        if not isinstance(values, dict):
            return None
        start = match.start("entities")
        for name, value in values.items():
            for v in value if isinstance(value, list) else [value]:
                entities.append({"entity": name, "start": start, "end": len(text), "value": v})
    return {
        "text": text,
        "intent": {"name": intent, "confidence": 1.0},
        "intent_ranking": [{"name": intent, "confidence": 1.0}],
        "entities": entities,
    }
