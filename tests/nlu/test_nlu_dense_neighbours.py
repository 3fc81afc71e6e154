"""The intent classifier's second nearest-sentence term over the dense blocks alone
(`dense_neighbour_weight`): a message whose embedding nearly repeats one training sentence's
leans towards that sentence's intent, whatever the words say."""

from pathlib import Path

import numpy as np
import pytest

from server.errors import InvalidConfig, ModelError
from server.nlu.intent_classifier import IntentClassifier
from server.nlu.message import Message
from server.nlu.training_data import Example, NLUTrainingData

# (intent, word column, embedding): the word "0" says `order` four times in five; the one
# `cancel` sentence with it has an embedding of its own, which the message repeats.
SENTENCES = [
    ("order", 0, (1.0, 0.10)),
    ("order", 0, (1.0, 0.12)),
    ("order", 0, (0.9, 0.15)),
    ("order", 0, (1.0, 0.05)),
    ("cancel", 1, (-1.0, 0.10)),
    ("cancel", 1, (-0.9, 0.12)),
    ("cancel", 1, (-1.0, 0.08)),
    ("cancel", 0, (0.1, 1.00)),
]
MESSAGE = (0, (0.12, 1.0))


def _message(word: int, embedding: tuple[float, float]) -> Message:
    message = Message(text=f"word{word}")
    # Small embedding values: the linear model leans on the word; the term compares cosines.
    message.blocks = [([word], [1.0], 3), ([0, 1], [0.05 * v for v in embedding], 2)]
    return message


def _train(**options: float) -> IntentClassifier:
    classifier = IntentClassifier(dict(options), "DIETClassifier")
    data = NLUTrainingData(examples=[Example(f"word{w}", i) for i, w, _ in SENTENCES])
    classifier.train([_message(w, e) for _, w, e in SENTENCES], data)
    return classifier


def _intent(classifier: IntentClassifier) -> str:
    message = _message(*MESSAGE)
    classifier.process(message)
    assert message.intent is not None
    return str(message.intent["name"])


def test_the_nearest_embedding_pulls_the_intent_towards_its_own():
    assert _intent(_train()) == "order"
    assert _intent(_train(dense_neighbour_weight=0)) == "order"
    assert _intent(_train(dense_neighbour_weight=5)) == "cancel"


def test_the_term_survives_persistence(tmp_path: Path):
    trained = _train(dense_neighbour_weight=5)
    state = trained.state(tmp_path, "c_")
    reloaded = IntentClassifier.from_state({}, state, tmp_path, "c_", "DIETClassifier")
    assert _intent(reloaded) == "cancel"
    assert list(tmp_path.glob("c_dense_nn_dense.npy"))


def test_without_a_dense_block_the_term_is_left_out(tmp_path: Path):
    classifier = IntentClassifier({"dense_neighbour_weight": 5}, "DIETClassifier")
    messages = [_message(w, e) for _, w, e in SENTENCES]
    for message in messages:
        message.blocks = message.blocks[:1]
    data = NLUTrainingData(examples=[Example(f"word{w}", i) for i, w, _ in SENTENCES])
    classifier.train(messages, data)
    assert "dense_neighbours" not in classifier.state(tmp_path, "c_")


def test_a_negative_weight_is_a_config_error():
    with pytest.raises(InvalidConfig, match="dense_neighbour_weight"):
        _train(dense_neighbour_weight=-1)


def test_a_damaged_state_fails_loading_with_a_clear_error(tmp_path: Path):
    state = _train(dense_neighbour_weight=5).state(tmp_path, "c_")
    with pytest.raises(ModelError, match="dense_neighbours"):
        IntentClassifier.from_state(
            {}, {**state, "dense_neighbours": 1}, tmp_path, "c_", "DIETClassifier"
        )
    np.save(tmp_path / "c_dense_nn_starts.npy", np.array([0, 1, 2], np.int64))
    with pytest.raises(ModelError, match="neighbour"):
        IntentClassifier.from_state({}, state, tmp_path, "c_", "DIETClassifier")


@pytest.mark.parametrize(
    ("dense", "message"),
    [
        ({}, "intent neighbours must be a whole number"),
        ({"neighbours": 1, "neighbour_weight": -1}, "intent neighbour weight must be a number"),
    ],
)
def test_a_damaged_dense_term_names_the_dense_term(tmp_path: Path, dense: dict, message: str):
    # Both terms share the reader: its error said "intent neighbours" for either.
    state = _train(dense_neighbour_weight=5).state(tmp_path, "c_")
    with pytest.raises(ModelError, match=f"^intent dense_neighbours: {message}"):
        IntentClassifier.from_state(
            {}, {**state, "dense_neighbours": dense}, tmp_path, "c_", "DIETClassifier"
        )
