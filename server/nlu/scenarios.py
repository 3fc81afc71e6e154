"""Scenario scores: a second linear model over the intents' scenarios, blended into the intent
scores.

Intent names such as `alarm_query`, `alarm_set` and `alarm_remove` name a scenario (`alarm`)
before the first separator. When the names form such a hierarchy, a linear SVM is trained
on the same features with each sentence labelled by its intent's scenario (more sentences a
class than the intents have), and each intent's score gets its scenario's score added,
standardised over the intents: the ranking is that of z(scores) + weight × z(scenario
scores), while the scores keep the intent model's scale (as in server/nlu/neighbours.py).
Chosen in the nineteenth NLU round (docs/benchmarks.md). Learned state: the scenario
model's weights and bias (.npy) and each intent's scenario (JSON, in the classifier's state).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from server.errors import ModelError
from server.nlu.linear_model import LinearModel
from server.nlu.neighbours import add_standardised, stored_blend_weight

if TYPE_CHECKING:
    import scipy.sparse as sp

# The names form a hierarchy when at least this share of the intents has a scenario it
# shares with another intent (HWU64: 61 of 64; BANKING77's `card_arrival`, `top_up_failed`...:
# 33 of 77, most prefixes a single intent's first word).
SHARED_SHARE = 0.75


def scenarios_of(classes: list[str], separator: str) -> list[str] | None:
    """Each intent's scenario (its name up to the first `separator`), or None when the names
    are no hierarchy: fewer than two scenarios, or fewer than SHARED_SHARE of the intents
    sharing theirs with another intent."""
    if not separator:
        return None
    names = [name.split(separator, 1)[0] for name in classes]
    sizes = Counter(names)
    shared = sum(1 for name in names if sizes[name] > 1)
    if len(sizes) < 2 or shared < SHARED_SHARE * len(names):
        return None
    return names


@dataclass
class Scenarios:
    model: LinearModel  # features x scenarios
    of_class: np.ndarray  # each intent's scenario (an index in model.classes)
    weight: float

    @classmethod
    def fit(
        cls,
        x: sp.csr_matrix,
        labels: list[str],
        classes: list[str],
        weight: float,
        separator: str,
        c: float = 1.0,
    ) -> Scenarios | None:
        """The scenario model of the weighted training rows `x` (intents `labels`), or None
        when the intent names `classes` are no hierarchy."""
        names = scenarios_of(classes, separator)
        if names is None:
            return None
        scenario = dict(zip(classes, names, strict=True))
        model = LinearModel.fit(x, [scenario[label] for label in labels], c)
        index = {name: i for i, name in enumerate(model.classes)}
        return cls(model, np.asarray([index[name] for name in names], np.int64), weight)

    def blend(self, scores: np.ndarray, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
        own = self.model.scores(indices, values).take(self.of_class)
        return add_standardised(scores, own, self.weight)

    def write(self, directory: Path, prefix: str) -> dict:
        state = self.model.write(directory, f"{prefix}scenario_")
        return {
            "scenario_classes": state["classes"],
            "scenario_of_intent": self.of_class.tolist(),
            "scenario_weight": self.weight,
        }

    @classmethod
    def read(
        cls, directory: Path, prefix: str, width: int, n_classes: int, state: dict
    ) -> Scenarios:
        weight, of_class = state.get("scenario_weight"), state.get("scenario_of_intent")
        blend_weight = stored_blend_weight(weight, "intent scenario weight")
        model = LinearModel.read(
            directory,
            f"{prefix}scenario_",
            {"classes": state.get("scenario_classes"), "temperature": 1.0},
        )
        if (
            not isinstance(of_class, list)
            or len(of_class) != n_classes
            or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(model.classes)
                for i in of_class
            )
            or model.weights.shape[0] != width
        ):
            raise ModelError("intent scenario state does not match the classifier")
        return cls(model, np.asarray(of_class, np.int64), blend_weight)
