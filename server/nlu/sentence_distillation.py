"""Sentence-level distillation of a token table: rows fitted so that each training
sentence's pooled rows approach the teacher's embedding of that sentence (ridge)."""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

# Conjugate gradient on the per-token corrections: the system is well conditioned (the
# ridge penalty bounds its smallest eigenvalue), so these bounds are rarely reached.
CG_RTOL = 1e-6
CG_MAX_ITERATIONS = 300


def pooling_matrix(
    sentences: list[list[int]], rows: np.ndarray, weights: np.ndarray
) -> scipy.sparse.csr_matrix:
    """(sentences, table rows): each sentence's token weights over its tokens' rows, scaled
    to sum to 1, so that `pool @ table` is its weighted mean row. `rows` maps token ids to
    table rows (-1: no row) and `weights` holds each row's weight."""
    data, indices, indptr = [], [], [0]
    for ids in sentences:
        found = rows[np.asarray(ids, dtype=np.int64)] if ids else rows[:0]
        found = found[found >= 0]
        unique, counts = np.unique(found, return_counts=True)
        values = weights[unique] * counts
        total = values.sum()
        if total > 0:
            data.append(values / total)
            indices.append(unique)
        indptr.append(indptr[-1] + (len(unique) if total > 0 else 0))
    return scipy.sparse.csr_matrix(
        (
            np.concatenate(data) if data else np.zeros(0),
            np.concatenate(indices) if indices else np.zeros(0, np.int64),
            np.asarray(indptr),
        ),
        shape=(len(sentences), len(weights)),
    )


def fit_to_sentences(
    table: np.ndarray,
    pool: scipy.sparse.csr_matrix,
    targets: np.ndarray,
    map_ridge: float,
    ridge: float,
) -> np.ndarray:
    """The table moved towards `targets` (one teacher embedding per row of `pool`): first
    the whole table mapped by one affine ridge regression (penalty `map_ridge`) from the
    pooled rows to the targets, so that tokens outside these sentences move with the
    rest; then each row seen in them corrected, min ||pool (mapped + D) - targets||^2 +
    ridge ||D||^2, rare tokens moving less."""
    table = table.astype(np.float64)
    targets = targets.astype(np.float64)
    pooled = pool @ table
    x_mean, y_mean = pooled.mean(axis=0), targets.mean(axis=0)
    x = pooled - x_mean
    mapping = np.linalg.solve(x.T @ x + map_ridge * np.eye(x.shape[1]), x.T @ (targets - y_mean))
    # The pooling rows sum to 1, so pooling the mapped rows maps the pooled rows.
    mapped = (table - x_mean) @ mapping + y_mean
    if ridge <= 0:
        return mapped
    residual = targets - pool @ mapped
    shape = mapped.shape
    pool_t = pool.T.tocsr()
    # Jacobi preconditioner: the diagonal of pool' pool + ridge, per row of the table.
    diagonal = np.asarray(pool.multiply(pool).sum(axis=0)).ravel() + ridge

    def normal(flat: np.ndarray) -> np.ndarray:
        d = flat.reshape(shape)
        return np.asarray(pool_t @ (pool @ d) + ridge * d).ravel()

    def precondition(flat: np.ndarray) -> np.ndarray:
        return (flat.reshape(shape) / diagonal[:, None]).ravel()

    size = mapped.size
    correction, _ = scipy.sparse.linalg.cg(
        scipy.sparse.linalg.LinearOperator((size, size), matvec=normal, dtype=np.float64),
        np.asarray(pool_t @ residual).ravel(),
        rtol=CG_RTOL,
        maxiter=CG_MAX_ITERATIONS,
        M=scipy.sparse.linalg.LinearOperator((size, size), matvec=precondition, dtype=np.float64),
    )
    return mapped + correction.reshape(shape)
