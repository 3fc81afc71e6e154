"""MLPolicy: a scikit-learn classifier over the last turns' features; stands in for TEDPolicy.

Each of the last `max_history` states becomes one-hot features tagged with its distance from
now (intent, entities, previous action, active loop, slot values, user text); a multinomial
logistic regression learns the next action. Stories are augmented by gluing them together,
like Rasa's `augmentation_factor`, so that a story's start is recognised mid-conversation.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from server.dialogue.domain import Domain
from server.dialogue.memo import Memo
from server.dialogue.policies.featurization import (
    ACTIVE_LOOP,
    PREV_ACTION,
    SLOTS,
    USER,
    ConversationStates,
    State,
    state_text,
    training_examples,
)
from server.dialogue.policies.policy import Policy
from server.dialogue.policies.prediction import PolicyPrediction, prediction_from, zeros
from server.dialogue.story_steps import TrainingStory
from server.errors import ModelError
from server.nlu.params import number
from server.nlu.state_files import expect, read_array, read_json
from server.trackers.events import ACTION_LISTEN, ActionExecuted, Event

if TYPE_CHECKING:
    import numpy as np
    from scipy.sparse import csr_matrix

ML_PRIORITY = 1
VOCABULARY_FILE = "vocabulary.json"
ARRAY_FILES = ("coef", "intercept", "classes")
RECENCY_DECAY = 0.5
# Distinct windows of states (the last max_history) whose scores a loaded policy
# remembers; a bot's conversations repeat few of them. Under 1 KB each.
SCORE_CACHE_SIZE = 2048


def state_features(states: Sequence[State], max_history: int) -> list[str]:
    """Feature names of the last `max_history` states; `0:` is the current state."""
    features: list[str] = []
    window = list(states[-max_history:]) if max_history else list(states)
    for distance, state in enumerate(reversed(window)):
        tag = f"{distance}:"
        if not state:
            features.append(tag + "start")
        user = state.get(USER, {})
        if "intent" in user:
            features.append(f"{tag}intent={user['intent']}")
        if "text" in user:
            features.append(f"{tag}text={str(user['text']).strip().lower()}")
        for entity in user.get("entities", ()):
            features.append(f"{tag}entity={entity}")
        prev = state.get(PREV_ACTION, {})
        if prev:
            features.append(f"{tag}prev={prev.get('action_name') or prev.get('action_text')}")
        loop = state.get(ACTIVE_LOOP, {}).get("name")
        if loop:
            features.append(f"{tag}loop={loop}")
        for slot, value in state.get(SLOTS, {}).items():
            features.append(f"{tag}slot={slot}={value}")
    return features


def _action_indices(values: Any, below: int, what: str) -> list[int]:
    """`values` as a list of action indices (below `below`), or a ModelError."""
    if not isinstance(values, list) or not all(
        type(value) is int and 0 <= value < below for value in values
    ):
        raise ModelError(f"component state {what} holds an index out of range")
    return values


def _recency_weight(feature: str) -> float:
    """Older turns weigh less, so the regularised model explains the next action by the
    current turn first and by history only where the current turn is not enough."""
    distance = int(feature.split(":", 1)[0])
    return float(RECENCY_DECAY**distance)


def _augmented(stories: list[list[Event]], factor: int, seed: int = 42) -> list[list[Event]]:
    """Stories glued end to start, at most `factor` per story (capped for speed)."""
    if factor <= 0 or len(stories) < 2:
        return []
    rng = random.Random(seed)
    count = min(factor * len(stories), 500)
    glued: list[list[Event]] = []
    for _ in range(count):
        first, second = rng.sample(stories, 2)
        rest = second
        if rest and isinstance(rest[0], ActionExecuted) and rest[0].action_name == ACTION_LISTEN:
            rest = rest[1:]
        glued.append(first + rest)
    return glued


class _Fitted(Protocol):
    """What scoring and persisting read of a fitted logistic regression."""

    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray


@dataclass
class _Weights:
    """A restored model's logistic-regression arrays (scikit-learn is not imported to serve)."""

    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray


class MLPolicy(Policy):
    """Generalises beyond the stories: similar recent turns lead to similar next actions."""

    default_priority = ML_PRIORITY
    defaults = {"max_history": 5, "augmentation_factor": 20, "C": 10.0, "max_iter": 300}

    def __init__(self, name: str, priority: int | None = None, **options: Any) -> None:
        super().__init__(name, priority, **options)
        self.vocabulary_: dict[str, int] = {}
        self.classifier_: _Fitted | None = None
        self.classes_: list[int] = []
        self._labels: list[int] = []  # the classifier's classes, as ints
        # Scores are a pure function of the window of states: remembered by the states'
        # texts, cleared whenever the learned state changes.
        self._scores: Memo[tuple[str, ...], tuple[float, ...]] = Memo(SCORE_CACHE_SIZE)

    @property
    def max_history(self) -> int:
        return self.int_option("max_history") or 0

    def train(self, stories: list[TrainingStory], domain: Domain) -> None:
        import numpy as np

        originals = [s.events for s in stories if not s.is_rule]
        factor = self.int_option("augmentation_factor") or 0
        rows: list[list[str]] = []
        labels: list[int] = []
        seen: set[tuple[tuple[str, ...], int]] = set()
        for events in originals + _augmented(originals, factor):
            for states, action in training_examples(events, domain):
                index = domain.index_of_action(action)
                if index is None:
                    continue
                features = state_features(states, self.max_history)
                signature = (tuple(features), index)
                if signature in seen:
                    continue
                seen.add(signature)
                rows.append(features)
                labels.append(index)
        vocabulary: dict[str, int] = {}
        for features in rows:
            for name in features:
                vocabulary.setdefault(name, len(vocabulary))
        self.vocabulary_ = vocabulary
        self._scores.clear()
        self.classes_ = sorted(set(labels))
        self.classifier_ = None
        if len(self.classes_) < 2:
            return
        matrix = self._matrix(rows)
        # scikit-learn only for training: a served model scores in numpy (saves ~60 MB RSS).
        from sklearn.linear_model import LogisticRegression

        classifier = LogisticRegression(
            C=number(self.options, "C", 10.0, self.name, positive=True),
            max_iter=number(self.options, "max_iter", 300, self.name, whole=True, minimum=1),
        )
        classifier.fit(matrix, np.array(labels))
        self.classifier_ = classifier
        self._labels = [int(c) for c in classifier.classes_]

    def _matrix(self, rows: list[list[str]]) -> csr_matrix:
        import numpy as np
        from scipy.sparse import csr_matrix  # training only: a served model scores in numpy

        indptr, indices, values = [0], [], []
        for features in rows:
            columns: dict[int, float] = {}
            for name in features:
                column = self.vocabulary_.get(name)
                if column is not None:
                    columns[column] = _recency_weight(name)
            for column in sorted(columns):
                indices.append(column)
                values.append(columns[column])
            indptr.append(len(indices))
        data = np.array(values, dtype=np.float64)
        return csr_matrix(
            (data, np.array(indices, dtype=np.int64), np.array(indptr, dtype=np.int64)),
            shape=(len(rows), len(self.vocabulary_)),
        )

    def probabilities(
        self, states: Sequence[State], domain: Domain, texts: Sequence[str] | None = None
    ) -> list[float]:
        """Every action's probability; `texts` are the `state_text`s of the last
        max_history states when the caller has them."""
        probabilities = zeros(len(domain.action_names_or_texts))
        if not self.classes_:
            return probabilities
        if self.classifier_ is None:
            probabilities[self.classes_[0]] = 1.0
            return probabilities
        if texts is None:
            window = states[-self.max_history :] if self.max_history else states
            texts = [state_text(state) for state in window]
        scores = self._scores_of(tuple(texts), states)
        for label, score in zip(self._labels, scores, strict=True):
            if 0 <= label < len(probabilities):
                probabilities[label] = score
        return probabilities

    def _scores_of(self, window: tuple[str, ...], states: Sequence[State]) -> tuple[float, ...]:
        """The probability of each of `classes_`, from the cache when the window was seen."""
        cached = self._scores.get(window)
        if cached is not None:
            return cached
        assert self.classifier_ is not None
        scores = self._probabilities_of(state_features(states, self.max_history))
        result = tuple(float(score) for score in scores)
        self._scores.put(window, result)
        return result

    def _probabilities_of(self, features: list[str]) -> np.ndarray:
        """`predict_proba` of the classifier for one row, in plain numpy: scikit-learn's
        per-call input checks cost ten times the arithmetic (most of a turn's policy time).
        """
        import numpy as np

        assert self.classifier_ is not None
        columns: dict[int, float] = {}
        for name in features:
            column = self.vocabulary_.get(name)
            if column is not None:
                columns[column] = _recency_weight(name)
        coef = self.classifier_.coef_
        scores = np.array(self.classifier_.intercept_, dtype=np.float64)
        if columns:
            scores += coef[:, list(columns)] @ np.fromiter(columns.values(), np.float64)
        if scores.shape[0] == 1:
            # Two classes: one logistic score for the second, as scikit-learn does.
            positive = 1.0 / (1.0 + np.exp(-scores[0]))
            return np.array([1.0 - positive, positive])
        scores -= scores.max()
        np.exp(scores, out=scores)
        scores /= scores.sum()
        return scores

    def predict(self, conversation: ConversationStates, domain: Domain) -> PolicyPrediction:
        if not self.classes_:  # no stories: no states to read
            names = domain.action_names_or_texts
            return prediction_from(zeros(len(names)), names, self.name, self.priority)
        stories = conversation.stories()  # as TED: rule-only turns left out
        text_states = stories.text_states()
        by_text = text_states is not None and self._knows_text(text_states[-1])
        states = text_states if by_text and text_states is not None else stories.states
        texts = stories.texts(self.max_history, by_text)
        return prediction_from(
            self.probabilities(states, domain, texts),
            domain.action_names_or_texts,
            self.name,
            self.priority,
            is_end_to_end_prediction=by_text,
        )

    def prediction_window(self) -> int | None:
        return self.max_history or None

    def reads_message_text(self) -> bool:
        return any(name.startswith("0:text=") for name in self.vocabulary_)

    def _knows_text(self, state: State) -> bool:
        text = state.get(USER, {}).get("text")
        return text is not None and f"0:text={str(text).strip().lower()}" in self.vocabulary_

    # -- persistence: arrays as .npy, everything else as JSON -------------------------------
    def learned_state(self) -> dict[str, Any]:
        return {"classes": self.classes_, "fitted": self.classifier_ is not None}

    def persist(self, directory: Path) -> None:
        import numpy as np

        super().persist(directory)
        (directory / VOCABULARY_FILE).write_text(json.dumps(self.vocabulary_), encoding="utf-8")
        if self.classifier_ is not None:
            for name in ARRAY_FILES:
                np.save(directory / f"{name}.npy", getattr(self.classifier_, f"{name}_"))

    def restore(self, state: dict[str, Any], directory: Path, domain: Domain) -> None:
        """The stored weights, checked against each other and the domain, so that a broken
        or hostile archive fails here and not in every turn's prediction."""
        import numpy as np

        self._scores.clear()
        actions = len(domain.action_names_or_texts)
        self.classes_ = _action_indices(state.get("classes", []), actions, f"{self.name} classes")
        vocabulary = expect(read_json(directory, VOCABULARY_FILE), dict, f"{self.name} vocabulary")
        self.vocabulary_ = {str(k): v for k, v in vocabulary.items()}
        self.classifier_ = None
        if not state.get("fitted"):
            return
        coef = read_array(directory, "coef.npy", np.float64, 2)
        intercept = read_array(directory, "intercept.npy", np.float64, 1)
        labels = read_array(directory, "classes.npy", np.int64, 1)
        columns = coef.shape[1]
        # One logistic score for two classes, else one score per class (as scikit-learn).
        scored = 2 if intercept.shape[0] == 1 else intercept.shape[0]
        if coef.shape[0] != intercept.shape[0] or not all(
            type(column) is int and 0 <= column < columns for column in self.vocabulary_.values()
        ):
            raise ModelError(f"{self.name}: its weights do not match its vocabulary")
        if labels.shape[0] != scored:
            raise ModelError(f"{self.name}: its weights do not match its classes")
        self._labels = _action_indices(labels.tolist(), actions, f"{self.name} classes")
        self.classifier_ = _Weights(coef, intercept, labels)
