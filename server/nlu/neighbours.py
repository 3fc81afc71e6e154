"""Nearest training sentences of each intent, blended into the linear model's scores.

For a message, the cosine similarity to every training sentence (on the intent classifier's
weighted features) is computed; each intent's neighbour score is the mean of its `k` most
similar training sentences. The neighbour scores, standardised over the intents, are added to
the linear model's scores times `weight` × the standard deviation of those scores, so the
ranking is that of z(svm) + weight × z(neighbours) while the scores keep the linear model's
scale (the softmax confidences, and so a FallbackClassifier's thresholds, read as before).
Learned state: the unit-length training rows, sparse columns as a CSR matrix of features ×
sentences and dense blocks (sentence embeddings) as a sentences × columns array, in .npy
files. Chosen in the tenth NLU round (docs/benchmarks.md). `columns` limits the similarity to
some feature columns (the intent classifier leaves out character n-grams: a tenth of the
postings to read at a parse), stored as column ranges. `compressed` column ranges (the
character n-grams, twelfth round) are kept as their leading singular directions instead of
postings: their share of the similarity is then a product of short dense vectors."""

from __future__ import annotations

import functools
import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from server.errors import ModelError
from server.nlu.params import MAX_BLEND_WEIGHT
from server.nlu.state_files import read_array, write_array

if TYPE_CHECKING:
    import scipy.sparse as sp

# SciPy is imported where a Neighbours is built (trained or read from a model), not with this
# module, which every intent classifier imports: a model without neighbours serves without it.


@functools.cache
def _private_loops() -> ModuleType | None:
    """scipy's C loops behind its sparse indexing: private, so a release may move them."""
    try:
        return importlib.import_module("scipy.sparse._sparsetools")
    except ImportError:  # every scipy since 0.14 has them
        return None


# A block whose training rows are mostly non-zero is stored dense (as in class_spread).
DENSE_BLOCK = 0.5
# What a parse does with each feature column (`Neighbours._route`): left out of the
# similarity, read from its postings, put in the query of the dense columns, or projected on
# the compressed columns' singular directions.
_UNUSED, _POSTINGS, _DENSE, _COMPRESSED = 0, 1, 2, 3
# The nearest sentence of each intent (k = 1) is found without the whole product (twentieth
# NLU round): the first HEAD coordinates of every sentence, then the rest only for the
# sentences whose bound (Cauchy-Schwarz on the other coordinates) can still reach their
# intent's best. On SNIPS (13,084 sentences x 80 coordinates) 1-2 % of the sentences are
# left a parse. BOUND_SLACK covers float32 rounding in the bound (similarities are cosines,
# at most 1); above CANDIDATES of the sentences left, the whole product is cheaper.
# Only where intents have BOUNDED_GROUP training sentences on average: with a hundred (HWU64)
# each intent's floor prunes little and the search's passes cost more than they save
# (callgrind, 100 HWU64 validation parses: 11.5 % more instructions than the whole product).
HEAD = 24
HEAD_PIECE = 4096
BOUND_SLACK = 1e-4
CANDIDATES = 0.25
BOUNDED_GROUP = 500


@dataclass
class Neighbours:
    # Sparse columns: features x sentences (CSR), sentences sorted by intent.
    sparse: sp.csr_matrix
    # Dense columns (their feature indices) and the sentences' values in them.
    dense_columns: np.ndarray
    dense: np.ndarray
    # First sentence of every intent (intents in the linear model's order).
    starts: np.ndarray
    k: int
    weight: float
    # The [start, end) column ranges the similarity is computed on; None: every column.
    ranges: np.ndarray | None = None
    # Dense columns x d: the leading right singular vectors of the training sentences'
    # dense values; `dense` then holds their coordinates (sentences x d), and a parse
    # reads 128 / d times less of it. None: `dense` holds the values themselves.
    projection: np.ndarray | None = None
    # The [start, end) column ranges kept as singular directions, and the directions
    # (their columns x d); the sentences' coordinates on them are the last d columns of
    # `dense`. None: no column is compressed.
    compressed: np.ndarray | None = None
    compressor: np.ndarray | None = None

    def __post_init__(self) -> None:
        import scipy.sparse as sp

        width = self.sparse.shape[0]
        # scipy's C loops take one index type and the float32 of the query and the product.
        kind = self.sparse.indptr.dtype
        if self.sparse.indices.dtype != kind or self.sparse.data.dtype != np.float32:
            self.sparse = sp.csr_matrix(
                (
                    self.sparse.data.astype(np.float32),
                    self.sparse.indices.astype(kind),
                    self.sparse.indptr,
                ),
                shape=self.sparse.shape,
            )
        # One gather a parse tells every feature's route and its row in the dense columns
        # or the compressor (thirteenth NLU round: a mask and a position table each before).
        self._route = np.full(width, _POSTINGS, np.int8)
        self._slot = np.zeros(width, np.int64)
        if self.ranges is not None:
            self._route[~_column_mask(self.ranges, width)] = _UNUSED
        self._route[self.dense_columns] = _DENSE
        self._slot[self.dense_columns] = np.arange(len(self.dense_columns))
        if self.compressed is not None and self.compressor is not None:
            mask = _column_mask(self.compressed, width)
            self._route[mask] = _COMPRESSED
            self._slot[mask] = np.arange(int(mask.sum()))
        self._any_unused = bool((self._route == _UNUSED).any())
        # The query's coordinates: the dense columns (or their directions), then the
        # compressed columns' directions.
        self._dense_width = (
            self.projection.shape[1] if self.projection is not None else len(self.dense_columns)
        )
        counts = np.diff(np.append(self.starts, self.dense.shape[0]))
        # Top 1 of each intent (every intent has a sentence) is one maximum.reduceat.
        self._top1 = self.k == 1 and bool(len(counts)) and bool(counts.min() > 0)
        width = max(int(counts.max(initial=1)), 1)
        self._k = min(self.k, width)
        # Where each sentence goes in an intents x width table padded with -inf.
        sentence_class = np.repeat(np.arange(len(counts)), counts)
        slot = np.arange(self.dense.shape[0]) - self.starts.take(sentence_class)
        self._slots = sentence_class * width + slot
        self._shape = (len(counts), width)
        self._taken = np.minimum(counts, self._k).astype(np.float64)
        # The bounded search's head coordinates, and each sentence's length beyond them.
        self._head: list[tuple[int, np.ndarray]] | None = None
        if (
            self._top1
            and self.dense.shape[1] > HEAD
            and self.dense.shape[0] >= BOUNDED_GROUP * len(counts)
        ):
            # Transposed, in pieces: one BLAS call per piece, each under the size from which
            # OpenBLAS runs a product on two threads (the caller would spin for a descheduled
            # helper: eleventh NLU round); numpy's einsum loops per row, 6x slower at 24.
            self._head = [
                (start, np.ascontiguousarray(self.dense[start : start + HEAD_PIECE, :HEAD].T))
                for start in range(0, self.dense.shape[0], HEAD_PIECE)
            ]
            rest = np.sqrt(np.square(self.dense[:, HEAD:], dtype=np.float64).sum(axis=1))
            self._rest = rest.astype(np.float32)
            self._counts = counts

    @classmethod
    def fit(
        cls,
        x: sp.csr_matrix,
        classes: np.ndarray,
        n_classes: int,
        k: int,
        weight: float,
        ranges: np.ndarray | None = None,
        dimensions: int | None = None,
        compressed: np.ndarray | None = None,
        compressed_dimensions: int = 64,
    ) -> Neighbours:
        """`x`: the weighted training rows; `classes`: each row's index in the model;
        `ranges`: the column ranges to compare sentences on (None: all); `dimensions`: the
        dense columns kept as that many singular directions (None: as they are);
        `compressed`: column ranges kept as `compressed_dimensions` singular directions."""
        import scipy.sparse as sp

        order = np.argsort(classes, kind="stable")
        rows = sp.csr_matrix(x[order], dtype=np.float32)
        if ranges is not None:
            rows = sp.csr_matrix(
                rows @ sp.diags(_column_mask(ranges, rows.shape[1]).astype(np.float32))
            )
            rows.eliminate_zeros()
        rows = _unit_rows(rows)
        starts = np.searchsorted(classes[order], np.arange(n_classes)).astype(np.int64)
        nnz = np.diff(rows.tocsc().indptr)
        squeezed = np.zeros(rows.shape[1], bool)
        if compressed is not None:
            squeezed = _column_mask(compressed, rows.shape[1])
        dense_columns = np.flatnonzero((nnz > DENSE_BLOCK * max(rows.shape[0], 1)) & ~squeezed)
        dense = np.asarray(rows[:, dense_columns].todense(), np.float32)
        keep = np.ones(rows.shape[1], np.float32)
        keep[dense_columns] = 0.0
        keep[squeezed] = 0.0
        sparse = sp.csr_matrix(rows @ sp.diags(keep))
        sparse.eliminate_zeros()
        projection = None
        if dimensions is not None and dimensions < dense.shape[1]:
            _, _, directions = np.linalg.svd(dense, full_matrices=False)
            projection = np.ascontiguousarray(directions[:dimensions].T, np.float32)
            dense = np.ascontiguousarray(dense @ projection, np.float32)
        compressor = None
        if compressed is not None:
            compressor, coordinates = _singular_directions(
                sp.csr_matrix(rows[:, np.flatnonzero(squeezed)]), compressed_dimensions
            )
            dense = np.ascontiguousarray(np.hstack([dense, coordinates]), np.float32)
        return cls(
            sp.csr_matrix(sparse.T),
            dense_columns,
            dense,
            starts,
            k,
            weight,
            ranges,
            projection,
            compressed,
            compressor,
        )

    def class_scores(self, indices: np.ndarray, values: np.ndarray) -> np.ndarray | None:
        """Each intent's mean similarity of its k nearest training sentences, or None for
        a message without features (in the columns compared)."""
        route = self._route.take(indices)
        if self._any_unused:
            used = route != _UNUSED
            indices, values, route = indices[used], values[used], route[used]
        norm = float(np.sqrt(np.dot(values, values))) if len(values) else 0.0
        if norm == 0.0:
            return None
        values = (values / norm).astype(np.float32)
        slot = self._slot.take(indices)
        sentences = self.dense.shape[0]
        dense, squeezed = route == _DENSE, route == _COMPRESSED
        if dense.any() or squeezed.any():
            query = np.zeros(self.dense.shape[1], np.float32)
            head = query[: self._dense_width]
            if self.projection is not None:
                rows = self.projection.take(slot[dense], axis=0)
                np.einsum("ij,i->j", rows, values[dense], out=head)
            else:
                head[slot[dense]] = values[dense]
            if self.compressor is not None and squeezed.any():
                rows = self.compressor.take(slot[squeezed], axis=0)
                np.einsum("ij,i->j", rows, values[squeezed], out=query[self._dense_width :])
            if self._head is not None:
                postings = np.zeros(sentences, np.float32)
                sparse = route == _POSTINGS
                if sparse.any():
                    self._add_postings(indices[sparse], values[sparse], postings)
                nearest = self._bounded_maxima(query, postings)
                if nearest is not None:
                    return nearest
                # Too many sentences left: the whole product, numpy's own loop (below).
                postings += np.einsum("ij,j->i", self.dense, query)
                return np.maximum.reduceat(postings, self.starts).astype(np.float64)
            # numpy's own loop, not BLAS: OpenBLAS runs a product this size on two threads,
            # and when the other core is busy the caller spins waiting for its helper (1.8-4
            # ms of CPU a parse against 0.17 ms here; eleventh NLU round).
            similarity = np.einsum("ij,j->i", self.dense, query)
        else:
            similarity = np.zeros(sentences, np.float32)
        sparse = route == _POSTINGS
        if sparse.any():
            self._add_postings(indices[sparse], values[sparse], similarity)
        if self._top1:
            return np.maximum.reduceat(similarity, self.starts).astype(np.float64)
        table = np.full(self._shape[0] * self._shape[1], -np.inf)
        table[self._slots] = similarity
        table = table.reshape(self._shape)
        top = np.partition(table, self._shape[1] - self._k, axis=1)[:, -self._k :]
        top = np.sort(top, axis=1)[:, ::-1]
        taken = np.arange(self._k) < self._taken[:, None]
        return np.where(taken, top, 0.0).sum(axis=1) / np.maximum(self._taken, 1.0)

    def _bounded_maxima(self, query: np.ndarray, postings: np.ndarray) -> np.ndarray | None:
        """Each intent's highest similarity (the postings' share given): the head
        coordinates of every sentence, then all coordinates of the sentences with the
        highest head score of their intent (a floor for it) and of those whose upper bound
        reaches their intent's floor; None when too many do (the whole product instead)."""
        assert self._head is not None
        head, tail = query[:HEAD], query[HEAD:]
        # The head scores, then the postings' share added: the same float32 sums as the
        # postings plus the head scores (addition commutes), without a copy of the postings.
        partial = np.empty_like(postings)
        for start, piece in self._head:
            np.matmul(head, piece, out=partial[start : start + piece.shape[1]])
        partial += postings
        # Per intent, broadcast to its sentences by np.repeat (a fifth of a take's cost).
        counts = self._counts
        leaders = np.flatnonzero(
            partial == np.repeat(np.maximum.reduceat(partial, self.starts), counts)
        )
        floor = self._maxima(leaders, query, postings)
        if floor is None:
            return None
        # The upper bound of each sentence: its head score plus its length beyond the head
        # times the query's.
        slack = self._rest * np.float32(np.sqrt(np.dot(tail, tail)))
        slack += np.float32(BOUND_SLACK)
        partial += slack
        candidates = np.flatnonzero(partial >= np.repeat(floor.astype(np.float32), counts))
        if len(candidates) > CANDIDATES * len(partial):
            return None
        return self._maxima(candidates, query, postings)

    def _maxima(
        self, sentences: np.ndarray, query: np.ndarray, postings: np.ndarray
    ) -> np.ndarray | None:
        """Each intent's highest similarity among `sentences` (sorted), or None unless each
        intent has one (not reached: every intent keeps its leader)."""
        exact = np.einsum("ij,j->i", self.dense.take(sentences, axis=0), query)
        exact += postings.take(sentences)
        first = np.searchsorted(sentences, self.starts)
        if len(first) and (first[-1] >= len(sentences) or np.any(np.diff(first) <= 0)):
            return None
        return np.maximum.reduceat(exact, first).astype(np.float64)

    def _add_postings(self, features: np.ndarray, values: np.ndarray, out: np.ndarray) -> None:
        """Adds the query's sparse part dotted with every training sentence to `out`, from
        the postings of its features, read in place by scipy's own C loop (`csc_matvec`,
        what its sparse product runs; thirteenth NLU round: 13 against 50 us on BANKING77's
        7,900 postings a parse with numpy's gathers, and scipy's public indexing checks its
        indices for 0.1 ms). The loop takes column j as the postings from bounds[j] to
        bounds[j + 1]: with the features in descending order, bounds = [start, end] of each
        one in turn, the columns between two features run from an end to an earlier start,
        and so are empty (twentieth round: no copy of the postings, 10 % of a parse's
        instructions on SNIPS)."""
        if len(features) == 0:
            return
        indptr = self.sparse.indptr
        loops = _private_loops()
        if loops is None:  # scipy's public indexing: the same sums, 0.1 ms more
            out += self.sparse[features].T @ values
            return
        order = np.argsort(features)[::-1]
        features = features.take(order).astype(indptr.dtype, copy=False)
        bounds = np.empty(2 * len(features), indptr.dtype)
        bounds[0::2] = indptr.take(features)
        bounds[1::2] = indptr.take(features + 1)
        weights = np.zeros(len(bounds) - 1, self.sparse.data.dtype)
        weights[0::2] = values.take(order)
        loops.csc_matvec(
            len(out), len(weights), bounds, self.sparse.indices, self.sparse.data, weights, out
        )

    def postings_read(self, indices: np.ndarray) -> int:
        """How many stored values a parse of a message with these features reads (its
        postings plus the dense block): the cost of `class_scores`, for the benchmarks."""
        sparse = indices[self._route.take(indices) == _POSTINGS]
        indptr = self.sparse.indptr
        return int((indptr.take(sparse + 1) - indptr.take(sparse)).sum()) + self.dense.size

    def blend(self, scores: np.ndarray, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
        neighbour = self.class_scores(indices, values)
        if neighbour is None:
            return scores
        return add_standardised(scores, neighbour, self.weight)

    def write(self, directory: Path, prefix: str) -> dict:
        write_array(directory, f"{prefix}nn_data.npy", self.sparse.data.astype(np.float32))
        write_array(directory, f"{prefix}nn_indices.npy", self.sparse.indices.astype(np.int32))
        write_array(directory, f"{prefix}nn_indptr.npy", self.sparse.indptr.astype(np.int64))
        write_array(directory, f"{prefix}nn_dense_columns.npy", self.dense_columns)
        write_array(directory, f"{prefix}nn_dense.npy", self.dense)
        write_array(directory, f"{prefix}nn_starts.npy", self.starts)
        if self.ranges is not None:
            write_array(directory, f"{prefix}nn_ranges.npy", self.ranges.astype(np.int64))
        if self.projection is not None:
            write_array(directory, f"{prefix}nn_projection.npy", self.projection)
        state = {
            "neighbours": self.k,
            "neighbour_weight": self.weight,
            "neighbour_ranges": self.ranges is not None,
            "neighbour_projection": self.projection is not None,
        }
        if self.compressed is not None and self.compressor is not None:
            write_array(directory, f"{prefix}nn_compressed.npy", self.compressed.astype(np.int64))
            write_array(directory, f"{prefix}nn_compressor.npy", self.compressor)
            state["neighbour_compressed"] = True
        return state

    @classmethod
    def read(
        cls,
        directory: Path,
        prefix: str,
        width: int,
        n_classes: int,
        k: object,
        weight: object,
        ranged: object = False,
        projected: object = False,
        compressed: object = False,
    ) -> Neighbours:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ModelError("intent neighbours must be a whole number above 0")
        weight = stored_blend_weight(weight, "intent neighbour weight")
        data = read_array(directory, f"{prefix}nn_data.npy", np.float32, ndim=1)
        indices = read_array(directory, f"{prefix}nn_indices.npy", np.int32, ndim=1)
        indptr = read_array(directory, f"{prefix}nn_indptr.npy", np.int64, ndim=1)
        columns = read_array(directory, f"{prefix}nn_dense_columns.npy", np.int64, ndim=1)
        dense = read_array(directory, f"{prefix}nn_dense.npy", np.float32, ndim=2)
        starts = read_array(directory, f"{prefix}nn_starts.npy", np.int64, ndim=1)
        if not all(isinstance(f, bool) for f in (ranged, projected, compressed)):
            raise ModelError(
                "intent neighbour_ranges, neighbour_projection and neighbour_compressed "
                "must be booleans"
            )
        projection = None
        coordinates = len(columns)
        if projected:
            projection = read_array(directory, f"{prefix}nn_projection.npy", np.float32, ndim=2)
            if projection.shape[0] != len(columns) or not np.all(np.isfinite(projection)):
                raise ModelError("intent neighbour projection does not match the dense columns")
            coordinates = projection.shape[1]
        ranges = None
        if ranged:
            ranges = read_array(directory, f"{prefix}nn_ranges.npy", np.int64, ndim=2)
            if not _valid_ranges(ranges, width):
                raise ModelError("intent neighbour column ranges are malformed")
        squeezed = compressor = None
        if compressed:
            squeezed = read_array(directory, f"{prefix}nn_compressed.npy", np.int64, ndim=2)
            compressor = read_array(directory, f"{prefix}nn_compressor.npy", np.float32, ndim=2)
            if not _valid_ranges(squeezed, width):
                raise ModelError("intent neighbour compressed column ranges are malformed")
            columns_compressed = int(np.diff(squeezed, axis=1).sum())
            if compressor.shape[0] != columns_compressed or not np.all(np.isfinite(compressor)):
                raise ModelError("intent neighbour compressor does not match its columns")
            coordinates += compressor.shape[1]
        sentences = dense.shape[0]
        if (
            len(indptr) != width + 1
            or indptr[0] != 0
            or indptr[-1] != len(data)
            or len(indices) != len(data)
            or np.any(np.diff(indptr) < 0)
            or (len(indices) and (indices.min() < 0 or indices.max() >= sentences))
            or dense.shape[1] != coordinates
            or (len(columns) and (columns.min() < 0 or columns.max() >= width))
            or len(starts) != n_classes
            or (len(starts) and (starts[0] != 0 or starts[-1] > sentences))
            or np.any(np.diff(starts) < 0)
        ):
            raise ModelError("intent neighbour state does not match the classifier")
        # One index dtype for both arrays: scipy would otherwise copy them to a common one on
        # every parse (milliseconds for a million stored values).
        kind = np.int32 if len(data) < np.iinfo(np.int32).max else np.int64
        import scipy.sparse as sp

        sparse = sp.csr_matrix(
            (data, indices.astype(kind), indptr.astype(kind)), shape=(width, sentences)
        )
        return cls(
            sparse,
            columns,
            dense,
            starts,
            k,
            weight,
            ranges,
            projection,
            squeezed,
            compressor,
        )


def stored_blend_weight(weight: object, what: str) -> float:
    """A blend weight read from a model, refused (ModelError naming `what`) unless a number
    training accepts."""
    if (
        not isinstance(weight, (int, float))
        or isinstance(weight, bool)
        or not 0 <= weight <= MAX_BLEND_WEIGHT
    ):
        raise ModelError(f"{what} must be a number from 0 to {MAX_BLEND_WEIGHT:g}")
    return float(weight)


def add_standardised(scores: np.ndarray, other: np.ndarray, weight: float) -> np.ndarray:
    """`scores` plus `other` standardised to `weight` times the spread of `scores`: the
    ranking of z(scores) + weight × z(other), on the scale of `scores`."""
    # The two standard deviations by hand: numpy's std costs 10 us a call at this size. In
    # float64: a float32 sum of squares overflowed for scores of 1e20 (a crafted archive's
    # finite weights), and the blend answered NaN.
    scores = np.asarray(scores, np.float64)
    centred = scores - scores.mean()
    spread = float(np.sqrt(np.dot(centred, centred) / len(scores)))
    z = np.asarray(other, np.float64) - other.mean()
    other_spread = float(np.sqrt(np.dot(z, z) / len(other)))
    scale = weight * spread / other_spread if other_spread else 0.0
    if scale == 0.0 or not math.isfinite(scale):
        # A spread of nothing, or one so near nothing that the scale overflows: `other`
        # then orders nothing, and `scores` stands alone.
        return scores
    return scores + scale * z


def _unit_rows(x: sp.csr_matrix) -> sp.csr_matrix:
    import scipy.sparse as sp

    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1), dtype=np.float64)).ravel()
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ x, dtype=np.float32)


def _singular_directions(rows: sp.csr_matrix, d: int) -> tuple[np.ndarray, np.ndarray]:
    """The `d` leading right singular vectors of `rows` (columns x d) and the rows'
    coordinates on them (rows x d); fewer when the rows have fewer."""
    d = max(min(d, min(rows.shape) - 1), 0)
    if d == 0 or rows.nnz == 0:
        return np.zeros((rows.shape[1], 0), np.float32), np.zeros((rows.shape[0], 0), np.float32)
    from sklearn.utils.extmath import randomized_svd

    _, _, directions = randomized_svd(rows.astype(np.float64), d, random_state=0)
    compressor = np.ascontiguousarray(directions.T, np.float32)
    return compressor, np.asarray(rows @ compressor, np.float32)


def _valid_ranges(ranges: np.ndarray, width: int) -> bool:
    """Sorted, disjoint [start, end) pairs within the features."""
    if ranges.ndim != 2 or ranges.shape[1] != 2:
        return False
    flat = ranges.ravel()
    return bool(
        (flat.size == 0 or (flat.min() >= 0 and flat.max() <= width))
        and np.all(ranges[:, 0] <= ranges[:, 1])
        and np.all(np.diff(flat) >= 0)
    )


def _column_mask(ranges: np.ndarray, width: int) -> np.ndarray:
    mask = np.zeros(width, bool)
    for start, end in ranges.tolist():
        mask[start:end] = True
    return mask
