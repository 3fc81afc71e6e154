"""The intent classifier's nearest-training-sentence blend (`neighbour_weight`, `neighbours`,
`neighbour_char_ngrams`)."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from server.errors import InvalidConfig, ModelError
from server.nlu import neighbours
from server.nlu.neighbours import Neighbours
from server.nlu.pipeline import NLUPipeline
from server.training.nlu_yaml import read_nlu_yaml

DATA = """
nlu:
- intent: greet
  examples: |
    - hello there
    - hi
    - hey
    - good morning
    - hello
    - hello friend
- intent: goodbye
  examples: |
    - bye
    - see you later
    - good night
    - goodbye
    - hello and goodbye my dear old friend
"""

PIPELINE: list[dict[str, Any]] = [
    {"name": "WhitespaceTokenizer"},
    {"name": "CountVectorsFeaturizer"},
    {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4},
]


def _train(**options: Any) -> NLUPipeline:
    return NLUPipeline.train(
        read_nlu_yaml(DATA), PIPELINE + [{"name": "DIETClassifier", **options}]
    )


def test_the_nearest_training_sentence_pulls_the_intent_towards_its_own():
    # The linear model reads "hello" as greet; the one training sentence this message nearly
    # repeats is a goodbye. Off (the default) the linear model decides; with a large weight
    # the neighbour does.
    text = "hello dear old friend"
    assert _train().parse(text)["intent"]["name"] == "greet"
    assert _train(neighbour_weight=0).parse(text)["intent"]["name"] == "greet"
    assert _train(neighbour_weight=5).parse(text)["intent"]["name"] == "goodbye"


def _parses_the_same_after_reloading(trained: NLUPipeline, folder: Path) -> None:
    trained.persist(folder)
    reloaded = NLUPipeline.load(folder)
    for text in ("hello dear old friend", "helo deer olde frend", "good night", "", "zzz"):
        assert reloaded.parse(text) == trained.parse(text)


def test_the_blend_survives_persistence_as_npy_files(tmp_path: Path):
    _parses_the_same_after_reloading(_train(neighbour_weight=0.3, neighbours=2), tmp_path)
    assert any(p.name.endswith("nn_dense.npy") for p in tmp_path.rglob("*"))


def test_a_damaged_neighbour_state_fails_loading_with_a_clear_error(tmp_path: Path):
    _train(neighbour_weight=0.3).persist(tmp_path)
    (starts,) = [p for p in tmp_path.rglob("*nn_starts.npy")]
    np.save(starts, np.array([0, 1, 2], np.int64), allow_pickle=False)
    with pytest.raises(ModelError, match="neighbour"):
        NLUPipeline.load(tmp_path)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"neighbour_weight": -1}, "neighbour_weight"),
        ({"neighbours": 0}, "neighbours"),
        ({"neighbour_weight": 0.3, "neighbour_char_ngrams": "maybe"}, "neighbour_char_ngrams"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], key: str):
    with pytest.raises(InvalidConfig, match=key):
        _train(**options)


def test_a_weight_too_large_for_the_scores_is_refused_in_config_and_archive(tmp_path: Path):
    # 1e308 is a finite number, but the blended scores overflow: parses answered NaN
    # confidences, which JSON cannot carry (a 500 on every parse).
    with pytest.raises(InvalidConfig, match="neighbour_weight"):
        _train(neighbour_weight=1e308)
    _train(neighbour_weight=0.3).persist(tmp_path)
    manifest = tmp_path / "pipeline.json"
    # The state's copy (after the config's): the model as trained, its stored weight changed.
    config, state = manifest.read_text().rsplit('"neighbour_weight": 0.3', 1)
    manifest.write_text(f'{config}"neighbour_weight": 1e308{state}')
    with pytest.raises(ModelError, match="neighbour weight"):
        NLUPipeline.load(tmp_path)


def test_class_scores_are_the_mean_of_the_k_most_similar_sentences():
    # Columns 0-1 sparse, 2-3 dense (every row has them): stored and scored apart.
    x = sp.csr_matrix(
        np.array(
            [
                [1.0, 0.0, 0.0, 1.0],  # class 0
                [0.0, 1.0, 1.0, 0.2],  # class 1
                [1.0, 0.0, 1.0, 0.0],  # class 0
                [0.0, 1.0, 0.5, 0.5],  # class 1
            ]
        )
    )
    classes = np.array([0, 1, 0, 1])
    query_indices = np.array([0, 3])
    query_values = np.array([1.0, 1.0], np.float32)
    unit = x.toarray() / np.linalg.norm(x.toarray(), axis=1, keepdims=True)
    cosine = unit @ (np.array([1.0, 0.0, 0.0, 1.0]) / np.sqrt(2))
    nearest = Neighbours.fit(x, classes, 2, k=1, weight=1.0)
    assert len(nearest.dense_columns) == 2
    scores = nearest.class_scores(query_indices, query_values)
    assert scores == pytest.approx([cosine[[0, 2]].max(), cosine[[1, 3]].max()], rel=1e-6)
    two = Neighbours.fit(x, classes, 2, k=2, weight=1.0)
    scores = two.class_scores(query_indices, query_values)
    assert scores == pytest.approx([cosine[[0, 2]].mean(), cosine[[1, 3]].mean()], rel=1e-6)
    # No features: nothing to compare, the linear model's scores are kept.
    assert two.class_scores(np.zeros(0, np.int64), np.zeros(0, np.float32)) is None
    linear = np.array([0.2, -0.4])
    assert two.blend(linear, np.zeros(0, np.int64), np.zeros(0, np.float32)) is linear


def test_without_char_ngrams_the_nearest_sentence_is_found_by_words_only():
    # Misspelt, the message shares no word with any training sentence, only character
    # n-grams with the long goodbye: with them the neighbour pulls it to goodbye; without
    # them there is no neighbour to compare and the linear model decides.
    text = "helo deer olde frend"
    assert _train(neighbour_weight=5).parse(text)["intent"]["name"] == "goodbye"
    words_only = _train(neighbour_weight=5, neighbour_char_ngrams=False)
    assert words_only.parse(text)["intent"]["name"] == "greet"
    # A word it knows is still compared: "dear old friend" is the goodbye's.
    assert words_only.parse("hello dear old friend")["intent"]["name"] == "goodbye"


def test_the_word_only_blend_survives_persistence_and_stores_fewer_values(tmp_path: Path):
    every = _train(neighbour_weight=0.3)
    words_only = _train(neighbour_weight=0.3, neighbour_char_ngrams=False)
    _parses_the_same_after_reloading(words_only, tmp_path / "words")
    every.persist(tmp_path / "every")

    def stored(folder: Path) -> int:
        (data,) = folder.rglob("*nn_data.npy")
        (dense,) = folder.rglob("*nn_dense.npy")
        return np.load(data).size + np.load(dense).size

    assert stored(tmp_path / "words") < stored(tmp_path / "every") / 3
    assert list((tmp_path / "words").rglob("*nn_ranges.npy"))
    assert not list((tmp_path / "every").rglob("*nn_ranges.npy"))


@pytest.mark.parametrize(
    "ranges",
    [
        np.array([[0, 10**9]], np.int64),  # beyond the features
        np.array([[5, 2]], np.int64),  # ends before it starts
        np.array([[0, 4, 8]], np.int64),  # not pairs
        np.array([[0.5, 2.0]]),  # not whole numbers
    ],
)
def test_damaged_neighbour_ranges_fail_loading_with_a_clear_error(
    tmp_path: Path, ranges: np.ndarray
):
    _train(neighbour_weight=0.3, neighbour_char_ngrams=False).persist(tmp_path)
    (path,) = tmp_path.rglob("*nn_ranges.npy")
    np.save(path, ranges, allow_pickle=False)
    with pytest.raises(ModelError, match="neighbour|nn_ranges"):
        NLUPipeline.load(tmp_path)


def test_a_pickled_neighbour_ranges_file_is_refused(tmp_path: Path):
    _train(neighbour_weight=0.3, neighbour_char_ngrams=False).persist(tmp_path)
    (path,) = tmp_path.rglob("*nn_ranges.npy")
    np.save(path, np.array([[0, 1]], dtype=object), allow_pickle=True)
    with pytest.raises(ModelError):
        NLUPipeline.load(tmp_path)


def test_class_scores_on_column_ranges_compare_only_those_columns():
    # Sentences of classes 0, 1, 0, 1; column 2 is left out of the comparison.
    rows = np.array([[1, 0, 3, 1], [0, 1, 0, 0.2], [1, 0, 0, 0], [0, 1, 2, 0.5]])
    ranges = np.array([[0, 2], [3, 4]], np.int64)
    kept = rows[:, [0, 1, 3]]
    cosine = (kept / np.linalg.norm(kept, axis=1, keepdims=True)) @ (np.array([1, 0, 1]) / 2**0.5)
    nearest = Neighbours.fit(sp.csr_matrix(rows), np.array([0, 1, 0, 1]), 2, 1, 1.0, ranges)
    scores = nearest.class_scores(np.array([0, 2, 3]), np.array([1.0, 9.0, 1.0], np.float32))
    assert scores == pytest.approx([cosine[[0, 2]].max(), cosine[[1, 3]].max()], rel=1e-6)
    # Only the left-out column: no feature to compare.
    assert nearest.class_scores(np.array([2]), np.array([1.0], np.float32)) is None


@pytest.mark.parametrize("public_scipy", [False, True])
@pytest.mark.parametrize("k", [1, 2])
def test_every_route_of_a_feature_gives_the_cosine_of_the_sentences(
    k: int, public_scipy: bool, monkeypatch: pytest.MonkeyPatch
):
    """Also through scipy's public indexing, which a scipy without the private C loops the
    postings are read with falls back to."""
    if public_scipy:
        monkeypatch.setattr(neighbours, "_private_loops", lambda: None)
    # Postings (columns 0-19), compressed columns (20-29, rank 3: their directions hold them
    # all), dense columns (30-34, as many directions as columns) and a left-out range
    # (35-39): each intent's score is the mean of its k largest cosines on columns 0-34.
    rng = np.random.default_rng(0)
    postings = sp.random(60, 20, density=0.2, random_state=1).toarray()
    compressed = rng.random((60, 3)) @ rng.random((3, 10)) * (rng.random((60, 1)) < 0.7)
    rows = np.hstack([postings, compressed, rng.random((60, 5)) + 0.1, rng.random((60, 5))])
    classes = rng.integers(0, 5, 60)
    classes[:5] = np.arange(5)
    nearest = Neighbours.fit(
        sp.csr_matrix(rows),
        classes,
        5,
        k,
        1.0,
        ranges=np.array([[0, 35]]),
        dimensions=5,
        compressed=np.array([[20, 30]]),
        compressed_dimensions=8,
    )
    features = np.array([1, 3, 8, 19, 21, 25, 29, 30, 32, 34, 36, 38])
    values = rng.random(len(features)).astype(np.float32)
    query = np.zeros(40)
    query[features] = values
    kept = rows[:, :35] / np.linalg.norm(rows[:, :35], axis=1, keepdims=True)
    cosine = kept @ (query[:35] / np.linalg.norm(query[:35]))
    expected = [np.sort(cosine[classes == c])[::-1][:k].mean() for c in range(5)]
    assert nearest.class_scores(features, values) == pytest.approx(expected, rel=1e-5)
    # Only postings, only the dense block, only the compressed block: the same cosines.
    for part in (features[:4], features[4:7], features[7:10]):
        kept_query = np.zeros(35)
        kept_query[part] = query[part]
        cosine = kept @ (kept_query / np.linalg.norm(kept_query))
        expected = [np.sort(cosine[classes == c])[::-1][:k].mean() for c in range(5)]
        scores = nearest.class_scores(part, query[part].astype(np.float32))
        assert scores == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_dense_columns_kept_as_singular_directions_score_as_before_when_nothing_is_lost():
    # The dense columns 2-3 of every sentence are multiples of (1, 2): one direction holds
    # them all, and the scores match those of the columns themselves.
    rows = np.array([[1, 0, 1, 2], [0, 1, 0.5, 1], [1, 0, 2, 4], [0, 1, 1.5, 3]])
    x, classes = sp.csr_matrix(rows), np.array([0, 1, 0, 1])
    plain = Neighbours.fit(x, classes, 2, 1, 1.0)
    projected = Neighbours.fit(x, classes, 2, 1, 1.0, dimensions=1)
    assert plain.dense.shape == (4, 2) and projected.dense.shape == (4, 1)
    query = np.array([0, 2, 3]), np.array([1.0, 0.3, 0.6], np.float32)
    assert projected.class_scores(*query) == pytest.approx(plain.class_scores(*query), rel=1e-5)


def test_the_projected_blend_survives_persistence_as_npy_files(tmp_path: Path):
    _parses_the_same_after_reloading(_train(neighbour_weight=0.3, neighbour_dimensions=1), tmp_path)
    (projection,) = tmp_path.rglob("*nn_projection.npy")
    (dense,) = tmp_path.rglob("*nn_dense.npy")
    assert np.load(dense).shape[1] == 1 == np.load(projection).shape[1]
    np.save(projection, np.ones((1, 1), np.float32), allow_pickle=False)
    with pytest.raises(ModelError, match="neighbour"):
        NLUPipeline.load(tmp_path)


def test_neighbour_dimensions_must_be_a_whole_number():
    with pytest.raises(InvalidConfig, match="neighbour_dimensions"):
        _train(neighbour_weight=0.3, neighbour_dimensions=-2)


def test_a_blend_stored_before_the_word_only_options_still_loads(tmp_path: Path):
    # The tenth round's archives have no neighbour_ranges / neighbour_projection keys.
    trained = _train(neighbour_weight=0.3)
    trained.persist(tmp_path)
    index = tmp_path / "pipeline.json"
    text = index.read_text()
    for key in ("neighbour_ranges", "neighbour_projection"):
        text = text.replace(f'"{key}": false, ', "").replace(f', "{key}": false', "")
    assert "neighbour_ranges" not in text and "neighbour_weight" in text
    index.write_text(text)
    assert NLUPipeline.load(tmp_path).parse("helo deer olde frend") == trained.parse(
        "helo deer olde frend"
    )


def test_compressed_columns_score_as_before_when_their_directions_hold_them_all():
    # Columns 2-5 (say character n-grams) span two directions: kept as two singular
    # directions, the similarities are those of the columns themselves; with one, they
    # are an approximation that differs.
    rows = np.array(
        [
            [1, 0, 1, 1, 0, 0],
            [0, 1, 0, 0, 1, 1],
            [1, 0, 2, 2, 0, 0],
            [0, 1, 1, 1, 3, 3],
            [0, 1, 0, 0, 2, 2],
            [1, 0, 0, 0, 0, 0],
        ],
        dtype=np.float64,
    )
    x, classes = sp.csr_matrix(rows), np.array([0, 1, 0, 1, 1, 0])
    compressed = np.array([[2, 6]], np.int64)
    plain = Neighbours.fit(x, classes, 2, 1, 1.0)
    exact = Neighbours.fit(x, classes, 2, 1, 1.0, compressed=compressed, compressed_dimensions=2)
    rough = Neighbours.fit(x, classes, 2, 1, 1.0, compressed=compressed, compressed_dimensions=1)
    assert exact.sparse.nnz < plain.sparse.nnz and exact.dense.shape == (6, 2)
    query = np.array([0, 2, 3, 4]), np.array([0.5, 1.0, 1.0, 0.3], np.float32)
    expected = plain.class_scores(*query)
    assert exact.class_scores(*query) == pytest.approx(expected, rel=1e-5)
    assert rough.class_scores(*query) != pytest.approx(expected, rel=1e-3)
    # The compressed columns alone still find neighbours.
    alone = exact.class_scores(np.array([4, 5]), np.array([1.0, 1.0], np.float32))
    assert alone is not None and alone[1] > alone[0]


def test_the_char_compressed_blend_reads_fewer_postings_and_survives_persistence(tmp_path: Path):
    every = _train(neighbour_weight=0.3)
    compressed = _train(neighbour_weight=0.3, neighbour_char_dimensions=10)
    _parses_the_same_after_reloading(compressed, tmp_path)
    (compressor,) = tmp_path.rglob("*nn_compressor.npy")
    assert np.load(compressor).shape[1] == 10
    # The misspelt message shares only character n-grams with the long goodbye: still
    # found through the compressed block.
    misspelt = _train(neighbour_weight=5, neighbour_char_dimensions=10).parse(
        "helo deer olde frend"
    )
    assert misspelt["intent"]["name"] == "goodbye"
    # The postings left to read at a parse are the word n-grams' only.
    every.persist(tmp_path / "every")
    (all_postings,) = (tmp_path / "every").rglob("*nn_data.npy")
    (word_postings,) = tmp_path.glob("*nn_data.npy")
    assert np.load(word_postings).size < np.load(all_postings).size / 3
    np.save(compressor, np.ones((2, 10), np.float32), allow_pickle=False)
    with pytest.raises(ModelError, match="neighbour"):
        NLUPipeline.load(tmp_path)


def test_neighbour_char_dimensions_must_be_a_whole_number():
    with pytest.raises(InvalidConfig, match="neighbour_char_dimensions"):
        _train(neighbour_weight=0.3, neighbour_char_dimensions=1.5)


def test_a_spread_near_nothing_leaves_the_scores_alone_instead_of_overflowing():
    # Blended scores spread over 1e200 while the other scores differ by 1e-150: the scale
    # between them (1e350) overflowed to inf, and inf times the zero of the middle intent
    # made the scores NaN (NaN confidences, a 500 on every parse).
    scores = np.array([0.0, 1e200, 2e200])
    other = np.array([0.0, 1e-150, 2e-150])
    blended = neighbours.add_standardised(scores, other, 1.0)
    assert np.array_equal(blended, scores)
    # One ordinary spread still blends: the ranking of z(scores) + z(other).
    low, high = neighbours.add_standardised(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 2.0)
    assert high > low


def _many_dense_columns(monkeypatch: pytest.MonkeyPatch) -> tuple[Neighbours, np.ndarray, Any]:
    """700 sentences of 7 intents over 40 dense columns (more than the bounded search's head
    of 24) and 20 posting columns; the head in pieces of 64 sentences, the bounded search on
    from 50 sentences an intent."""
    monkeypatch.setattr(neighbours, "HEAD_PIECE", 64)
    monkeypatch.setattr(neighbours, "BOUNDED_GROUP", 50)
    rng = np.random.default_rng(3)
    classes = np.repeat(np.arange(7), 100)
    centres = rng.normal(size=(7, 40))
    dense = centres[classes] + rng.normal(scale=0.8, size=(700, 40))
    postings = sp.random(700, 20, density=0.05, random_state=2).toarray()
    rows = np.hstack([postings, dense])
    nearest = Neighbours.fit(sp.csr_matrix(rows), classes, 7, 1, 1.0)
    kept = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return nearest, kept, rng


def _brute_force(kept: np.ndarray, features: np.ndarray, values: np.ndarray) -> list[float]:
    query = np.zeros(kept.shape[1])
    query[features] = values
    cosine = kept @ (query / np.linalg.norm(query))
    return [cosine[c * 100 : (c + 1) * 100].max() for c in range(7)]


def test_the_nearest_sentence_of_each_intent_is_found_reading_few_whole_sentences(
    monkeypatch: pytest.MonkeyPatch,
):
    """Twentieth round: every sentence's first coordinates, then all of them only for the
    sentences whose bound can still reach their intent's best: the same maxima as the whole
    product, from a fraction of the sentences."""
    nearest, kept, rng = _many_dense_columns(monkeypatch)
    assert len(nearest.dense_columns) == 40
    scored: list[int] = []
    exact = Neighbours._maxima

    def counted(self: Neighbours, sentences: np.ndarray, *args: Any) -> Any:
        scored.append(len(sentences))
        return exact(self, sentences, *args)

    monkeypatch.setattr(Neighbours, "_maxima", counted)
    for message in range(20):
        features = np.append(rng.choice(20, 3, replace=False), np.arange(20, 60))
        values = np.append(rng.random(3), kept[message * 35 % 700, 20:] * 3).astype(np.float32)
        expected = _brute_force(kept, features, values)
        assert nearest.class_scores(features, values) == pytest.approx(expected, rel=1e-5)
    assert scored and max(scored) < 0.25 * 700


def test_the_bounded_search_gives_the_whole_product_s_maxima_when_it_falls_back(
    monkeypatch: pytest.MonkeyPatch,
):
    """Where too many sentences could reach their intent's best, every coordinate of every
    sentence is read: the same maxima. Features in any order read the same postings."""
    nearest, kept, rng = _many_dense_columns(monkeypatch)
    features = np.append([17, 2, 9], np.arange(59, 19, -1))
    values = rng.random(len(features)).astype(np.float32)
    expected = _brute_force(kept, features, values)
    assert nearest.class_scores(features, values) == pytest.approx(expected, rel=1e-5)
    monkeypatch.setattr(neighbours, "CANDIDATES", 0.0)
    assert nearest.class_scores(features, values) == pytest.approx(expected, rel=1e-5)


def test_intents_of_few_sentences_are_scored_by_the_whole_product(
    monkeypatch: pytest.MonkeyPatch,
):
    """With fewer than BOUNDED_GROUP sentences an intent (HWU64, BANKING77: about a hundred)
    the bound prunes little: every sentence is read whole, as before."""
    nearest, kept, rng = _many_dense_columns(monkeypatch)
    monkeypatch.setattr(neighbours, "BOUNDED_GROUP", 101)
    few = Neighbours.fit(sp.csr_matrix(kept), np.repeat(np.arange(7), 100), 7, 1, 1.0)
    monkeypatch.setattr(Neighbours, "_bounded_maxima", None)
    features = np.append([4, 11], np.arange(20, 60))
    values = rng.random(len(features)).astype(np.float32)
    expected = _brute_force(kept, features, values)
    assert few.class_scores(features, values) == pytest.approx(expected, rel=1e-5)


def test_the_bounded_search_counts_each_sentence_s_postings_in_its_head_score(
    monkeypatch: pytest.MonkeyPatch,
):
    """A message sharing one sentence's posting columns and close, in the head coordinates,
    to another sentence of its intent: the nearest is the first one, whose head coordinates
    alone score less. Each sentence's head score holds its postings' share (parse3 adds the
    postings to the head scores instead of the head scores to a copy of the postings): the
    whole product's maxima, each found by the bounded search."""
    nearest, kept, _ = _many_dense_columns(monkeypatch)
    bounded = Neighbours._bounded_maxima
    found: list[bool] = []

    def counted(self: Neighbours, *args: Any) -> Any:
        maxima = bounded(self, *args)
        found.append(maxima is not None)
        return maxima

    monkeypatch.setattr(Neighbours, "_bounded_maxima", counted)
    for sentence in range(0, 700, 7):
        posted = np.flatnonzero(kept[sentence, :20])
        if not len(posted):
            continue
        # The head: the first 24 of the 40 dense columns (20 to 59).
        features = np.append(posted, np.arange(20, 44))
        neighbour = sentence // 100 * 100 + (sentence + 50) % 100
        values = np.append(kept[sentence, posted] * 10, kept[neighbour, 20:44])
        expected = _brute_force(kept, features, values)
        scores = nearest.class_scores(features, values.astype(np.float32))
        assert scores == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert found and all(found)
