"""StaticEmbeddingFeaturizer: MiniLM distilled into a table of WordPiece-token vectors at
training time (model2vec-style, moved towards the tokens' states in the training data's
frequent word pairs), averaged per sentence at parse time: a dense feature block for tens
of microseconds, no transformer at parse time (the `dense` extra)."""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from server.errors import InvalidConfig, ModelError
from server.nlu.dense_featurizer import (
    INSTALL_HINT,
    MAX_THREADS,
    MODEL_ID,
    MODEL_SHA256,
    TRAIN_THREADS,
    WIDTH,
    archived_threads,
    check_model_state,
    dense_available,
    load_tokenizer,
    shared_encoder,
)
from server.nlu.message import Message
from server.nlu.params import number
from server.nlu.sentence_distillation import fit_to_sentences, pooling_matrix
from server.nlu.state_files import read_array, write_array

# Besides the training vocabulary, the table keeps the most frequent WordPiece tokens so
# that words unseen in training still land near their synonyms. BERT's vocabulary lists
# whole words by falling frequency from id 1996 on (before: padding, unused slots, marks).
FIRST_WORD_ID = 1996
COMMON_TOKENS = 5_000
# Smooth inverse frequency weighting (Arora et al. 2017): a / (a + p(token)), p from the
# training sentences. Fixed on the validation splits (docs/benchmarks.md, NLU).
SIF_A = 1e-3
# The table's principal components kept: fewer columns make the classifier train and score
# faster at no cost in validation accuracy (docs/benchmarks.md, NLU).
DIMENSIONS = 128
# `context: bigrams`: every pair of adjacent words seen at least BIGRAM_MIN_COUNT times in
# training runs through MiniLM as "[CLS] w1 w2 [SEP]", giving each of its tokens an output
# state in context. The static vectors are mapped into that space by a ridge regression
# (penalty RIDGE) fitted on the tokens that have both; a token's row is then its
# contextual mean shrunk towards its mapped static vector, (n x mean + SHRINK x mapped) /
# (n + SHRINK) over n occurrences, so that rare contexts move it less. Fixed on the
# validation splits (docs/benchmarks.md, NLU).
CONTEXTS = ("bigrams", "none")
BIGRAM_MIN_COUNT = 2
RIDGE = 100.0
SHRINK = 2.0
# `sentences: N` (0: off): up to N training sentences are embedded by MiniLM and the table
# is fitted so that their pooled rows approach those embeddings: one affine map of the
# whole table (penalty MAP_RIDGE), then per-token corrections (penalty `sentence_ridge`,
# default SENTENCE_RIDGE). Off by default: it gained on BANKING77's validation split, not
# on HWU64's, and embedding all sentences costs as much as the rest of the training
# (docs/benchmarks.md, NLU).
MAP_RIDGE = 1.0
SENTENCE_RIDGE = 0.3


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Any:
    tokenizer = load_tokenizer()
    tokenizer.no_truncation()
    return tokenizer


def _token_ids(texts: list[str]) -> list[list[int]]:
    if len(texts) == 1:
        return [_tokenizer().encode(texts[0], add_special_tokens=False).ids]
    return [e.ids for e in _tokenizer().encode_batch(texts, add_special_tokens=False)]


# A parse's WordPiece ids are looked up a space-separated piece of the text at a time
# (twenty-second NLU round): the tokenizer (BERT's normalizer, pre-tokenizer and WordPiece)
# treats each character on its own and always splits at a space, so the ids of a text are
# those of its pieces one after another. A piece seen before costs a dict look-up instead of
# its share of a call into the tokenizer; the new ones of a message go to the tokenizer in
# one call, as a pre-tokenized list. Bounded: pieces of up to CACHED_PIECE characters,
# PIECE_CACHE of them (the oldest leave first): 0.33 KB a word of 8 letters, 1.7 KB for 64
# random letters (many WordPieces; tracemalloc), so 5 MB once full of ordinary words, 28 MB
# at most.
PIECE_CACHE = 16_384
CACHED_PIECE = 64
_piece_ids: dict[str, tuple[int, ...]] = {}


def text_token_ids(text: str) -> list[int]:
    """The WordPiece ids of `text`, as `_token_ids([text])[0]` gives them."""
    pieces = text.split(" ")
    cache = _piece_ids
    # Read once: another thread may let a piece go from the cache meanwhile.
    known = {piece: cache.get(piece) for piece in pieces}
    missing = [piece for piece, ids in known.items() if ids is None]
    if missing:
        encoding = _tokenizer().encode(missing, is_pretokenized=True, add_special_tokens=False)
        grouped: list[list[int]] = [[] for _ in missing]
        for token, word in zip(encoding.ids, encoding.word_ids, strict=True):
            grouped[word].append(token)
        for piece, ids in zip(missing, grouped, strict=True):
            known[piece] = found = tuple(ids)
            if len(piece) <= CACHED_PIECE:
                if len(cache) >= PIECE_CACHE:
                    try:
                        del cache[next(iter(cache))]
                    except (RuntimeError, KeyError, StopIteration):  # another parse's change
                        pass
                cache[piece] = found
    out: list[int] = []
    for piece in pieces:
        out.extend(known[piece])  # type: ignore[arg-type]
    return out


def _words(texts: list[str]) -> list[list[tuple[int, ...]]]:
    """Each sentence as its words, a word being the token ids of its WordPiece pieces."""
    sentences = []
    for encoding in _tokenizer().encode_batch(texts, add_special_tokens=False):
        words: dict[int, list[int]] = {}
        for token, word in zip(encoding.ids, encoding.word_ids, strict=True):
            words.setdefault(-1 if word is None else word, []).append(token)
        sentences.append([tuple(pieces) for pieces in words.values()])
    return sentences


def bigram_counts(texts: list[str]) -> Counter[tuple[int, ...]]:
    """How often each pair of adjacent words occurs, as the token ids of both words."""
    return Counter(a + b for words in _words(texts) for a, b in itertools.pairwise(words))


def contextual_rows(
    token_ids: np.ndarray, static: np.ndarray, phrases: dict[tuple[int, ...], float], encoder: Any
) -> np.ndarray:
    """Rows of `token_ids` in context: the static rows mapped by ridge regression into the
    space of the tokens' output states in the weighted `phrases`, and each token's mean
    state over its occurrences blended in by their number (SHRINK, RIDGE above)."""
    rows = {int(token): row for row, token in enumerate(token_ids)}
    sums = np.zeros(static.shape, np.float64)
    weights = np.zeros(len(token_ids), np.float64)
    keys = [p for p in phrases if all(t in rows for t in p)]
    for phrase, states in zip(keys, encoder.phrase_states(keys), strict=True):
        index = [rows[t] for t in phrase]
        np.add.at(sums, index, states * phrases[phrase])
        np.add.at(weights, index, phrases[phrase])
    seen = weights > 0
    if not seen.any():
        return static
    static = static.astype(np.float64)
    contextual = sums[seen] / weights[seen, None]
    x_mean, y_mean = static[seen].mean(axis=0), contextual.mean(axis=0)
    x = static[seen] - x_mean
    mapping = np.linalg.solve(x.T @ x + RIDGE * np.eye(x.shape[1]), x.T @ (contextual - y_mean))
    out = (static - x_mean) @ mapping + y_mean
    n = weights[seen, None]
    out[seen] = (sums[seen] + SHRINK * out[seen]) / (n + SHRINK)
    return out.astype(np.float32)


class StaticEmbeddingFeaturizer:
    """A sentence is the normalised sum of its tokens' (weighted, centred) table rows."""

    def __init__(self, config: dict[str, Any], name: str = "StaticEmbeddingFeaturizer"):
        self.config = config
        self.name = name
        # Read with `number` (before: float("x") and int([1]) escaped as tracebacks, a 500
        # from POST /model/train), and before the model is looked for, so a mistake is named
        # wherever the model is installed.
        self.weight = number(config, "weight", 1.0, name, minimum=0)
        self.common_tokens = number(
            config, "common_tokens", COMMON_TOKENS, name, whole=True, minimum=0
        )
        self.dimensions = number(config, "dimensions", DIMENSIONS, name, whole=True)
        if not 1 <= self.dimensions <= WIDTH:
            raise InvalidConfig(f"{name}: dimensions must be between 1 and {WIDTH}")
        self.train_threads = number(
            config, "train_threads", TRAIN_THREADS, name, whole=True, minimum=1, maximum=MAX_THREADS
        )
        self.context = str(config.get("context", CONTEXTS[0]))
        if self.context not in CONTEXTS:
            raise InvalidConfig(f"{name}: context must be one of {', '.join(CONTEXTS)}")
        self.sentences = number(config, "sentences", 0, name, whole=True, minimum=0)
        self.ridge = number(config, "sentence_ridge", SENTENCE_RIDGE, name, minimum=0)
        if not dense_available():
            raise InvalidConfig(f"{name} needs the sentence-embedding model: {INSTALL_HINT}")
        self.token_ids_ = np.zeros(0, np.int32)
        self.table_ = np.zeros((0, self.dimensions), np.float32)
        self._rows = np.zeros(0, np.int32)
        self._indices = list(range(self.dimensions))

    def train(self, messages: list[Message], data: Any) -> None:
        sentences = _token_ids([m.text for m in messages])
        vocabulary = _tokenizer().get_vocab_size()
        counts = np.zeros(vocabulary, np.float64)
        for ids in sentences:
            np.add.at(counts, ids, 1.0)
        common = np.arange(FIRST_WORD_ID, min(vocabulary, FIRST_WORD_ID + self.common_tokens))
        token_ids = np.union1d(np.flatnonzero(counts), common).astype(np.int32)
        encoder = shared_encoder(self.train_threads)
        vectors = encoder.token_vectors(token_ids)
        if self.context == "bigrams":
            bigrams = bigram_counts([m.text for m in messages])
            phrases = {p: float(n) for p, n in bigrams.items() if n >= BIGRAM_MIN_COUNT}
            vectors = contextual_rows(token_ids, vectors, phrases, encoder)
        frequency = counts[token_ids] / max(counts.sum(), 1.0)
        sif = SIF_A / (SIF_A + frequency)
        if self.sentences > 0 and len(token_ids):
            vectors = self._fit_to_sentences(messages, token_ids, vectors, sif, encoder)
        vectors -= vectors.mean(axis=0) if len(vectors) else 0.0
        vectors = self._project(vectors)
        vectors *= sif[:, None]
        # Stored as float16: train on the same rounded values a loaded model uses.
        self.token_ids_, self.table_ = token_ids, vectors.astype(np.float16).astype(np.float32)
        self._index(vocabulary)
        for message, ids in zip(messages, sentences, strict=True):
            message.blocks.append(self._block(ids))

    def _fit_to_sentences(
        self,
        messages: list[Message],
        token_ids: np.ndarray,
        vectors: np.ndarray,
        weights: np.ndarray,
        encoder: Any,
    ) -> np.ndarray:
        """`vectors` fitted to MiniLM's embeddings of up to `sentences` distinct training
        sentences, evenly spread over the data (`sentence_distillation`)."""
        texts = list(dict.fromkeys(m.text for m in messages))
        # Evenly spread; more than the data holds is every sentence (`sentences: 10**12` asked
        # numpy for a 7 TiB array of indices).
        count = min(self.sentences, len(texts))
        chosen = np.unique(np.linspace(0, len(texts) - 1, count).round().astype(int))
        texts = [texts[i] for i in chosen]
        rows = np.full(_tokenizer().get_vocab_size(), -1, np.int64)
        rows[token_ids] = np.arange(len(token_ids))
        pool = pooling_matrix(_token_ids(texts), rows, weights)
        fitted = fit_to_sentences(vectors, pool, encoder.embed(texts), MAP_RIDGE, self.ridge)
        return fitted.astype(np.float32)

    def _project(self, vectors: np.ndarray) -> np.ndarray:
        """The first `dimensions` principal coordinates (zero columns when there are fewer
        tokens than dimensions: the block keeps its width)."""
        projected = np.zeros((len(vectors), 0), np.float32)
        if len(vectors):
            _, _, components = np.linalg.svd(vectors, full_matrices=False)
            projected = vectors @ components[: self.dimensions].T
        return np.pad(projected, ((0, 0), (0, self.dimensions - projected.shape[1])))

    def process(self, message: Message) -> None:
        message.blocks.append(self._block(text_token_ids(message.text)))

    def _index(self, vocabulary: int) -> None:
        self._rows = np.full(vocabulary, -1, np.int32)
        self._rows[self.token_ids_] = np.arange(len(self.token_ids_), dtype=np.int32)

    def _block(self, ids: list[int]) -> tuple[list[int], list[float], int]:
        rows = self._rows[np.asarray(ids, dtype=np.int64)] if ids else self._rows[:0]
        rows = rows[rows >= 0]
        if len(rows) == 0:
            return [], [], self.dimensions
        vector = self.table_[rows].sum(axis=0)
        # np.linalg.norm's own sum for a vector (its Python checks cost more than the sum).
        norm = float(np.sqrt(np.dot(vector, vector)))
        if norm == 0.0:
            return [], [], self.dimensions
        return self._indices, (vector * (self.weight / norm)).tolist(), self.dimensions

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        write_array(directory, f"{prefix}static_token_ids.npy", self.token_ids_)
        write_array(directory, f"{prefix}static_table.npy", self.table_.astype(np.float16))
        return {"model_id": MODEL_ID, "model_sha256": MODEL_SHA256}

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> StaticEmbeddingFeaturizer:
        check_model_state(state, name)
        featurizer = cls(archived_threads(config), name)
        token_ids = read_array(directory, f"{prefix}static_token_ids.npy", np.int32, ndim=1)
        table = read_array(directory, f"{prefix}static_table.npy", np.float32, ndim=2)
        try:
            vocabulary = _tokenizer().get_vocab_size()
        except InvalidConfig as e:
            raise ModelError(str(e)) from e
        if table.shape != (len(token_ids), featurizer.dimensions):
            raise ModelError(f"{name}: the token table does not match its token ids")
        if len(token_ids) and (token_ids.min() < 0 or token_ids.max() >= vocabulary):
            raise ModelError(f"{name}: token ids outside the tokenizer's vocabulary")
        featurizer.token_ids_, featurizer.table_ = token_ids, table
        featurizer._index(vocabulary)
        return featurizer
