"""RegexFeaturizer: one binary sentence feature per regex / lookup pattern, plus per-token
pattern names for the CRF entity extractor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.errors import ModelError
from server.nlu.message import Message
from server.nlu.params import flag
from server.nlu.patterns import Pattern, compile_patterns, patterns_from_data, token_matches
from server.nlu.training_data import NLUTrainingData


class RegexFeaturizer:
    def __init__(self, config: dict[str, Any], name: str = "RegexFeaturizer"):
        self.config = config
        self.name = name
        self.case_sensitive = flag(config, "case_sensitive", True, name)
        self.use_word_boundaries = flag(config, "use_word_boundaries", True, name)
        self.use_regexes = flag(config, "use_regexes", True, name)
        self.use_lookup_tables = flag(config, "use_lookup_tables", True, name)
        self.patterns_: list[Pattern] = []
        self._compiled: list = []

    def _compile(self) -> None:
        self._compiled = compile_patterns(
            self.patterns_, self.case_sensitive, self.use_word_boundaries
        )

    def train(self, messages: list[Message], data: NLUTrainingData) -> None:
        self.patterns_ = patterns_from_data(data, self.use_regexes, self.use_lookup_tables)
        self._compile()
        for message in messages:
            self.process(message)

    def process(self, message: Message) -> None:
        matched, per_token = token_matches(self._compiled, message.text, message.tokens)
        message.blocks.append((matched, [1.0] * len(matched), len(self.patterns_)))
        message.token_patterns = per_token

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        return {"patterns": [[p.name, p.pattern, p.kind] for p in self.patterns_]}

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> RegexFeaturizer:
        featurizer = cls(config, name)
        try:
            featurizer.patterns_ = [
                Pattern(str(n), str(p), str(k)) for n, p, k in state["patterns"]
            ]
            featurizer._compile()
        except (KeyError, TypeError, ValueError, Exception) as e:
            raise ModelError(f"{name}: invalid stored patterns: {e}") from e
        return featurizer
