"""The intent classifier's class-spread feature weighting."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from server.errors import InvalidConfig
from server.nlu.class_spread import ClassSpread
from server.nlu.pipeline import NLUPipeline
from server.training.nlu_yaml import read_nlu_yaml

# Columns 0-4: a sparse block (0 only in "a", 1 only in "b", 2 only in "c", 3 everywhere,
# 4 once); columns 5-6: a dense block.
X = sp.csr_matrix(
    np.array(
        [
            [0.6, 0.0, 0.0, 0.8, 0.0, 0.3, 0.4],
            [0.6, 0.0, 0.0, 0.8, 0.0, 0.5, 0.1],
            [0.0, 0.6, 0.0, 0.8, 0.0, 0.2, 0.7],
            [0.0, 0.6, 0.0, 0.8, 0.0, 0.9, 0.2],
            [0.0, 0.0, 0.6, 0.8, 0.0, 0.1, 0.1],
            [0.0, 0.0, 0.5, 0.7, 0.5, 0.4, 0.3],
        ]
    )
)
LABELS = ["a", "a", "b", "b", "c", "c"]
BLOCKS = [5, 2]


def test_discriminative_features_outweigh_shared_ones():
    spread = ClassSpread.fit(X, LABELS, BLOCKS)
    assert min(spread.weights[:3]) > spread.weights[3]
    assert list(spread.weights[5:]) == [1.0, 1.0]  # a dense block is left alone


def test_each_block_keeps_its_norm_and_rows_match_the_matrix():
    spread = ClassSpread.fit(X, LABELS, BLOCKS)
    weighted = spread.matrix(X)
    for i in range(X.shape[0]):
        before, after = X[i].toarray().ravel(), weighted[i].toarray().ravel()
        for block in (slice(0, 5), slice(5, 7)):
            assert np.linalg.norm(after[block]) == pytest.approx(np.linalg.norm(before[block]))
        row = X[i]
        values = spread.row(row.indices, row.data.astype(np.float32))
        assert values == pytest.approx(weighted[i].data, rel=1e-5)


def test_an_empty_block_does_not_shift_the_parse_time_weights(tmp_path: Path):
    # A featurizer with no features (a RegexFeaturizer without patterns) is a block of width
    # 0: a parse must still bring each block of its row back to that block's norm, and a
    # loaded model must weight a row exactly as the trained one did.
    fitted = ClassSpread.fit(X, LABELS, [0, *BLOCKS])
    fitted.write(tmp_path, "c0_")
    loaded = ClassSpread.read(tmp_path, "c0_", X.shape[1])
    for i in range(X.shape[0]):
        row = X[i]
        values = row.data.astype(np.float32)
        weighted = fitted.row(row.indices, values)
        assert np.array_equal(loaded.row(row.indices, values), weighted)
        for start, stop in ((0, 5), (5, 7)):
            block = (row.indices >= start) & (row.indices < stop)
            assert np.linalg.norm(weighted[block]) == pytest.approx(
                np.linalg.norm(values[block]), rel=1e-6
            )
        assert not np.allclose(weighted, values)  # the weights did change the row


DATA = """
nlu:
- intent: greet
  examples: |
    - hello there
    - hi
    - good morning
- intent: goodbye
  examples: |
    - bye
    - see you later
    - good night
"""

PIPELINE: list[dict[str, Any]] = [
    {"name": "WhitespaceTokenizer"},
    {"name": "CountVectorsFeaturizer"},
    {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4},
]


def test_weighting_survives_persistence_and_can_be_switched_off(tmp_path: Path):
    data = read_nlu_yaml(DATA)
    weighted = NLUPipeline.train(data, PIPELINE + [{"name": "DIETClassifier"}])
    plain = NLUPipeline.train(
        data, PIPELINE + [{"name": "DIETClassifier", "feature_weighting": "none"}]
    )
    weighted.persist(tmp_path)
    reloaded = NLUPipeline.load(tmp_path)
    for text in ("hello", "good night", "bye bye"):
        assert reloaded.parse(text) == weighted.parse(text)
    assert weighted.parse("hello")["intent"]["name"] == "greet"
    assert plain.parse("see you")["intent"]["name"] == "goodbye"
    assert any(p.name.endswith("spread_weights.npy") for p in tmp_path.iterdir())


def test_unknown_weighting_is_a_config_error():
    with pytest.raises(InvalidConfig, match="feature_weighting"):
        NLUPipeline.train(
            read_nlu_yaml(DATA), PIPELINE + [{"name": "DIETClassifier", "feature_weighting": "x"}]
        )
