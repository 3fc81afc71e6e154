"""The optional dense featurizer (`botserver[dense]`): real MiniLM sentence embeddings,
the LanguageModelFeaturizer mapping, persistence, and the errors when the extra is missing."""

import json
from typing import Any

import numpy as np
import pytest

from server.errors import InvalidConfig, ModelError
from server.nlu import registry
from server.nlu.dense_featurizer import WIDTH, DenseFeaturizer, dense_available, shared_encoder
from server.nlu.pipeline import NLUPipeline

needs_dense = pytest.mark.skipif(
    not dense_available(), reason="the dense extra is not installed: pip install '.[dense]'"
)

DENSE_PIPELINE: list[dict[str, Any]] = [
    {"name": "WhitespaceTokenizer"},
    {"name": "CountVectorsFeaturizer"},
    {"name": "LanguageModelFeaturizer", "model_name": "bert"},
    {"name": "DIETClassifier", "entity_recognition": False},
    {"name": "FallbackClassifier", "threshold": 0.3},
]


@pytest.fixture(scope="module")
def dense_moodbot(load_bot):
    return NLUPipeline.train(load_bot("moodbot"), DENSE_PIPELINE)


@needs_dense
def test_embeddings_are_unit_vectors_that_put_paraphrases_close():
    vectors = shared_encoder().embed(
        ["I want to book a table for two", "reserve a restaurant for 2 people", "play some jazz"]
    )
    assert vectors.shape == (3, WIDTH)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    paraphrase, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert paraphrase > unrelated + 0.3


@needs_dense
def test_batched_and_single_embeddings_agree():
    texts = ["hi", "a much longer sentence about the weather in Berlin tomorrow"]
    batch = shared_encoder().embed(texts)
    single = np.vstack([shared_encoder().embed([t]) for t in texts])
    assert np.allclose(batch, single, atol=1e-4)


@needs_dense
def test_language_model_featurizer_maps_to_dense_with_one_warning(dense_moodbot):
    mapping = [w for w in dense_moodbot.warnings if "equivalents" in w]
    assert len(mapping) == 1
    assert "LanguageModelFeaturizer -> DenseFeaturizer" in mapping[0]
    result = dense_moodbot.parse("hi there")
    assert result["intent"]["name"] == "greet"
    assert result["intent"]["confidence"] > 0.7


@needs_dense
def test_dense_pipeline_round_trips_through_data_files(dense_moodbot, tmp_path):
    dense_moodbot.persist(tmp_path)
    assert not list(tmp_path.glob("*.pkl"))
    loaded = NLUPipeline.load(tmp_path)
    for text in ["I am very sad", "yes please", "goodbye"]:
        assert loaded.parse(text) == dense_moodbot.parse(text)


@needs_dense
def test_a_model_from_another_embedding_model_fails_to_load(dense_moodbot, tmp_path):
    dense_moodbot.persist(tmp_path)
    manifest = json.loads((tmp_path / "pipeline.json").read_text())
    for entry in manifest["components"]:
        if entry["key"] == "DenseFeaturizer":
            entry["state"]["model_sha256"] = "0" * 64
    (tmp_path / "pipeline.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="another embedding model"):
        NLUPipeline.load(tmp_path)


@needs_dense
def test_a_model_trained_with_more_than_64_threads_still_loads(dense_moodbot, tmp_path):
    # `threads: 100` trained before threads were capped at 64: the model loads (on 64
    # threads) and parses as it did, where it failed to load with a config error.
    dense_moodbot.persist(tmp_path)
    manifest = json.loads((tmp_path / "pipeline.json").read_text())
    for entry in manifest["components"]:
        if entry["key"] == "DenseFeaturizer":
            entry["config"].update(threads=100, train_threads=100)
    (tmp_path / "pipeline.json").write_text(json.dumps(manifest))
    loaded = NLUPipeline.load(tmp_path)
    assert loaded.parse("I am very sad") == dense_moodbot.parse("I am very sad")
    with pytest.raises(InvalidConfig, match="'threads' must be between 1 and 64"):
        DenseFeaturizer({"threads": 100})  # training with it is still refused


def test_without_the_extra_dense_names_fall_back_or_fail_clearly(load_bot, monkeypatch):
    monkeypatch.setattr(registry, "dense_available", lambda: False)
    pipeline = NLUPipeline.train(load_bot("moodbot"), DENSE_PIPELINE)
    mapping = [w for w in pipeline.warnings if "equivalents" in w][0]
    assert "LanguageModelFeaturizer -> CountVectorsFeaturizer" in mapping
    assert "botserver[dense]" in mapping
    assert pipeline.parse("hi there")["intent"]["name"] == "greet"
    with pytest.raises(InvalidConfig, match=r"botserver\[dense\]"):
        NLUPipeline.train(load_bot("moodbot"), [{"name": "DenseFeaturizer"}])


def test_word_vector_featurizers_stay_sparse_even_with_the_extra(load_bot):
    pipeline = NLUPipeline.train(
        load_bot("moodbot"),
        [{"name": "SpacyFeaturizer"}, {"name": "DIETClassifier", "entity_recognition": False}],
    )
    mapping = [w for w in pipeline.warnings if "equivalents" in w][0]
    assert "SpacyFeaturizer -> CountVectorsFeaturizer" in mapping
    assert "DenseFeaturizer" not in mapping
