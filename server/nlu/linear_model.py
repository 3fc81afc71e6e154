"""A trained linear text classifier as plain arrays: fitting with scikit-learn, scoring a
sparse row with numpy, and calibrated confidences (a tempered softmax of the scores)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from server.errors import ModelError
from server.nlu.message import Message
from server.nlu.state_files import read_array, write_array

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp


def feature_matrix(messages: list[Message], width: int) -> sp.csr_matrix:
    """Stack the sparse sentence vectors of `messages` into a CSR matrix."""
    import numpy as np
    import scipy.sparse as sp  # training only: SciPy is not imported to serve a model

    indptr = [0]
    indices: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for message in messages:
        idx, val = message.sparse_vector()
        indices.append(idx)
        values.append(val)
        indptr.append(indptr[-1] + len(idx))
    return sp.csr_matrix(
        (
            np.concatenate(values) if values else np.zeros(0, np.float32),
            np.concatenate(indices) if indices else np.zeros(0, np.int64),
            np.asarray(indptr),
        ),
        shape=(len(messages), width),
        dtype=np.float64,
    )


@dataclass
class LinearModel:
    """Weights (features x classes), bias, class names and the softmax temperature."""

    weights: np.ndarray
    bias: np.ndarray
    classes: list[str]
    temperature: float

    @classmethod
    def fit(
        cls,
        x: sp.csr_matrix,
        labels: list[str],
        c: float = 1.0,
        temperature: float = 5.0,
        max_iter: int = 2000,
        class_weight: str | None = None,
    ) -> LinearModel:
        import numpy as np
        from sklearn.svm import LinearSVC

        classes = sorted(set(labels))
        if len(classes) == 1:
            return cls(
                np.zeros((x.shape[1], 1), np.float32), np.ones(1, np.float32), classes, temperature
            )
        # Seeded: liblinear's dual solver shuffles the examples (numpy's global state otherwise).
        svm = LinearSVC(C=c, max_iter=max_iter, class_weight=class_weight, random_state=0)
        svm.fit(x, labels)
        coef = np.asarray(svm.coef_, dtype=np.float32)
        intercept = np.asarray(svm.intercept_, dtype=np.float32)
        if len(classes) == 2:  # sklearn keeps one row for two classes
            coef = np.vstack([-coef, coef])
            intercept = np.concatenate([-intercept, intercept])
        order = [list(svm.classes_).index(name) for name in classes]
        weights = np.ascontiguousarray(coef[order].T)
        return cls(weights, intercept[order], classes, temperature)

    def scores(self, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
        import numpy as np

        if len(indices) == 0:
            return self.bias.astype(np.float64)
        # In float64: a float32 sum of a crafted archive's finite weights (1e20 each)
        # overflowed to inf, and the confidences were NaN.
        return np.asarray(values, np.float64) @ self.weights.take(indices, axis=0) + self.bias

    def batch_scores(self, x: sp.csr_matrix) -> np.ndarray:
        import numpy as np

        return np.asarray(x @ self.weights) + self.bias

    def confidences(self, scores: np.ndarray) -> np.ndarray:
        import numpy as np

        # Shifted before the temperature scales it: finite scores then give finite
        # confidences whatever the temperature (scores times 1e300 were inf - inf = NaN).
        scores = np.asarray(scores, np.float64)
        z = (scores - scores.max(axis=-1, keepdims=True)) * self.temperature
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def write(self, directory: Path, prefix: str) -> dict:
        write_array(directory, f"{prefix}weights.npy", self.weights)
        write_array(directory, f"{prefix}bias.npy", self.bias)
        return {"classes": self.classes, "temperature": self.temperature}

    @classmethod
    def read(cls, directory: Path, prefix: str, state: dict) -> LinearModel:
        import numpy as np

        classes = state.get("classes")
        temperature = state.get("temperature")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ModelError("linear model classes must be a list of strings")
        # Training refuses 0 and below: loaded, the ranking came out flat or backwards.
        if isinstance(temperature, bool) or not (
            isinstance(temperature, (int, float)) and temperature > 0
        ):
            raise ModelError("linear model temperature must be a number above 0")
        weights = read_array(directory, f"{prefix}weights.npy", np.float32, ndim=2)
        bias = read_array(directory, f"{prefix}bias.npy", np.float32, ndim=1)
        if weights.shape[1] != len(classes) or bias.shape[0] != len(classes):
            raise ModelError("linear model shapes do not match its classes")
        return cls(weights, bias, classes, float(temperature))
