"""The intent classifier: a linear SVM over the sentence features, weighted by their spread
across intents, with tempered softmax confidences. DIETClassifier,
LogisticRegressionClassifier and SklearnIntentClassifier map to it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.errors import InvalidConfig, ModelError
from server.nlu.linear_model import LinearModel, feature_matrix
from server.nlu.message import Message
from server.nlu.params import MAX_BLEND_WEIGHT, flag, number
from server.nlu.training_data import NLUTrainingData

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    # Training and loading only: building a classifier (as `data validate` does) imports none.
    from server.nlu.class_spread import ClassSpread
    from server.nlu.neighbours import Neighbours
    from server.nlu.scenarios import Scenarios

RANKING_LENGTH = 10
# `feature_weighting`: "class_spread" (the default) or "none" (plain TF-IDF features).
_WEIGHTINGS = ("class_spread", "none")
# `class_weight`: None (the default, every training sentence counts once) or "balanced"
# (each intent's errors weighted by the inverse of its number of sentences).
_CLASS_WEIGHTS = (None, "balanced")


class IntentClassifier:
    def __init__(self, config: dict[str, Any], name: str = "IntentClassifier"):
        self.config = config
        self.name = name
        self.c = (
            number(config, "C", 1.0, name, positive=True)
            if not isinstance(config.get("C"), list)
            else 1.0
        )
        self.temperature = number(config, "temperature", 5.0, name, positive=True)
        self.ranking_length = (
            number(config, "ranking_length", RANKING_LENGTH, name, whole=True, minimum=0)
            if config.get("ranking_length", RANKING_LENGTH) is not None
            else 0
        )
        self.weighting = str(config.get("feature_weighting", "class_spread"))
        if self.weighting not in _WEIGHTINGS:
            raise InvalidConfig(
                f"{name}: feature_weighting must be one of {', '.join(_WEIGHTINGS)}, "
                f"not {self.weighting!r}"
            )
        # Read at training only: a model an earlier release trained, which ignored the key
        # (so does Rasa), loads whatever it holds (e.g. sklearn's dict form).
        self.class_weight = config.get("class_weight")
        # `neighbour_weight` above 0 blends in each intent's `neighbours` nearest training
        # sentences (server/nlu/neighbours.py); 0, the default, is the linear model alone.
        self.neighbour_weight = number(
            config, "neighbour_weight", 0.0, name, minimum=0, maximum=MAX_BLEND_WEIGHT
        )
        self.neighbours = number(config, "neighbours", 1, name, whole=True, minimum=1)
        # false: the similarity leaves out character n-gram blocks (a tenth of the stored
        # values to read at a parse; eleventh NLU round, docs/benchmarks.md).
        self.neighbour_char_ngrams = flag(config, "neighbour_char_ngrams", True, name)
        # Keep the dense columns of the training sentences (a sentence embedding) as this
        # many singular directions; 0, the default, keeps them as they are.
        self.neighbour_dimensions = number(
            config, "neighbour_dimensions", 0, name, whole=True, minimum=0
        )
        # Above 0 (with neighbour_char_ngrams true): the character n-gram blocks are kept
        # as this many singular directions rather than as postings (twelfth NLU round).
        self.neighbour_char_dimensions = number(
            config, "neighbour_char_dimensions", 0, name, whole=True, minimum=0
        )
        # Above 0: a second nearest-sentence term over the dense blocks alone (those with
        # more than half their values set: the static table's), at full width, blended in
        # after the first; 0, the default, is off (twenty-third NLU round, nlu6).
        self.dense_neighbour_weight = number(
            config, "dense_neighbour_weight", 0.0, name, minimum=0, maximum=MAX_BLEND_WEIGHT
        )
        # Above 0: when the intent names share scenarios (`alarm_query`, `alarm_set`: the part
        # before `scenario_separator`), a second linear model scores the scenarios and each
        # intent gets its scenario's score, standardised, times this weight
        # (server/nlu/scenarios.py); 0, the default, is off.
        self.scenario_weight = number(
            config, "scenario_weight", 0.0, name, minimum=0, maximum=MAX_BLEND_WEIGHT
        )
        self.scenario_separator = config.get("scenario_separator", "_")
        if not isinstance(self.scenario_separator, str) or not self.scenario_separator:
            raise InvalidConfig(
                f"{name}: scenario_separator must be a non-empty string, "
                f"not {self.scenario_separator!r}"
            )
        self.model_: LinearModel | None = None
        self.spread_: ClassSpread | None = None
        self.neighbours_: Neighbours | None = None
        self.dense_neighbours_: Neighbours | None = None
        self.scenarios_: Scenarios | None = None

    def train(self, messages: list[Message], data: NLUTrainingData) -> None:
        import numpy as np

        from server.nlu.class_spread import ClassSpread
        from server.nlu.neighbours import Neighbours
        from server.nlu.scenarios import Scenarios

        if self.class_weight not in _CLASS_WEIGHTS:
            raise InvalidConfig(
                f"{self.name}: class_weight must be null or 'balanced', not {self.class_weight!r}"
            )
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
        self.spread_ = None
        if self.weighting == "class_spread":
            widths = widths_of(pairs[0][0])
            self.spread_ = ClassSpread.fit(x, labels, widths)
            x = self.spread_.matrix(x)
        self.model_ = LinearModel.fit(
            x, labels, self.c, self.temperature, class_weight=self.class_weight
        )
        self.neighbours_ = None
        if self.neighbour_weight > 0 and len(self.model_.classes) > 1:
            index = {name: i for i, name in enumerate(self.model_.classes)}
            classes = np.asarray([index[label] for label in labels], np.int64)
            ranges = compressed = None
            widths, char_blocks = widths_of(pairs[0][0]), pairs[0][0].char_blocks
            if not self.neighbour_char_ngrams:
                ranges = _ranges_without(char_blocks, widths)
            elif self.neighbour_char_dimensions and char_blocks:
                others = [b for b in range(len(widths)) if b not in char_blocks]
                compressed = _ranges_without(others, widths)
            self.neighbours_ = Neighbours.fit(
                x,
                classes,
                len(index),
                self.neighbours,
                self.neighbour_weight,
                ranges,
                self.neighbour_dimensions or None,
                compressed,
                self.neighbour_char_dimensions,
            )
        self.dense_neighbours_ = None
        dense = None
        if self.dense_neighbour_weight > 0 and len(self.model_.classes) > 1:
            dense = _dense_ranges(x, widths_of(pairs[0][0]))
        if dense is not None and len(dense):
            index = {name: i for i, name in enumerate(self.model_.classes)}
            classes = np.asarray([index[label] for label in labels], np.int64)
            self.dense_neighbours_ = Neighbours.fit(
                x, classes, len(index), 1, self.dense_neighbour_weight, dense
            )
        self.scenarios_ = None
        if self.scenario_weight > 0 and len(self.model_.classes) > 1:
            self.scenarios_ = Scenarios.fit(
                x,
                labels,
                self.model_.classes,
                self.scenario_weight,
                self.scenario_separator,
                self.c,
            )

    def process(self, message: Message) -> None:
        if self.model_ is None:
            return
        model = self.model_
        indices, values = message.sparse_vector()
        if self.spread_ is not None:
            values = self.spread_.row(indices, values)
        scores = model.scores(indices, values)
        if self.neighbours_ is not None:
            scores = self.neighbours_.blend(scores, indices, values)
        if self.dense_neighbours_ is not None:
            scores = self.dense_neighbours_.blend(scores, indices, values)
        if self.scenarios_ is not None:
            scores = self.scenarios_.blend(scores, indices, values)
        confidences = model.confidences(scores)
        order = confidences.argsort()[::-1]
        if self.ranking_length > 0:
            order = order[: self.ranking_length]
        names = model.classes
        ranking = [
            {"name": names[i], "confidence": confidence}
            for i, confidence in zip(order.tolist(), confidences.take(order).tolist(), strict=True)
        ]
        message.intent = dict(ranking[0])
        message.intent_ranking = ranking

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        if self.model_ is None:
            return {"trained": False}
        state = {"trained": True, **self.model_.write(directory, prefix)}
        if self.spread_ is not None:
            self.spread_.write(directory, prefix)
            state["class_spread"] = True
        if self.neighbours_ is not None:
            state.update(self.neighbours_.write(directory, prefix))
        if self.dense_neighbours_ is not None:
            state["dense_neighbours"] = self.dense_neighbours_.write(directory, prefix + "dense_")
        if self.scenarios_ is not None:
            state.update(self.scenarios_.write(directory, prefix))
        return state

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> IntentClassifier:
        from server.nlu.class_spread import ClassSpread
        from server.nlu.scenarios import Scenarios

        classifier = cls(config, name)
        if state.get("trained"):
            model = classifier.model_ = LinearModel.read(directory, prefix, state)
            width, n_classes = model.weights.shape[0], len(model.classes)
            if state.get("class_spread"):
                classifier.spread_ = ClassSpread.read(directory, prefix, width)
            if "neighbours" in state:
                classifier.neighbours_ = _read_neighbours(
                    directory, prefix, width, n_classes, state
                )
            if "dense_neighbours" in state:
                dense = state["dense_neighbours"]
                if not isinstance(dense, dict):
                    raise ModelError("intent dense_neighbours must be an object")
                try:
                    classifier.dense_neighbours_ = _read_neighbours(
                        directory, prefix + "dense_", width, n_classes, dense
                    )
                except ModelError as e:
                    if type(e) is not ModelError:  # a refusal of its own kind stays one
                        raise
                    # The reader's words ("intent neighbours ...") name either term.
                    raise ModelError(f"intent dense_neighbours: {e}") from e
            if "scenario_weight" in state:
                classifier.scenarios_ = Scenarios.read(directory, prefix, width, n_classes, state)
        return classifier


def _read_neighbours(
    directory: Path, prefix: str, width: int, n_classes: int, state: dict[str, Any]
) -> Neighbours:
    """A nearest-sentence term from its arrays under `prefix` and its keys in `state`."""
    from server.nlu.neighbours import Neighbours

    return Neighbours.read(
        directory,
        prefix,
        width,
        n_classes,
        state.get("neighbours"),
        state.get("neighbour_weight"),
        state.get("neighbour_ranges", False),
        state.get("neighbour_projection", False),
        state.get("neighbour_compressed", False),
    )


def widths_of(message: Message) -> list[int]:
    return [width for _, _, width in message.blocks]


def _dense_ranges(x: sp.csr_matrix, widths: list[int]) -> np.ndarray:
    """The [start, end) column ranges of the blocks with more than half their values set
    in the training rows `x` (a dense embedding's block; n-gram blocks are mostly zeros)."""
    import numpy as np

    ends = np.cumsum(widths, dtype=np.int64)
    set_per_column = np.diff(x.tocsc().indptr)
    dense = [
        (int(end - width), int(end))
        for width, end in zip(widths, ends, strict=True)
        if width and set_per_column[end - width : end].sum() > 0.5 * width * x.shape[0]
    ]
    return np.asarray(dense, np.int64).reshape(-1, 2)


def _ranges_without(skipped: list[int], widths: list[int]) -> np.ndarray:
    """The [start, end) column ranges of every block but the `skipped` ones."""
    import numpy as np

    ends = np.cumsum(widths, dtype=np.int64)
    kept = [
        (int(end - width), int(end))
        for block, (width, end) in enumerate(zip(widths, ends, strict=True))
        if block not in skipped and width
    ]
    return np.asarray(kept, np.int64).reshape(-1, 2)
