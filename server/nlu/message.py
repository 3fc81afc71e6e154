"""The message that flows through the NLU pipeline: text, tokens, features and the
predictions components add to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Token:
    """A word of the message and its character span."""

    text: str
    start: int
    end: int


@dataclass
class Message:
    """State of one message while it moves through the pipeline."""

    text: str
    tokens: list[Token] = field(default_factory=list)
    # Sentence-level sparse features, one block per featurizer: (indices, values, width).
    blocks: list[tuple[list[int], list[float], int]] = field(default_factory=list)
    # Positions in `blocks` of character n-gram blocks (the intent classifier's nearest
    # training sentences can be looked up without them: server/nlu/neighbours.py).
    char_blocks: list[int] = field(default_factory=list)
    # For each token, the names of the regex / lookup patterns it is part of.
    token_patterns: list[set[str]] | None = None
    intent: dict[str, Any] | None = None
    intent_ranking: list[dict[str, Any]] = field(default_factory=list)
    entities: list[dict[str, Any]] = field(default_factory=list)
    response_selector: dict[str, Any] | None = None

    def sparse_vector(self) -> tuple[np.ndarray, np.ndarray]:
        """All feature blocks as one sparse row: (column indices, values)."""
        indices: list[int] = []
        values: list[float] = []
        offset = 0
        for block_indices, block_values, width in self.blocks:
            indices.extend(map(offset.__add__, block_indices) if offset else block_indices)
            values.extend(block_values)
            offset += width
        return np.asarray(indices, dtype=np.int64), np.asarray(values, dtype=np.float32)

    @property
    def feature_width(self) -> int:
        return sum(width for _, _, width in self.blocks)
