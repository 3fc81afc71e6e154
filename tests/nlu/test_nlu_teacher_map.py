"""TeacherMapFeaturizer (`botserver[dense]` to train): MiniLM's sentence embedding predicted
from the other features by a map learned at training time; a parse runs no transformer."""

import json
from typing import Any

import numpy as np
import pytest

from server.errors import InvalidConfig, ModelError
from server.nlu import dense_featurizer, registry
from server.nlu.count_vectors import CountVectorsFeaturizer
from server.nlu.dense_featurizer import dense_available
from server.nlu.linear_model import feature_matrix
from server.nlu.message import Message
from server.nlu.pipeline import NLUPipeline
from server.nlu.teacher_map import TeacherMapFeaturizer
from server.nlu.tokenizer import tokenize

needs_dense = pytest.mark.skipif(
    not dense_available(), reason="the dense extra is not installed: pip install '.[dense]'"
)

PIPELINE: list[dict[str, Any]] = [
    {"name": "WhitespaceTokenizer"},
    {"name": "CountVectorsFeaturizer"},
    {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4},
    {"name": "TeacherMapFeaturizer", "dimensions": 16},
    {"name": "DIETClassifier", "entity_recognition": False},
]


@pytest.fixture(scope="module")
def mapped_moodbot(load_bot):
    return NLUPipeline.train(load_bot("moodbot"), PIPELINE)


def _featurized(texts: list[str]) -> list[Message]:
    words = CountVectorsFeaturizer({"analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4})
    messages = [Message(t, tokenize(t)) for t in texts]
    words.train(messages, None)
    return messages


TEXTS = [
    "play some music",
    "put on a song",
    "turn the volume up",
    "what is the weather today",
    "will it rain tomorrow",
    "is it sunny outside",
    "book a table for two",
    "reserve a restaurant tonight",
    "set an alarm for seven",
    "wake me up at six",
    "tell me a joke",
    "say something funny",
]


def _cosines(rows: np.ndarray) -> np.ndarray:
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    upper = np.triu_indices(len(rows), 1)
    return (rows @ rows.T)[upper]


@needs_dense
def test_the_block_carries_the_teachers_similarities_between_sentences():
    messages = _featurized(TEXTS)
    raw = feature_matrix(messages, messages[0].feature_width).toarray()
    featurizer = TeacherMapFeaturizer({"dimensions": 11, "ridge": 0.01})
    featurizer.train(messages, None)
    blocks = np.zeros((len(messages), 11))
    for row, message in enumerate(messages):
        indices, values, width = message.blocks[-1]
        assert width == 11
        blocks[row, indices] = values
    assert np.allclose(np.linalg.norm(blocks, axis=1), 1.0, atol=1e-3)
    teacher = _cosines(dense_featurizer.shared_encoder(1).embed(TEXTS))
    # Character n-grams alone do not know that "music" and "song" go together; the block
    # learned from the teacher's embeddings follows the teacher's similarities closely.
    with_block = np.corrcoef(_cosines(blocks), teacher)[0, 1]
    without = np.corrcoef(_cosines(raw), teacher)[0, 1]
    assert with_block > 0.9 and with_block > without + 0.2


@needs_dense
def test_weight_scales_the_block_and_a_parse_gives_the_training_block():
    plain = TeacherMapFeaturizer({"dimensions": 8})
    heavy = TeacherMapFeaturizer({"dimensions": 8, "weight": 2})
    trained = []
    for featurizer in (plain, heavy):
        messages = _featurized(TEXTS)
        featurizer.train(messages, None)
        trained.append(messages[1].blocks[-1])
    parsed = []
    for featurizer in (plain, heavy):
        message = _featurized(TEXTS)[1]  # the same vocabulary: the char_wb block only
        featurizer.process(message)
        parsed.append(message.blocks[-1])
    for (t_indices, t_values, _), (p_indices, p_values, _) in zip(trained, parsed, strict=True):
        assert p_indices == t_indices == list(range(8))
        assert p_values == pytest.approx(t_values, abs=1e-6)
    assert parsed[1][1] == pytest.approx([2 * v for v in parsed[0][1]], abs=1e-6)


@needs_dense
def test_round_trip_through_npy_files_without_running_the_model(mapped_moodbot, tmp_path):
    mapped_moodbot.persist(tmp_path)
    assert not list(tmp_path.glob("*.pkl"))
    mapping = np.load(next(tmp_path.glob("*teacher_map.npy")), allow_pickle=False)
    assert mapping.dtype == np.float16 and mapping.shape[1] == 16
    dense_featurizer._encoders.clear()
    loaded = NLUPipeline.load(tmp_path)
    for text in ["I am very sad", "yes please", "goodbye", "hi there", ""]:
        assert loaded.parse(text) == mapped_moodbot.parse(text)
    assert loaded.parse("hi there")["intent"]["name"] == "greet"
    assert not dense_featurizer._encoders  # load and parse never loaded the ONNX model


@needs_dense
def test_a_model_trained_with_more_than_64_threads_still_loads(mapped_moodbot, tmp_path):
    # `train_threads: 100` trained before they were capped at 64 (a parse uses none): the
    # model loads, where it failed to with a config error.
    mapped_moodbot.persist(tmp_path)
    manifest = json.loads((tmp_path / "pipeline.json").read_text())
    for entry in manifest["components"]:
        if entry["key"] == "TeacherMapFeaturizer":
            entry["config"]["train_threads"] = 100
    (tmp_path / "pipeline.json").write_text(json.dumps(manifest))
    loaded = NLUPipeline.load(tmp_path)
    assert loaded.parse("hi there") == mapped_moodbot.parse("hi there")


@needs_dense
def test_a_map_of_another_width_fails_to_load(mapped_moodbot, tmp_path):
    mapped_moodbot.persist(tmp_path)
    np.save(next(tmp_path.glob("*teacher_map.npy")), np.zeros((3, 5), np.float16))
    with pytest.raises(ModelError, match="not 16 wide"):
        NLUPipeline.load(tmp_path)


@needs_dense
def test_a_map_that_is_not_numbers_fails_to_load(mapped_moodbot, tmp_path):
    mapped_moodbot.persist(tmp_path)
    np.save(next(tmp_path.glob("*teacher_map.npy")), np.array([["a"]]))
    with pytest.raises(ModelError, match="teacher_map"):
        NLUPipeline.load(tmp_path)
    manifest = json.loads((tmp_path / "pipeline.json").read_text())
    assert any(e["key"] == "TeacherMapFeaturizer" for e in manifest["components"])


def test_options_out_of_range_are_refused():
    with pytest.raises(InvalidConfig, match="'dimensions' must be between 1 and 384"):
        TeacherMapFeaturizer({"dimensions": 500})
    with pytest.raises(InvalidConfig, match="'ridge' must be above 0"):
        TeacherMapFeaturizer({"ridge": 0})
    with pytest.raises(InvalidConfig, match="'sentences' must be at least 1"):
        TeacherMapFeaturizer({"sentences": 0})


@needs_dense
def test_without_a_featurizer_before_it_training_says_so(load_bot):
    with pytest.raises(InvalidConfig, match="needs a featurizer before it"):
        TeacherMapFeaturizer({}).train([Message("hello", tokenize("hello"))], None)


def test_training_without_the_extra_fails_with_the_install_hint(load_bot, monkeypatch):
    monkeypatch.setattr(registry, "dense_available", lambda: False)
    with pytest.raises(InvalidConfig, match=r"TeacherMapFeaturizer .*botserver\[dense\]"):
        NLUPipeline.train(load_bot("moodbot"), PIPELINE)


@needs_dense
def test_more_sentences_than_messages_embed_every_message():
    # Before, `sentences: 1000000000000` asked numpy for a 7 TiB array of message indices:
    # a MemoryError traceback from `botserver train` (a 500 from POST /model/train).
    def trained_map(sentences: int) -> np.ndarray:
        featurizer = TeacherMapFeaturizer({"dimensions": 8, "sentences": sentences})
        featurizer.train(_featurized(TEXTS), None)
        assert featurizer.map_ is not None
        return featurizer.map_

    assert np.array_equal(trained_map(10**12), trained_map(len(TEXTS)))
