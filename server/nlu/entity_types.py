"""EntityTypeFeaturizer: the message's words with each extracted entity replaced by its type
(`play @artist on @service`), as word n-grams for the intent classifier, and optionally the
carrier (the words around the entities, `^ play _ on _ $`) as another block. At training
time the entities come from a K-fold jackknife of the CRF, as noisy as the ones parsing sees."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.nlu.count_vectors import CountVectorsFeaturizer
from server.nlu.crf_extractor import CRFEntityExtractor
from server.nlu.message import Message, Token
from server.nlu.params import number
from server.nlu.training_data import NLUTrainingData

_Span = tuple[int, int, str]  # start, end, entity type

# The CRF options the jackknife copies, so its CRFs match the pipeline's own.
_CRF_OPTIONS = ("algorithm", "L1_c", "L2_c", "max_iterations")


def typed_words(tokens: list[Token], entities: list[dict[str, Any]]) -> list[str]:
    """The lowercased words of a message, each entity span replaced by one `@type` word."""
    return _spans_replaced(tokens, entities, lambda kind: "@" + kind)


def carrier_words(tokens: list[Token], entities: list[dict[str, Any]]) -> list[str]:
    """The lowercased words outside the entity spans, each span one `_`, between the
    sentence marks `^` and `$`: the frame of the sentence, whatever the entities' types."""
    return ["^", *_spans_replaced(tokens, entities, lambda kind: "_"), "$"]


def _spans_replaced(
    tokens: list[Token], entities: list[dict[str, Any]], mark: Callable[[str], str]
) -> list[str]:
    """The lowercased words of a message, each entity span replaced by one word: `mark` of
    its type."""
    spans = sorted((e["start"], e["end"], e["entity"]) for e in entities)
    words: list[str] = []
    current: _Span | None = None
    for token, span in zip(tokens, _spans_of(tokens, spans), strict=True):
        if span is None:
            words.append(token.text.lower())
        elif span != current:
            words.append(mark(span[2]))
        current = span
    return words


def _spans_of(tokens: list[Token], spans: list[_Span]) -> list[_Span | None]:
    """For each token (in text order), the first of the sorted `spans` it overlaps, or None.
    Spans ending before a token end before every later one, so they are passed once: a
    message of 50,000 tagged numbers costs 50,000 steps, not 50,000² / 2."""
    found: list[_Span | None] = []
    first = 0
    for token in tokens:
        while first < len(spans) and spans[first][1] <= token.start:
            first += 1
        span = None
        i = first
        while i < len(spans) and spans[i][0] < token.end:  # later spans start after the token
            if spans[i][1] > token.start:
                span = spans[i]
                break
            i += 1
        found.append(span)
    return found


def jackknife_entities(
    messages: list[Message], data: NLUTrainingData, folds: int, crf_config: dict[str, Any]
) -> list[list[dict[str, Any]]]:
    """Each message's entities as tagged by a CRF trained on the other folds (message i is
    in fold i mod `folds`), never by one that saw its annotations."""
    predicted: list[list[dict[str, Any]]] = [[] for _ in messages]
    folds = min(folds, len(messages))  # the folds beyond one per message hold none
    for fold in range(folds):
        held_out = [i for i in range(len(messages)) if i % folds == fold]
        kept = [i for i in range(len(messages)) if i % folds != fold]
        if not held_out or not kept:
            continue
        crf = CRFEntityExtractor(crf_config)
        crf.train(
            [messages[i] for i in kept],
            NLUTrainingData(examples=[data.examples[i] for i in kept]),
        )
        for i in held_out:
            shadow = Message(messages[i].text, messages[i].tokens)
            shadow.token_patterns = messages[i].token_patterns
            crf.process(shadow)
            predicted[i] = shadow.entities
    return predicted


class EntityTypeFeaturizer:
    """Runs after a CRF entity extractor and before the intent classifier; idle (adds no
    features) when the training data has no entities. At parse time it reads only the
    entities of the CRF extractors before it in the pipeline (`sources`), the kind it was
    trained on: a regex, lookup or Duckling entity would be a feature it never saw."""

    def __init__(self, config: dict[str, Any], name: str = "EntityTypeFeaturizer"):
        self.config = config
        self.name = name
        self.folds = max(2, number(config, "folds", 5, name, whole=True))
        self.weight = number(config, "weight", 0.5, name, minimum=0)
        # The carrier's 1-3 grams as a second block (nineteenth round, SNIPS); 0 is off.
        self.carrier_weight = number(config, "carrier_weight", 0.0, name, minimum=0)
        self.min_ngram = number(config, "min_ngram", 2, name, whole=True, minimum=1)
        self.max_ngram = number(config, "max_ngram", 3, name, whole=True, minimum=1)
        self.crf_config = {k: config[k] for k in _CRF_OPTIONS if k in config}
        self.vectors_: CountVectorsFeaturizer | None = None
        self.carrier_vectors_: CountVectorsFeaturizer | None = None
        self.sources: list[str] = []  # names of the CRF extractors before it (the pipeline's)

    def _vectors(self) -> CountVectorsFeaturizer:
        # Word 2-3 grams only (the types in context); both fixed by 5-fold CV on SNIPS.
        return CountVectorsFeaturizer(
            {
                "analyzer": "word",
                "min_ngram": self.min_ngram,
                "max_ngram": self.max_ngram,
                "lowercase": False,
            },
            f"{self.name}.vectors",
        )

    def _carrier_vectors(self) -> CountVectorsFeaturizer:
        return CountVectorsFeaturizer(
            {"analyzer": "word", "min_ngram": 1, "max_ngram": 3, "lowercase": False},
            f"{self.name}.carrier",
        )

    def train(self, messages: list[Message], data: NLUTrainingData) -> None:
        self.vectors_ = None
        self.carrier_vectors_ = None
        if not any(e.entities for e in data.examples):
            return
        entities = jackknife_entities(messages, data, self.folds, self.crf_config)
        typed = [
            _typed_message(m.tokens, found) for m, found in zip(messages, entities, strict=True)
        ]
        self.vectors_ = self._vectors()
        self.vectors_.train(typed, data)
        carriers: list[Message] = []
        if self.carrier_weight > 0:
            carriers = [
                _carrier_message(m.tokens, found)
                for m, found in zip(messages, entities, strict=True)
            ]
            self.carrier_vectors_ = self._carrier_vectors()
            self.carrier_vectors_.train(carriers, data)
        for i, message in enumerate(messages):
            message.blocks.append(_scaled(typed[i].blocks[-1], self.weight))
            if carriers:
                message.blocks.append(_scaled(carriers[i].blocks[-1], self.carrier_weight))

    def process(self, message: Message) -> None:
        if self.vectors_ is None:
            return
        found = [e for e in message.entities if e.get("extractor") in self.sources]
        typed = typed_words(message.tokens, found)
        message.blocks.append(_scaled(self.vectors_.words_block(typed), self.weight))
        if self.carrier_vectors_ is not None:
            carrier = carrier_words(message.tokens, found)
            block = self.carrier_vectors_.words_block(carrier)
            message.blocks.append(_scaled(block, self.carrier_weight))

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        if self.vectors_ is None:
            return {"trained": False}
        carrier = self.carrier_vectors_ is not None
        if self.carrier_vectors_ is not None:
            self.carrier_vectors_.state(directory, f"{prefix}carrier_")
        return {
            "trained": True,
            "carrier": carrier,
            "sources": self.sources,
            **self.vectors_.state(directory, prefix),
        }

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> EntityTypeFeaturizer:
        featurizer = cls(config, name)
        featurizer.sources = [str(source) for source in state.get("sources", [])]
        if state.get("trained"):
            vectors = featurizer._vectors()
            featurizer.vectors_ = CountVectorsFeaturizer.from_state(
                vectors.config, state, directory, prefix, vectors.name
            )
            if state.get("carrier"):
                carrier = featurizer._carrier_vectors()
                featurizer.carrier_vectors_ = CountVectorsFeaturizer.from_state(
                    carrier.config, state, directory, f"{prefix}carrier_", carrier.name
                )
        return featurizer


def _typed_message(tokens: list[Token], entities: list[dict[str, Any]]) -> Message:
    return Message("", [Token(w, 0, 0) for w in typed_words(tokens, entities)])


def _carrier_message(tokens: list[Token], entities: list[dict[str, Any]]) -> Message:
    return Message("", [Token(w, 0, 0) for w in carrier_words(tokens, entities)])


def _scaled(
    block: tuple[list[int], list[float], int], weight: float
) -> tuple[list[int], list[float], int]:
    indices, values, width = block
    return indices, [v * weight for v in values], width
