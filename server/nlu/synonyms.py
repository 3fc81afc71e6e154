"""EntitySynonymMapper: replace extracted entity values by their canonical value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.errors import ModelError
from server.nlu.message import Message
from server.nlu.training_data import NLUTrainingData


class EntitySynonymMapper:
    def __init__(self, config: dict[str, Any], name: str = "EntitySynonymMapper"):
        self.config = config
        self.name = name
        self.synonyms_: dict[str, str] = {}

    def train(self, messages: list[Message], data: NLUTrainingData) -> None:
        synonyms = {k.lower(): str(v) for k, v in data.synonyms.items()}
        # An annotation like [NYC](city:New York) makes "nyc" a synonym too. The YAML reader
        # has put those in `data.synonyms` already, where the last one read wins; this only
        # adds the ones of examples made otherwise.
        for example in data.examples:
            for a in example.entities:
                surface = example.text[a.start : a.end]
                if str(a.value) != surface:
                    synonyms.setdefault(surface.lower(), str(a.value))
        self.synonyms_ = synonyms

    def process(self, message: Message) -> None:
        for entity in message.entities:
            key = str(entity.get("value")).lower()
            canonical = self.synonyms_.get(key)
            if canonical is not None:
                # Marked even when the value was already canonical ("New York" for the
                # synonym "new york"), as Rasa marks every entity the mapper looked up.
                entity["value"] = canonical
                entity.setdefault("processors", []).append(self.name)

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        return {"synonyms": self.synonyms_}

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> EntitySynonymMapper:
        mapper = cls(config, name)
        synonyms = state.get("synonyms")
        if not isinstance(synonyms, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in synonyms.items()
        ):
            raise ModelError(f"{name}: synonyms must map strings to strings")
        mapper.synonyms_ = synonyms
        return mapper
