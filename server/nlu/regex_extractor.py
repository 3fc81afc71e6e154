"""RegexEntityExtractor: entities found by the regexes and lookup tables of the training
data whose names are entities used in the examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.errors import ModelError
from server.nlu.message import Message
from server.nlu.params import flag
from server.nlu.patterns import Pattern, compile_patterns, patterns_from_data
from server.nlu.training_data import NLUTrainingData


class RegexEntityExtractor:
    def __init__(self, config: dict[str, Any], name: str = "RegexEntityExtractor"):
        self.config = config
        self.name = name
        self.case_sensitive = flag(config, "case_sensitive", False, name)
        self.use_word_boundaries = flag(config, "use_word_boundaries", True, name)
        self.use_regexes = flag(config, "use_regexes", True, name)
        self.use_lookup_tables = flag(config, "use_lookup_tables", True, name)
        self.patterns_: list[Pattern] = []
        self._compiled: list = []

    def train(self, messages: list[Message], data: NLUTrainingData) -> None:
        known = set(data.entities)
        self.patterns_ = [
            p
            for p in patterns_from_data(data, self.use_regexes, self.use_lookup_tables)
            if p.name in known
        ]
        self._compile()

    def _compile(self) -> None:
        self._compiled = compile_patterns(
            self.patterns_, self.case_sensitive, self.use_word_boundaries
        )

    def process(self, message: Message) -> None:
        for pattern, regex in self._compiled:
            for match in regex.finditer(message.text):
                if match.end() == match.start():
                    continue
                message.entities.append(
                    {
                        "entity": pattern.name,
                        "start": match.start(),
                        "end": match.end(),
                        "value": match.group(),
                        "extractor": self.name,
                    }
                )

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        return {"patterns": [[p.name, p.pattern, p.kind] for p in self.patterns_]}

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> RegexEntityExtractor:
        extractor = cls(config, name)
        try:
            extractor.patterns_ = [Pattern(str(n), str(p), str(k)) for n, p, k in state["patterns"]]
            extractor._compile()
        except Exception as e:
            raise ModelError(f"{name}: invalid stored patterns: {e}") from e
        return extractor
