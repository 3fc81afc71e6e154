"""TeacherMapFeaturizer: MiniLM's sentence embedding predicted from the sentence's other
features by a linear map learned at training time, as one dense block for the intent
classifier. The transformer runs only at training, on a sample of the training sentences;
a parse multiplies the message's sparse features by the stored map (the `dense` extra is
needed to train, not to parse).

Training: `sentences` evenly spread training sentences are embedded by all-MiniLM-L6-v2 (the
DenseFeaturizer's model); the embeddings' `dimensions` leading principal components are the
targets of a ridge regression (penalty `ridge`, scikit-learn's KernelRidge with a linear
kernel: one solve of sentences x sentences) from the feature blocks of the featurizers before
this one. The map, features x dimensions, is stored as float16 `.npy`. A message's block is
its features times the map, L2-normalised, times `weight`. Measured in the eighteenth NLU
round (docs/benchmarks.md)."""

from __future__ import annotations

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
    dense_available,
    shared_encoder,
)
from server.nlu.linear_model import feature_matrix
from server.nlu.message import Message
from server.nlu.params import number
from server.nlu.state_files import read_array, write_array

# Training sentences the teacher embeds: the transformer pass is nearly all of the training
# cost (49-59 s of CPU for 3,000 BANKING77 sentences on the loaded AMD host of the
# eighteenth NLU round, docs/benchmarks.md); fewer sentences train faster.
SENTENCES = 3_000
RIDGE = 1.0
DIMENSIONS = 64


class TeacherMapFeaturizer:
    """Adds the predicted teacher embedding (`dimensions` wide) as a dense feature block."""

    def __init__(self, config: dict[str, Any], name: str = "TeacherMapFeaturizer"):
        self.config = config
        self.name = name
        self.sentences = number(config, "sentences", SENTENCES, name, whole=True, minimum=1)
        self.ridge = number(config, "ridge", RIDGE, name, positive=True)
        self.dimensions = number(
            config, "dimensions", DIMENSIONS, name, whole=True, minimum=1, maximum=WIDTH
        )
        self.weight = number(config, "weight", 1.0, name, minimum=0)
        self.train_threads = number(
            config, "train_threads", TRAIN_THREADS, name, whole=True, minimum=1, maximum=MAX_THREADS
        )
        self.map_: np.ndarray | None = None
        self._indices = list(range(self.dimensions))

    def train(self, messages: list[Message], data: Any) -> None:
        if not dense_available():
            raise InvalidConfig(f"{self.name} needs the sentence-embedding model: {INSTALL_HINT}")
        width = messages[0].feature_width if messages else 0
        if width == 0:
            raise InvalidConfig(f"{self.name} needs a featurizer before it in the pipeline")
        from sklearn.decomposition import PCA
        from sklearn.kernel_ridge import KernelRidge

        x = feature_matrix(messages, width)
        # Evenly spread; more than there are messages is every message (`sentences: 10**12`
        # asked numpy for a 7 TiB array of indices).
        count = min(self.sentences, len(messages))
        rows = np.unique(np.linspace(0, len(messages) - 1, count).astype(np.int64))
        teacher = shared_encoder(self.train_threads).embed([messages[i].text for i in rows])
        dimensions = min(self.dimensions, len(rows))
        targets = PCA(dimensions, svd_solver="full").fit_transform(teacher.astype(np.float64))
        ridge = KernelRidge(alpha=self.ridge, kernel="linear").fit(x[rows], targets)
        mapping = np.zeros((width, self.dimensions), np.float64)
        mapping[:, :dimensions] = np.asarray(x[rows].T @ ridge.dual_coef_)
        self.map_ = mapping.astype(np.float16)
        blocks = np.asarray(x @ self.map_.astype(np.float32), np.float32)
        for message, vector in zip(messages, blocks, strict=True):
            message.blocks.append(self._block(vector))

    def process(self, message: Message) -> None:
        if self.map_ is None:
            return
        indices, values = message.sparse_vector()
        rows = self.map_.take(indices, axis=0).astype(np.float32)
        message.blocks.append(self._block(values @ rows))

    def _block(self, vector: np.ndarray) -> tuple[list[int], list[float], int]:
        norm = float(np.sqrt(np.dot(vector, vector)))
        if norm == 0.0:
            return [], [], self.dimensions
        return self._indices, (vector * (self.weight / norm)).tolist(), self.dimensions

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        if self.map_ is None:
            return {"trained": False}
        write_array(directory, f"{prefix}teacher_map.npy", self.map_)
        return {"trained": True, "model_id": MODEL_ID, "model_sha256": MODEL_SHA256}

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> TeacherMapFeaturizer:
        featurizer = cls(archived_threads(config), name)
        if state.get("trained"):
            mapping = read_array(directory, f"{prefix}teacher_map.npy", np.float16, ndim=2)
            if mapping.shape[1] != featurizer.dimensions:
                raise ModelError(f"{name}: the stored map is not {featurizer.dimensions} wide")
            featurizer.map_ = mapping
        return featurizer
