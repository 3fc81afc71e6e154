"""ResponseSelector: picks the response of a retrieval intent (`faq/ask_name`) with a
linear model over the sparse sentence features, in Rasa's `response_selector` shape."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from server.errors import ModelError
from server.nlu.linear_model import LinearModel, feature_matrix
from server.nlu.message import Message
from server.nlu.params import number
from server.nlu.training_data import NLUTrainingData

logger = logging.getLogger(__name__)

DEFAULT_SELECTOR = "default"


def response_id(intent_response_key: str) -> int:
    """A stable integer id for a response key (Rasa shows an integer label id)."""
    digest = hashlib.sha256(intent_response_key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def empty_prediction() -> dict[str, Any]:
    return {
        "response": {
            "responses": None,
            "confidence": 0.0,
            "intent_response_key": None,
            "utter_action": "utter_None",
        },
        "ranking": [],
    }


class ResponseSelector:
    def __init__(self, config: dict[str, Any], name: str = "ResponseSelector"):
        self.config = config
        self.name = name
        self.retrieval_intent: str | None = config.get("retrieval_intent")
        self.ranking_length = (
            number(config, "ranking_length", 10, name, whole=True, minimum=0)
            if config.get("ranking_length", 10) is not None
            else 0
        )
        self.c = 1.0
        self.temperature = number(config, "temperature", 5.0, name, positive=True)
        self.model_: LinearModel | None = None
        self.responses_: dict[str, list[dict]] = {}
        self.all_retrieval_intents_: list[str] = []
        self._told_missing: set[str] = set()

    @property
    def selector_key(self) -> str:
        return self.retrieval_intent or DEFAULT_SELECTOR

    def train(self, messages: list[Message], data: NLUTrainingData) -> None:
        self.all_retrieval_intents_ = data.retrieval_intents
        pairs = [
            (m, e.intent)
            for m, e in zip(messages, data.examples, strict=True)
            if e.intent
            and "/" in e.intent
            and (self.retrieval_intent is None or e.base_intent == self.retrieval_intent)
        ]
        keys = {label for _, label in pairs}
        self.responses_ = {
            k: v for k, v in data.responses.items() if k.removeprefix("utter_") in keys
        }
        if not pairs:
            self.model_ = None
            return
        x = feature_matrix([m for m, _ in pairs], pairs[0][0].feature_width)
        self.model_ = LinearModel.fit(
            x, [label for _, label in pairs if label], self.c, self.temperature
        )

    def process(self, message: Message) -> None:
        selector = message.response_selector
        if selector is None:
            selector = {"all_retrieval_intents": list(self.all_retrieval_intents_)}
            message.response_selector = selector
        if self.model_ is None:
            selector[self.selector_key] = empty_prediction()
            return
        model = self.model_
        confidences = model.confidences(model.scores(*message.sparse_vector()))
        order = confidences.argsort()[::-1]
        if self.ranking_length > 0:
            order = order[: self.ranking_length]
        ranking = [
            {
                "id": response_id(model.classes[i]),
                "confidence": float(confidences[i]),
                "intent_response_key": model.classes[i],
            }
            for i in order
        ]
        best = ranking[0]
        key = best["intent_response_key"]
        selector[self.selector_key] = {
            "response": {
                "responses": self._responses_of(key),
                "confidence": best["confidence"],
                "intent_response_key": key,
                "utter_action": f"utter_{key}",
            },
            "ranking": ranking,
        }

    def _responses_of(self, key: str) -> list[dict]:
        """The responses of `key`; as in Rasa, its own name as the text when the training
        data had none (a model trained without the domain), with a warning (once)."""
        responses = self.responses_.get(f"utter_{key}")
        if responses:
            return responses
        if key not in self._told_missing:
            self._told_missing.add(key)
            logger.warning(
                "%s: no responses for %s in the training data; answering its name instead. "
                "Add 'utter_%s' to the domain or the NLU data.",
                self.name,
                key,
                key,
            )
        return [{"text": key}]

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        state: dict[str, Any] = {
            "responses": self.responses_,
            "all_retrieval_intents": self.all_retrieval_intents_,
            "trained": self.model_ is not None,
        }
        if self.model_ is not None:
            state.update(self.model_.write(directory, prefix))
        return state

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> ResponseSelector:
        selector = cls(config, name)
        responses = state.get("responses")
        intents = state.get("all_retrieval_intents")
        if not isinstance(responses, dict) or not isinstance(intents, list):
            raise ModelError(f"{name}: invalid stored responses")
        selector.responses_ = responses
        selector.all_retrieval_intents_ = [str(i) for i in intents]
        if state.get("trained"):
            selector.model_ = LinearModel.read(directory, prefix, state)
        return selector
