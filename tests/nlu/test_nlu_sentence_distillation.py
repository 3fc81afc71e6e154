"""Sentence-level distillation of a token table: pooled rows fitted to teacher embeddings."""

import numpy as np

from server.nlu.sentence_distillation import fit_to_sentences, pooling_matrix


def _problem(seed: int = 0) -> tuple[np.ndarray, list[list[int]], np.ndarray]:
    """A table, sentences over its first 30 rows (the last 10 in none), and targets pooled
    from a hidden table: a linear map of the given one plus per-row noise."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(40, 8))
    hidden = table @ rng.normal(size=(8, 8)) + 0.5 * rng.normal(size=(40, 8))
    sentences = [list(rng.choice(30, size=rng.integers(2, 7))) for _ in range(300)]
    return table, sentences, hidden


def test_the_pooling_matrix_is_each_sentences_weighted_mean_over_known_tokens():
    rows = np.array([-1, 0, 1, 2, -1])  # token ids 0 and 4 have no row
    weights = np.array([1.0, 2.0, 3.0])
    pool = pooling_matrix([[1, 2, 1, 4], [0, 4], [3]], rows, weights).toarray()
    assert np.allclose(pool[0], [2 / 4, 2 / 4, 0])  # token 1 twice at weight 1, token 2 once at 2
    assert np.allclose(pool[1], 0)  # nothing known: an empty row
    assert np.allclose(pool[2], [0, 0, 1])


def test_fitting_brings_pooled_rows_closer_to_the_targets_the_more_the_smaller_the_ridge():
    table, sentences, hidden = _problem()
    rows = np.arange(40)
    pool = pooling_matrix(sentences, rows, np.ones(40))
    targets = pool @ hidden

    def error(fitted: np.ndarray) -> float:
        return float(np.linalg.norm(pool @ fitted - targets))

    mapped = fit_to_sentences(table, pool, targets, map_ridge=1e-3, ridge=0)
    loose = fit_to_sentences(table, pool, targets, map_ridge=1e-3, ridge=1e-3)
    tight = fit_to_sentences(table, pool, targets, map_ridge=1e-3, ridge=1.0)
    assert error(loose) < error(tight) < error(mapped) < error(table)
    # Rows in no sentence get the shared affine map only, the same whatever the ridge.
    assert np.allclose(loose[30:], mapped[30:]) and np.allclose(tight[30:], mapped[30:])
    assert not np.allclose(loose[:30], mapped[:30])


def test_fitting_is_deterministic():
    table, sentences, hidden = _problem(seed=1)
    pool = pooling_matrix(sentences, np.arange(40), np.ones(40))
    first, second = (fit_to_sentences(table, pool, pool @ hidden, 1.0, 0.1) for _ in range(2))
    assert np.array_equal(first, second)
