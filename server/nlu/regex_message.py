"""Messages like `/intent@0.8{"entity": "value"}` that name their intent directly."""

from __future__ import annotations

import logging
import re
from typing import Any

from server.json_values import loads_untrusted

logger = logging.getLogger(__name__)

_PATTERN = re.compile(
    r"^/(?P<name>[^{@]+)(?P<confidence>@[0-9.]+)?(?P<entities>\{.+\})?(?P<rest>.*)"
)


# The `extractor` Rasa names on the entities of such a message.
EXTRACTOR = "RegexMessageHandler"


def parse_regex_message(
    text: str, known_intents: set[str] | None = None, known_entities: set[str] | None = None
) -> dict[str, Any] | None:
    """Rasa's parse result for a `/intent...` message, or None for ordinary text. With the
    domain's intents and entities known, as in Rasa, an unknown intent makes the message
    ordinary text and entities of unknown types are left out (each with a warning)."""
    stripped = text.strip()
    if not stripped.startswith("/"):
        return None
    match = _PATTERN.match(stripped)
    if not match:
        return None
    name = match.group("name").strip()
    if not name:
        return None
    if known_intents is not None and name not in known_intents:
        logger.warning(
            "The intent '%s' of the message %r is not in the domain; the message is parsed as text",
            name[:100],
            stripped[:200],
        )
        return None
    if match.group("rest"):
        logger.warning(
            "Ignoring %r after the entities of %r", match.group("rest")[:200], stripped[:200]
        )
    confidence = _confidence(match.group("confidence"))
    entities = _entities(match)
    if known_entities is not None:
        unknown = sorted({e["entity"] for e in entities} - known_entities)
        if unknown:
            # A few named: thousands fit in one message, and this is said on every parse.
            more = f" and {len(unknown) - 10:,} more" if len(unknown) > 10 else ""
            logger.warning(
                "Leaving out the entities %s%s of the message %r: not in the domain",
                ", ".join(repr(u[:100]) for u in unknown[:10]),
                more,
                stripped[:200],
            )
            entities = [e for e in entities if e["entity"] in known_entities]
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
        logger.warning("Invalid confidence %r in a /intent message; using 0.0", raw[:200])
        return 0.0


def _entities(match: re.Match[str]) -> list[dict[str, Any]]:
    raw = match.group("entities")
    if raw is None:
        return []
    try:  # too deep (TooDeep) too: 5,000 levels were a RecursionError, a 500 on every route
        parsed = loads_untrusted(raw.encode("utf-8", "surrogatepass"))
    except ValueError as exc:
        logger.warning("Entities %r of a /intent message cannot be read: %s", raw[:200], exc)
        return []
    if not isinstance(parsed, dict):
        logger.warning("Entities %r of a /intent message are not a JSON object", raw[:200])
        return []
    start, end = match.start("entities"), match.end("entities")
    entities = []
    for entity, values in parsed.items():
        for value in values if isinstance(values, list) else [values]:
            entities.append(
                {
                    "entity": entity,
                    "value": value,
                    "start": start,
                    "end": end,
                    "extractor": EXTRACTOR,
                }
            )
    return entities
