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
        # As Rasa's mapper: every mapping read, then each value's lower case mapped to the
        # value itself (an extracted "NEW YORK" gets "New York"); a value's lower case that
        # is mapped already keeps its target, so of values differing only in case the first
        # one walked wins: the synonyms' values (blocks and annotations written otherwise
        # than their value, in reading order), then the annotated values, example by example.
        read = {k.lower(): str(v) for k, v in data.synonyms.items()}
        synonyms = dict(read)
        for value in read.values():
            synonyms.setdefault(value.lower(), value)
        for example in data.examples:
            for a in example.entities:
                surface, value = example.text[a.start : a.end], str(a.value)
                # An annotation like [NYC](city:New York) makes "nyc" a synonym too. The
                # YAML reader has put those in `data.synonyms` already, where the last one
                # read wins; this adds the ones of examples made otherwise (JSON), the last
                # one annotated winning, as in Rasa, over another and over a self-reference.
                key = surface.lower()
                if surface != value and key not in read:
                    synonyms[key] = value
                synonyms.setdefault(value.lower(), value)
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
