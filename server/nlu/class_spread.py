"""Supervised feature weighting for the intent classifier: each sparse feature is scaled by
how much its naive-Bayes log-count ratio varies across intents (the NBSVM idea, shared by
all classes), then each feature block is brought back to its original norm."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from server.errors import ModelError
from server.nlu.state_files import read_array, write_array

if TYPE_CHECKING:
    import scipy.sparse as sp

# Laplace smoothing of the per-class feature counts, and the power the spread is raised to.
# Both fixed on the validation splits (docs/benchmarks.md, NLU).
SMOOTHING = 1.0
POWER = 0.5
# A block whose training rows are mostly non-zero (a sentence embedding) has no document
# frequencies to speak of: it is left as it is.
DENSE_BLOCK = 0.5


@dataclass
class ClassSpread:
    """Per-feature weights (1 for untouched blocks) and the start column of every block."""

    weights: np.ndarray
    offsets: np.ndarray
    # The block of every column, so that a parse gathers instead of searching the offsets.
    blocks: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        widths = np.diff(np.append(self.offsets, len(self.weights)))
        kind = np.min_scalar_type(len(self.offsets))
        self.blocks = np.repeat(np.arange(len(self.offsets), dtype=kind), widths)

    @classmethod
    def fit(cls, x: sp.csr_matrix, labels: list[str], widths: list[int]) -> ClassSpread:
        import scipy.sparse as sp  # training only: SciPy is not imported to serve a model

        offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
        weights = np.ones(x.shape[1], np.float64)
        classes, y = np.unique(np.asarray(labels), return_inverse=True)
        if len(classes) > 1 and x.shape[0]:
            present = x.copy()
            present.data[:] = 1.0
            membership = sp.csr_matrix(
                (np.ones(len(y)), (y, np.arange(len(y)))), shape=(len(classes), len(y))
            )
            counts = np.asarray((membership @ present).todense())
            inside = counts + SMOOTHING
            outside = counts.sum(axis=0, keepdims=True) - counts + SMOOTHING
            ratios = np.log(inside / inside.sum(axis=1, keepdims=True)) - np.log(
                outside / outside.sum(axis=1, keepdims=True)
            )
            spread = ratios.std(axis=0) ** POWER
            nnz = np.diff(present.tocsc().indptr)
            for start, width in zip(offsets, widths, strict=True):
                block = slice(start, start + width)
                if width and nnz[block].mean() / x.shape[0] <= DENSE_BLOCK:
                    weights[block] = spread[block]
        return cls(weights.astype(np.float32), offsets)

    def row(self, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The weighted values of one sparse row (indices sorted by block)."""
        if len(indices) == 0:
            return values
        weighted = values * self.weights.take(indices)
        return weighted * self._rescale(
            self.blocks.take(indices), values, weighted, len(self.offsets)
        )

    def matrix(self, x: sp.csr_matrix) -> sp.csr_matrix:
        """The weighted rows of `x` (at training)."""
        import scipy.sparse as sp

        x = x.tocsr()
        rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
        blocks = np.searchsorted(self.offsets, x.indices, side="right") - 1
        keys = rows * len(self.offsets) + blocks
        weighted = x.data * self.weights[x.indices]
        factor = self._rescale(keys, x.data, weighted, x.shape[0] * len(self.offsets))
        return sp.csr_matrix((weighted * factor, x.indices, x.indptr), shape=x.shape)

    @staticmethod
    def _rescale(
        keys: np.ndarray, values: np.ndarray, weighted: np.ndarray, size: int
    ) -> np.ndarray:
        before = np.bincount(keys, weights=np.square(values, dtype=np.float64), minlength=size)
        after = np.bincount(keys, weights=np.square(weighted, dtype=np.float64), minlength=size)
        ratio = np.divide(before, after, out=np.zeros(size), where=after > 0)
        return np.sqrt(ratio).take(keys)

    def write(self, directory: Path, prefix: str) -> None:
        write_array(directory, f"{prefix}spread_weights.npy", self.weights)
        write_array(directory, f"{prefix}spread_offsets.npy", self.offsets)

    @classmethod
    def read(cls, directory: Path, prefix: str, width: int) -> ClassSpread:
        weights = read_array(directory, f"{prefix}spread_weights.npy", np.float32, ndim=1)
        offsets = read_array(directory, f"{prefix}spread_offsets.npy", np.int64, ndim=1)
        if len(weights) != width or len(offsets) == 0 or offsets[0] != 0:
            raise ModelError("intent feature weights do not match the classifier")
        if np.any(np.diff(offsets) < 0) or offsets[-1] > width:
            raise ModelError("intent feature blocks are malformed")
        return cls(weights, offsets)
