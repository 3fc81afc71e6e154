"""The intent classifier: a linear SVM over the sparse sentence features with tempered
softmax confidences. DIETClassifier, LogisticRegressionClassifier and
SklearnIntentClassifier map to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.nlu.linear_model import LinearModel, feature_matrix
from server.nlu.message import Message
from server.nlu.training_data import NLUTrainingData

RANKING_LENGTH = 10


class IntentClassifier:
    def __init__(self, config: dict[str, Any], name: str = "IntentClassifier"):
        self.config = config
        self.name = name
        self.c = float(config.get("C", 1.0)) if not isinstance(config.get("C"), list) else 1.0
        self.temperature = float(config.get("temperature", 5.0))
        self.ranking_length = int(config.get("ranking_length", RANKING_LENGTH) or 0)
        self.model_: LinearModel | None = None

    def train(self, messages: list[Message], data: NLUTrainingData) -> None:
        pairs = [
            (m, e.base_intent)
            for m, e in zip(messages, data.examples, strict=True)
            if e.base_intent
        ]
        if not pairs:
            self.model_ = None
            return
        width = pairs[0][0].feature_width
        x = feature_matrix([m for m, _ in pairs], width)
        labels = [label for _, label in pairs if label]
        self.model_ = LinearModel.fit(x, labels, self.c, self.temperature)

    def process(self, message: Message) -> None:
        if self.model_ is None:
            return
        model = self.model_
        confidences = model.confidences(model.scores(*message.sparse_vector()))
        order = confidences.argsort()[::-1]
        if self.ranking_length > 0:
            order = order[: self.ranking_length]
        ranking = [{"name": model.classes[i], "confidence": float(confidences[i])} for i in order]
        message.intent = dict(ranking[0])
        message.intent_ranking = ranking

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        if self.model_ is None:
            return {"trained": False}
        return {"trained": True, **self.model_.write(directory, prefix)}

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> IntentClassifier:
        classifier = cls(config, name)
        if state.get("trained"):
            classifier.model_ = LinearModel.read(directory, prefix, state)
        return classifier
