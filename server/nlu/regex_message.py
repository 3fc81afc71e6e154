"""Messages like `/intent@0.8{"entity": "value"}` that name their intent directly."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

logger = logging.getLogger(__name__)

_PATTERN = re.compile(
    r"^/(?P<name>[^{@]+)(?P<confidence>@[0-9.]+)?(?P<entities>\{.+\})?(?P<rest>.*)"
)


def parse_regex_message(text: str, known_intents: set[str] | None = None) -> dict[str, Any] | None:
    """Rasa's parse result for a `/intent...` message, or None for ordinary text."""
    stripped = text.strip()
    if not stripped.startswith("/"):
        return None
    match = _PATTERN.match(stripped)
    if not match:
        return None
    name = match.group("name").strip()
    if not name or (known_intents is not None and name not in known_intents):
        return None
    if match.group("rest"):
        logger.warning("Ignoring %r after the entities of %r", match.group("rest"), stripped)
    confidence = _confidence(match.group("confidence"))
    entities = _entities(match)
    intent = {"name": name, "confidence": confidence}
    return {
        "text": stripped,
        "intent": intent,
        "entities": entities,
        "intent_ranking": [dict(intent)],
    }


def _confidence(raw: str | None) -> float:
    if raw is None:
        return 1.0
    try:
        return min(1.0, float(raw[1:]))
    except ValueError:
        logger.warning("Invalid confidence %r in a /intent message; using 0.0", raw)
        return 0.0


def _entities(match: re.Match[str]) -> list[dict[str, Any]]:
    raw = match.group("entities")
    if raw is None:
        return []
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        logger.warning("Entities %r of a /intent message are not a JSON object", raw)
        return []
    start, end = match.start("entities"), match.end("entities")
    entities = []
    for entity, values in parsed.items():
        for value in values if isinstance(values, list) else [values]:
            entities.append({"entity": entity, "value": value, "start": start, "end": end})
    return entities
