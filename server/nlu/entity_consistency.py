"""IntentEntityConsistency: lowers the confidence of each ranked intent whose training
examples never hold an entity type the message's extractors found ("i want to see
<movie_name>" is not SearchCreativeWork when only SearchScreeningEvent's examples have
movie names). Placed after the intent classifier; its state is each intent's entity types."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from server.errors import ModelError
from server.nlu.message import Message
from server.nlu.params import number
from server.nlu.training_data import NLUTrainingData


class IntentEntityConsistency:
    """Each entity type of the message that an intent's training examples never annotate
    multiplies that intent's confidence by exp(-penalty); the ranking is then renormalised
    to the mass it had and re-sorted. Types no training example annotates (a Duckling
    dimension, say) and intents it was not trained on are left alone."""

    def __init__(self, config: dict[str, Any], name: str = "IntentEntityConsistency"):
        self.config = config
        self.name = name
        self.penalty = number(config, "penalty", 1.0, name, minimum=0)
        # intent -> the entity types its training examples annotate
        self.types_: dict[str, frozenset[str]] = {}
        self.known_: frozenset[str] = frozenset()

    def train(self, messages: list[Message], data: NLUTrainingData) -> None:
        found: dict[str, set[str]] = {}
        for example in data.examples:
            if example.base_intent:
                kinds = found.setdefault(example.base_intent, set())
                kinds.update(entity.entity for entity in example.entities)
        self._set(found)

    def _set(self, found: dict[str, set[str]]) -> None:
        self.types_ = {intent: frozenset(kinds) for intent, kinds in found.items()}
        self.known_ = frozenset().union(*self.types_.values()) if self.types_ else frozenset()

    def process(self, message: Message) -> None:
        ranking = message.intent_ranking
        if not ranking or self.penalty == 0:
            return
        kinds = {e.get("entity") for e in message.entities} & self.known_
        if not kinds:
            return
        weights = []
        for entry in ranking:
            name = entry.get("name")
            allowed = self.types_.get(name) if isinstance(name, str) else None
            missing = len(kinds - allowed) if allowed is not None else 0
            weights.append(float(entry["confidence"]) * math.exp(-self.penalty * missing))
        total, kept = sum(float(e["confidence"]) for e in ranking), sum(weights)
        if kept <= 0:
            return
        scale = total / kept
        rescored = [
            {**entry, "confidence": weight * scale}
            for entry, weight in zip(ranking, weights, strict=True)
        ]
        rescored.sort(key=lambda entry: entry["confidence"], reverse=True)
        message.intent_ranking = rescored
        message.intent = dict(rescored[0])

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        return {"types": {intent: sorted(kinds) for intent, kinds in sorted(self.types_.items())}}

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> IntentEntityConsistency:
        component = cls(config, name)
        types = state.get("types", {})
        if not isinstance(types, dict) or not all(
            isinstance(intent, str)
            and isinstance(kinds, list)
            and all(isinstance(kind, str) for kind in kinds)
            for intent, kinds in types.items()
        ):
            raise ModelError(f"{name}: malformed entity types")
        component._set({intent: set(kinds) for intent, kinds in types.items()})
        return component
