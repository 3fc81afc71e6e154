"""The message that flows through the NLU pipeline: text, tokens, features and the
predictions components add to it."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import numpy as np


class Token(NamedTuple):
    """A word of the message and its character span. A named tuple: a parse makes about 30
    (the tokenizer's, the typed and carrier words'), and a frozen dataclass took 10 times
    as long to build one."""

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
        import numpy as np

        indices: list[int] = []
        values: list[float] = []
        offsets: list[int] = []
        lengths: list[int] = []
        offset = 0
        for block_indices, block_values, width in self.blocks:
            indices.extend(block_indices)
            values.extend(block_values)
            offsets.append(offset)
            lengths.append(len(block_indices))
            offset += width
        # Packed in C, and each block's offset added by numpy: numpy's conversion of a list
        # checks each element's type and shape, and adding the offsets in Python made an
        # int object a value (together a twentieth of a parse's instructions on SNIPS).
        # float64 to float32 rounds as numpy's conversion of a Python float does.
        count = len(indices)
        columns = np.frombuffer(struct.pack(f"{count}q", *indices), np.int64)
        weights = np.frombuffer(struct.pack(f"{count}d", *values), np.float64)
        return columns + np.repeat(np.array(offsets, np.int64), lengths), weights.astype(np.float32)

    @property
    def feature_width(self) -> int:
        return sum(width for _, _, width in self.blocks)
