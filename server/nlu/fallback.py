"""FallbackClassifier: predict `nlu_fallback` when the top intent is unsure or ambiguous."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.nlu.message import Message
from server.nlu.params import number

FALLBACK_INTENT = "nlu_fallback"


class FallbackClassifier:
    def __init__(self, config: dict[str, Any], name: str = "FallbackClassifier"):
        self.config = config
        self.name = name
        self.threshold = number(config, "threshold", 0.3, name, minimum=0, maximum=1)
        self.ambiguity_threshold = number(
            config, "ambiguity_threshold", 0.1, name, minimum=0, maximum=1
        )

    def train(self, messages: list[Message], data: Any) -> None:
        """Nothing to learn."""

    def should_fallback(self, message: Message) -> bool:
        if message.intent is None or message.intent.get("name") == FALLBACK_INTENT:
            return False
        if float(message.intent.get("confidence", 0.0)) < self.threshold:
            return True
        ranking = message.intent_ranking
        if len(ranking) >= 2:
            gap = float(ranking[0]["confidence"]) - float(ranking[1]["confidence"])
            return gap < self.ambiguity_threshold
        return False

    def process(self, message: Message) -> None:
        if not self.should_fallback(message):
            return
        message.intent = {"name": FALLBACK_INTENT, "confidence": self.threshold}
        message.intent_ranking.insert(0, {"name": FALLBACK_INTENT, "confidence": self.threshold})

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        return {}

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> FallbackClassifier:
        return cls(config, name)
