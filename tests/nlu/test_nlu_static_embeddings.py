"""StaticEmbeddingFeaturizer (`botserver[dense]`): MiniLM distilled into a token table at
training time, averaged at parse time without running the transformer."""

import json
from typing import Any

import numpy as np
import pytest

from server.errors import InvalidConfig, ModelError
from server.nlu import dense_featurizer, registry, static_embeddings
from server.nlu.dense_featurizer import dense_available
from server.nlu.message import Message
from server.nlu.pipeline import NLUPipeline
from server.nlu.static_embeddings import StaticEmbeddingFeaturizer

needs_dense = pytest.mark.skipif(
    not dense_available(), reason="the dense extra is not installed: pip install '.[dense]'"
)

# A few hundred common tokens keep the table (and the test) small.
STATIC = {"name": "StaticEmbeddingFeaturizer", "common_tokens": 300}
PIPELINE: list[dict[str, Any]] = [
    {"name": "WhitespaceTokenizer"},
    {"name": "CountVectorsFeaturizer"},
    STATIC,
    {"name": "DIETClassifier", "entity_recognition": False},
]


@pytest.fixture(scope="module")
def static_moodbot(load_bot):
    return NLUPipeline.train(load_bot("moodbot"), PIPELINE)


def _vector(featurizer: StaticEmbeddingFeaturizer, text: str) -> np.ndarray:
    message = Message(text)
    featurizer.process(message)
    indices, values, width = message.blocks[0]
    assert width == featurizer.dimensions == 128
    vector = np.zeros(width)
    vector[indices] = values
    return vector


@needs_dense
def test_sentences_become_unit_vectors_that_put_related_words_close():
    featurizer = StaticEmbeddingFeaturizer({"common_tokens": 400})
    featurizer.train([Message(t) for t in ["play some music", "the river water"]], None)
    music, water, song = (_vector(featurizer, t) for t in ["music", "river water", "a song"])
    assert np.allclose([np.linalg.norm(music), np.linalg.norm(song)], 1.0, atol=1e-3)
    # "song" is not in the training sentences: the common tokens cover it.
    assert song @ music > song @ water + 0.1


@needs_dense
def test_a_message_without_known_tokens_adds_an_empty_block():
    featurizer = StaticEmbeddingFeaturizer({"common_tokens": 0})
    featurizer.train([Message("hello there")], None)
    message = Message("zzz")
    featurizer.process(message)
    assert message.blocks == [([], [], 128)]


@needs_dense
def test_round_trip_through_npy_files_without_running_the_model(static_moodbot, tmp_path):
    static_moodbot.persist(tmp_path)
    assert not list(tmp_path.glob("*.pkl"))
    table = next(tmp_path.glob("*static_table.npy"))
    assert np.load(table, allow_pickle=False).dtype == np.float16
    dense_featurizer._encoders.clear()
    loaded = NLUPipeline.load(tmp_path)
    for text in ["I am very sad", "yes please", "goodbye", "hi there"]:
        assert loaded.parse(text) == static_moodbot.parse(text)
    assert loaded.parse("hi there")["intent"]["name"] == "greet"
    assert not dense_featurizer._encoders  # parse and load never loaded the ONNX model
    assert not loaded.blocking


@needs_dense
def test_a_model_trained_with_more_than_64_threads_still_loads(static_moodbot, tmp_path):
    # `train_threads: 100` trained before they were capped at 64 (a parse uses none): the
    # model loads, where it failed to with a config error.
    static_moodbot.persist(tmp_path)
    manifest = json.loads((tmp_path / "pipeline.json").read_text())
    for entry in manifest["components"]:
        if entry["key"] == "StaticEmbeddingFeaturizer":
            entry["config"]["train_threads"] = "100"  # as a ${VAR} gives it
    (tmp_path / "pipeline.json").write_text(json.dumps(manifest))
    loaded = NLUPipeline.load(tmp_path)
    assert loaded.parse("hi there") == static_moodbot.parse("hi there")


@needs_dense
def test_a_table_that_does_not_match_its_token_ids_fails_to_load(static_moodbot, tmp_path):
    static_moodbot.persist(tmp_path)
    table = next(tmp_path.glob("*static_table.npy"))
    np.save(table, np.zeros((3, 128), np.float16), allow_pickle=False)
    with pytest.raises(ModelError, match="does not match"):
        NLUPipeline.load(tmp_path)


@needs_dense
def test_a_model_from_another_embedding_model_fails_to_load(static_moodbot, tmp_path):
    static_moodbot.persist(tmp_path)
    manifest = json.loads((tmp_path / "pipeline.json").read_text())
    for entry in manifest["components"]:
        if entry["key"] == "StaticEmbeddingFeaturizer":
            entry["state"]["model_sha256"] = "0" * 64
    (tmp_path / "pipeline.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="another embedding model"):
        NLUPipeline.load(tmp_path)


@needs_dense
def test_loading_without_the_extra_names_it(static_moodbot, tmp_path, monkeypatch):
    static_moodbot.persist(tmp_path)
    monkeypatch.setattr(dense_featurizer, "dense_available", lambda: False)
    with pytest.raises(ModelError, match=r"botserver\[dense\]"):
        NLUPipeline.load(tmp_path)


def test_training_without_the_extra_fails_with_the_install_hint(load_bot, monkeypatch):
    monkeypatch.setattr(registry, "dense_available", lambda: False)
    with pytest.raises(InvalidConfig, match=r"StaticEmbeddingFeaturizer .*botserver\[dense\]"):
        NLUPipeline.train(load_bot("moodbot"), PIPELINE)


@needs_dense
def test_bigrams_are_counted_as_pairs_of_adjacent_words_in_wordpiece_ids():
    tokenizer = static_embeddings._tokenizer()
    the, top, up, my, card = (tokenizer.token_to_id(t) for t in ["the", "top", "up", "my", "card"])
    counts = static_embeddings.bigram_counts(["top up my card", "top up", "card"])
    assert counts[(top, up)] == 2 and counts[(up, my)] == 1
    assert (up, card) not in counts  # not adjacent
    pieces = tuple(tokenizer.encode("topups", add_special_tokens=False).ids)
    assert len(pieces) > 1  # a word of several pieces stays one word
    assert static_embeddings.bigram_counts(["the topups"]) == {(the, *pieces): 1}


@needs_dense
def test_contextual_rows_move_tokens_towards_their_states_in_phrases_by_occurrences():
    tokenizer = static_embeddings._tokenizer()
    words = ["top", "up", "card", "music", "river", "song", "bank", "money"]
    ids = np.array([tokenizer.token_to_id(t) for t in words])
    encoder = dense_featurizer.shared_encoder(1)
    static = encoder.token_vectors(ids)
    top, up = (int(i) for i in ids[:2])
    assert static_embeddings.contextual_rows(ids, static, {}, encoder) is static
    (top_up,) = encoder.phrase_states([(top, up)])
    rare = static_embeddings.contextual_rows(ids, static, {(top, up): 1.0}, encoder)
    often = static_embeddings.contextual_rows(ids, static, {(top, up): 50.0}, encoder)
    # The more often a token occurs in context, the nearer its row to its state there.
    for row, state in ((0, top_up[0]), (1, top_up[1])):
        near, far = (np.linalg.norm(t[row] - state) for t in (often, rare))
        assert near < far and near < np.linalg.norm(static[row] - state)
    # Tokens without a phrase are mapped into the contextual space, not left as they were.
    assert rare.shape == static.shape and np.isfinite(rare).all()
    assert not np.allclose(rare[2:], static[2:], atol=1e-3)


@needs_dense
def test_the_bigram_context_changes_the_rows_of_tokens_seen_in_frequent_bigrams():
    texts = ["top up my card", "how do i top up", "card payment failed", "top up failed"]
    tables = {}
    for context in ("none", "bigrams"):
        featurizer = StaticEmbeddingFeaturizer({"common_tokens": 0, "context": context})
        featurizer.train([Message(t) for t in texts], None)
        tables[context] = featurizer
    assert np.array_equal(tables["none"].token_ids_, tables["bigrams"].token_ids_)
    assert not np.allclose(tables["none"].table_, tables["bigrams"].table_, atol=1e-2)
    with pytest.raises(InvalidConfig, match="context must be one of"):
        StaticEmbeddingFeaturizer({"context": "trigrams"})


@needs_dense
def test_sentence_distillation_fits_the_table_to_minilm_sentence_embeddings():
    texts = [
        "top up my card",
        "how do i top up",
        "card payment failed",
        "top up failed",
        "play some music",
        "the river water is cold",
    ]
    teacher = dense_featurizer.shared_encoder(1).embed(texts)

    def train(config: dict) -> tuple[StaticEmbeddingFeaturizer, np.ndarray]:
        featurizer = StaticEmbeddingFeaturizer({"common_tokens": 300, "context": "none", **config})
        featurizer.train([Message(t) for t in texts], None)
        vectors = np.stack([_vector(featurizer, t) for t in texts])
        return featurizer, vectors

    plain, plain_vectors = train({})
    fitted, fitted_vectors = train({"sentences": 6, "sentence_ridge": 0.01})
    again, _ = train({"sentences": 6, "sentence_ridge": 0.01})
    assert np.array_equal(fitted.table_, again.table_)  # deterministic
    assert np.array_equal(fitted.token_ids_, plain.token_ids_)

    # The fitted table orders the pairs of sentences by similarity more like the teacher
    # (the table is centred, so the similarities themselves are shifted).
    def agreement(vectors: np.ndarray) -> float:
        pairs = np.triu_indices(len(texts), 1)
        return float(np.corrcoef((vectors @ vectors.T)[pairs], (teacher @ teacher.T)[pairs])[0, 1])

    assert agreement(fitted_vectors) > agreement(plain_vectors) + 0.1
    with pytest.raises(InvalidConfig, match="must be at least 0"):
        StaticEmbeddingFeaturizer({"sentences": -1})


@needs_dense
def test_more_sentences_than_the_data_holds_fit_to_every_sentence():
    # Before, `sentences: 1000000000000` asked numpy for a 7 TiB array of sentence indices:
    # a MemoryError traceback from `botserver train` (a 500 from POST /model/train), and a
    # smaller huge value took that much memory for a few messages.
    texts = ["top up my card", "card payment failed", "play some music", "play some music"]

    def table(sentences: int) -> np.ndarray:
        featurizer = StaticEmbeddingFeaturizer(
            {"common_tokens": 0, "context": "none", "sentences": sentences}
        )
        featurizer.train([Message(t) for t in texts], None)
        return featurizer.table_

    assert np.array_equal(table(10**12), table(3))


@needs_dense
def test_a_texts_ids_by_pieces_are_the_tokenizers_ids_of_the_whole_text(monkeypatch):
    """A parse looks each space-separated piece up (the new ones in one call to the
    tokenizer): the ids are those of the whole text, for any text, from the cache too."""
    from tests.nlu.test_nlu_components import HOSTILE_TEXTS

    monkeypatch.setattr(static_embeddings, "_piece_ids", {})
    texts = [*HOSTILE_TEXTS, "  two  spaces ", "U.S.A. can't", "ΑΣ Σ σς", "x\u0301 \u0301x"]
    for text in texts * 2:
        assert static_embeddings.text_token_ids(text) == static_embeddings._token_ids([text])[0]
    long_piece = "y" * (static_embeddings.CACHED_PIECE + 1)
    assert long_piece not in static_embeddings._piece_ids
    monkeypatch.setattr(static_embeddings, "PIECE_CACHE", 3)
    static_embeddings._piece_ids.clear()
    assert (
        static_embeddings.text_token_ids("one two three four five")
        == (static_embeddings._token_ids(["one two three four five"])[0])
    )
    assert list(static_embeddings._piece_ids) == ["three", "four", "five"]


@needs_dense
def test_parses_in_threads_share_the_piece_cache_while_it_lets_pieces_go(monkeypatch):
    """Threads parsing at once, the cache full and letting pieces go all the while: every
    text still gets the tokenizer's ids, and no parse fails on another's change."""
    import threading

    monkeypatch.setattr(static_embeddings, "_piece_ids", {})
    monkeypatch.setattr(static_embeddings, "PIECE_CACHE", 8)
    texts = [" ".join(f"w{(i * 7 + j) % 40}" for j in range(6)) for i in range(40)]
    expected = {text: static_embeddings._token_ids([text])[0] for text in texts}
    failures: list[BaseException] = []

    def parse() -> None:
        try:
            for _ in range(10):
                for text in texts:
                    assert static_embeddings.text_token_ids(text) == expected[text]
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            failures.append(e)

    threads = [threading.Thread(target=parse) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(static_embeddings._piece_ids) <= 8 + len(threads)
