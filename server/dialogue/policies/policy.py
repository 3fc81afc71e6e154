"""The contract every dialogue policy follows: train on stories, predict, persist as data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from server.dialogue.domain import Domain
from server.dialogue.policies.featurization import ConversationStates
from server.dialogue.policies.prediction import PolicyPrediction
from server.dialogue.story_steps import TrainingStory
from server.nlu.params import number
from server.nlu.state_files import read_json

STATE_FILE = "policy.json"

_WHOLE_NUMBER_OPTIONS = frozenset({"max_history", "augmentation_factor"})


class Policy:
    """Base of the policies: configuration in, learned state out (attributes ending in `_`)."""

    default_priority: ClassVar[int] = 1
    # Options this policy reads; any other option in config.yml is accepted and ignored.
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, name: str, priority: int | None = None, **options: Any) -> None:
        self.name = name
        self.priority = (
            self.default_priority
            if priority is None
            else number({"priority": priority}, "priority", 0, name, whole=True)
        )
        self.options = {**self.defaults}
        for key, value in options.items():
            if key in self.defaults:
                self.options[key] = value
        for key in _WHOLE_NUMBER_OPTIONS & self.options.keys():
            if self.options[key] is not None:  # checked once here: read on every turn
                self.options[key] = number(self.options, key, 0, name, whole=True, minimum=0)
        self.warnings: list[str] = []

    def action_score(self, conversation: ConversationStates) -> float:
        """The confidence of a predicted action: 1, or with `use_nlu_confidence_as_score`
        (memoization and rules, as Rasa's) the latest message's intent confidence."""
        if not self.options.get("use_nlu_confidence_as_score"):
            return 1.0
        intent = conversation.tracker.latest_message.parse_data.get("intent") or {}
        confidence = intent.get("confidence", 1.0) if isinstance(intent, dict) else 1.0
        return float(confidence) if isinstance(confidence, (int, float)) else 1.0

    def option(self, key: str) -> Any:
        return self.options[key]

    def int_option(self, key: str) -> int | None:
        value = self.options[key]
        if value is None:
            return None
        return int(value)

    # -- the contract ------------------------------------------------------------------------
    def train(self, stories: list[TrainingStory], domain: Domain) -> None:
        raise NotImplementedError

    def predict(self, conversation: ConversationStates, domain: Domain) -> PolicyPrediction:
        raise NotImplementedError

    def prediction_window(self) -> int | None:
        """How many of the conversation's last states `predict` reads, when it reads
        nothing else but the latest message's intent and text and the latest action; None
        when it reads more (a prediction the ensemble does not remember).

        Asked once the policy is trained or restored."""
        return None

    def reads_message_text(self) -> bool:
        """Whether a prediction can depend on the text of the latest user message (a
        window of states ending in that text is then looked up); asked with
        `prediction_window`."""
        return True

    def learned_state(self) -> dict[str, Any]:
        """The JSON-serialisable learned state (arrays go to files via `persist`)."""
        return {}

    def restore(self, state: dict[str, Any], directory: Path, domain: Domain) -> None:
        """Rebuilds the learned state from `learned_state()` and the files in `directory`."""

    def persist(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        # Written as it is encoded, the same text as `json.dumps`: a memoization lookup of
        # whole histories grows with the square of a story's length, and its text, then its
        # bytes, held whole beside it tripled the training's peak.
        with open(directory / STATE_FILE, "w", encoding="utf-8") as handle:
            json.dump({"options": self.options, "learned": self.learned_state()}, handle)

    @classmethod
    def load(cls, directory: Path, name: str, priority: int, domain: Domain) -> Policy:
        data = read_json(directory, STATE_FILE)
        policy = cls(name, priority, **data["options"])
        policy.restore(data["learned"], directory, domain)
        return policy
