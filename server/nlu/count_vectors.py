"""CountVectorsFeaturizer: bag of word or character n-grams, TF-IDF weighted and
L2-normalised, as one sparse sentence-level feature block."""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.errors import InvalidConfig, ModelError, how_many
from server.nlu.message import Message
from server.nlu.params import flag, number
from server.nlu.state_files import expect, read_array, read_json, write_array, write_json

if TYPE_CHECKING:
    import numpy as np

_ANALYZERS = ("word", "char", "char_wb")
# Distinct words whose char_wb columns a featurizer remembers (a tuple of ints each), as
# many as the CRF's feature names (crf_extractor.WORD_CACHE): 512 was fewer than the words of
# 100 SNIPS sentences, so a server's stream of sentences kept forming the n-grams of words it
# had seen. Only words up to CACHED_WORD characters: about 0.5 KB a word of 8 letters, 2.5 KB
# at 64 (its tuple of up to 6 x 64 columns): 40 MB at most once full of the longest words.
WORD_CACHE_SIZE = 16_384
CACHED_WORD = 64


def _document_frequency(config: dict[str, Any], key: str, default: float, name: str) -> Any:
    """`min_df`/`max_df` as scikit-learn reads them: a whole number counts examples, a
    fraction (`0.5`, `1.0`) is their share."""
    value = config.get(key, default)
    share = isinstance(value, float) or (
        isinstance(value, str) and any(mark in value for mark in ".eE")
    )
    if share:
        return number(config, key, default, name, minimum=0, maximum=1)
    return number(config, key, default, name, whole=True, minimum=0)


class CountVectorsFeaturizer:
    """Learns an n-gram vocabulary and its IDF weights; featurizes one message in µs."""

    def __init__(self, config: dict[str, Any], name: str = "CountVectorsFeaturizer"):
        self.config = config
        self.name = name
        self.analyzer = str(config.get("analyzer", "word"))
        if self.analyzer not in _ANALYZERS:
            raise InvalidConfig(
                f"{name}: analyzer must be one of {', '.join(_ANALYZERS)}, not {self.analyzer!r}"
            )
        self.min_ngram = number(config, "min_ngram", 1, name, whole=True, minimum=1)
        self.max_ngram = number(config, "max_ngram", 1, name, whole=True, minimum=1)
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise InvalidConfig(f"{name}: need 1 <= min_ngram <= max_ngram")
        self.lowercase = flag(config, "lowercase", True, name)
        self.min_df = _document_frequency(config, "min_df", 1, name)
        self.max_df = _document_frequency(config, "max_df", 1.0, name)
        self.max_features: int | None = (
            None
            if config.get("max_features") is None
            else number(config, "max_features", 0, name, whole=True, minimum=1)
        )
        self.use_tfidf = flag(config, "use_tfidf", True, name)
        oov_words = config.get("OOV_words")
        if oov_words is not None and not (
            isinstance(oov_words, list) and all(isinstance(w, str) for w in oov_words)
        ):
            # Rasa would test each word against the string's letters (`"a" in "abc"`).
            raise InvalidConfig(
                f"{name}: 'OOV_words' must be a list of words such as [hmm, ehm], not {oov_words!r}"
            )
        self.vocabulary_: dict[str, int] = {}
        # None until trained: building one (as `data validate` does) needs no NumPy.
        self.idf_: np.ndarray | None = None
        self._idf: list[float] = []
        # char_wb n-grams never cross a word: a word's columns are looked up once.
        self._word_columns = functools.lru_cache(WORD_CACHE_SIZE)(self._columns_of_word)

    @property
    def width(self) -> int:
        return len(self.vocabulary_)

    def ngrams(self, message: Message) -> list[str]:
        """The n-grams of a message according to the analyzer settings."""
        return self._ngrams_of(self._words(message))

    def _ngrams_of(self, words: list[str]) -> list[str]:
        low, high = self.min_ngram, self.max_ngram
        grams: list[str] = []
        # As scikit-learn's: no n-gram is longer than the text (a max_ngram of 10**8 went
        # round the loop 10**8 times for every message).
        if self.analyzer == "word":
            count = len(words)
            for n in range(low, min(high, count) + 1):
                if n == 1:
                    grams.extend(words)
                elif n == 2:
                    grams.extend([f"{a} {b}" for a, b in itertools.pairwise(words)])
                else:
                    grams.extend([" ".join(words[i : i + n]) for i in range(count - n + 1)])
        elif self.analyzer == "char_wb":
            for word in words:
                grams.extend(self._word_grams(word))
        else:
            text = " ".join(words)
            size = len(text)
            for n in range(low, min(high, size) + 1):
                grams.extend([text[i : i + n] for i in range(size - n + 1)])
        return grams

    def _words(self, message: Message) -> list[str]:
        words = [t.text for t in message.tokens]
        return [w.lower() for w in words] if self.lowercase else words

    def _word_grams(self, word: str) -> list[str]:
        padded = f" {word} "
        size = len(padded)
        grams: list[str] = []
        for n in range(self.min_ngram, min(self.max_ngram, size) + 1):
            grams.extend([padded[i : i + n] for i in range(size - n + 1)])
        return grams

    def _columns_of_word(self, word: str) -> tuple[int, ...]:
        """The vocabulary columns of a word's char_wb n-grams, once per n-gram (in
        `_word_grams`' order), each n-gram looked up as it is cut: a word not seen before
        costs one pass, not a list of its n-grams first."""
        padded = f" {word} "
        size = len(padded)
        get = self.vocabulary_.get
        return tuple(
            [
                column
                for n in range(self.min_ngram, min(self.max_ngram, size) + 1)
                for i in range(size - n + 1)
                if (column := get(padded[i : i + n])) is not None
            ]
        )

    def train(self, messages: list[Message], data: Any) -> None:
        import numpy as np

        doc_freq: Counter[str] = Counter()
        all_grams = [self.ngrams(m) for m in messages]
        for grams in all_grams:
            doc_freq.update(set(grams))
        n_docs = max(len(messages), 1)
        min_count = (
            math.ceil(self.min_df * n_docs) if isinstance(self.min_df, float) else self.min_df
        )
        max_count = (
            math.floor(self.max_df * n_docs) if isinstance(self.max_df, float) else self.max_df
        )
        if max_count < min_count:
            raise InvalidConfig(
                f"{self.name}: 'max_df' ({self.max_df!r}) keeps fewer documents than "
                f"'min_df' ({self.min_df!r}) on {how_many(len(messages), 'example')}"
            )
        kept = sorted(g for g, c in doc_freq.items() if min_count <= c <= max_count)
        if self.max_features is not None and len(kept) > self.max_features:
            # As scikit-learn: the most frequent n-grams over all examples, ties by name.
            total: Counter[str] = Counter()
            for grams in all_grams:
                total.update(grams)
            ranked = sorted(kept, key=lambda g: -total[g])
            kept = sorted(ranked[: self.max_features])
        self.vocabulary_ = {g: i for i, g in enumerate(kept)}
        self._word_columns.cache_clear()
        df = np.array([doc_freq[g] for g in kept], dtype=np.float64)
        self.idf_ = (np.log((1.0 + n_docs) / (1.0 + df)) + 1.0).astype(np.float32)
        self._idf = self.idf_.tolist()
        for message, grams in zip(messages, all_grams, strict=True):
            self._mark_char_block(message)
            message.blocks.append(self._weigh(grams))

    def process(self, message: Message) -> None:
        self._mark_char_block(message)
        message.blocks.append(self.words_block([t.text for t in message.tokens]))

    def words_block(self, words: list[str]) -> tuple[list[int], list[float], int]:
        """The block of a message of these `words` (what `process` appends for a message
        whose tokens they are), for a featurizer of words it made itself (the typed words
        of server/nlu/entity_types.py): no Message and Token objects built to hold them."""
        if self.lowercase:
            words = [w.lower() for w in words]
        if self.analyzer == "char_wb":
            cached, columns_of = self._word_columns, self._columns_of_word
            columns = itertools.chain.from_iterable(
                [cached(w) if len(w) <= CACHED_WORD else columns_of(w) for w in words]
            )
            return self._weights(Counter(columns))
        return self._weigh(self._ngrams_of(words))

    def _mark_char_block(self, message: Message) -> None:
        if self.analyzer != "word":
            message.char_blocks.append(len(message.blocks))

    def _weigh(self, grams: list[str]) -> tuple[list[int], list[float], int]:
        # Looked up and counted in C; distinct grams have distinct columns, and None counts
        # the grams outside the vocabulary.
        counts = Counter(map(self.vocabulary_.get, grams))
        counts.pop(None, None)
        return self._weights(counts)

    def _weights(self, counts: Mapping[Any, int]) -> tuple[list[int], list[float], int]:
        """Sublinear TF-IDF, L2-normalised, of the column counts, by column."""
        if not counts:
            return [], [], self.width
        indices = sorted(counts)
        if self.use_tfidf:
            idf, log = self._idf, math.log
            values = [
                idf[i] if (count := counts[i]) == 1 else (1.0 + log(count)) * idf[i]
                for i in indices
            ]
        else:
            values = [float(counts[i]) for i in indices]
        norm = math.sqrt(sum([v * v for v in values]))
        return indices, [v / norm for v in values], self.width

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        write_json(directory, f"{prefix}vocabulary.json", list(self.vocabulary_))
        import numpy as np

        idf = self.idf_ if self.idf_ is not None else np.zeros(0, dtype=np.float32)
        write_array(directory, f"{prefix}idf.npy", idf)
        return {}

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> CountVectorsFeaturizer:
        import numpy as np

        featurizer = cls(config, name)
        grams = expect(read_json(directory, f"{prefix}vocabulary.json"), list, "vocabulary")
        if not all(isinstance(g, str) for g in grams):
            raise ModelError(f"{name}: vocabulary must hold strings")
        featurizer.vocabulary_ = {g: i for i, g in enumerate(grams)}
        featurizer._word_columns.cache_clear()
        idf = read_array(directory, f"{prefix}idf.npy", np.float32, ndim=1)
        if len(idf) != len(grams):
            raise ModelError(f"{name}: vocabulary and IDF sizes differ")
        if len(idf) and idf.min() < 1.0:
            # Training's are 1 and above; a message of grams weighing 0 had no length, and
            # dividing by it made every such parse a ZeroDivisionError (a 500).
            raise ModelError(f"{name}: {prefix}idf.npy holds IDF values below 1")
        featurizer.idf_ = idf
        featurizer._idf = idf.tolist()
        return featurizer
