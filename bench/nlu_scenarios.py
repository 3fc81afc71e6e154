"""Nineteenth NLU round (docs/benchmarks.md, NLU): the intent classifier's scenario term
(server/nlu/scenarios.py) under the twelfth round's blend (`static_neighbours_chars`), on the
static pipeline's cached blocks (`bench/nlu_distill.py cache DATASET --no-teacher`):
validation errors and 4-fold CV errors (stratified, seed 0; class spread, the intent SVM,
the scenario SVM and the server's `Neighbours` refitted per fold, each held-out sentence
blended as a parse blends it).

    python bench/nlu_scenarios.py DATASET --cache DIR [--weights 0.1,0.3,...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.nlu.class_spread import ClassSpread  # noqa: E402
from server.nlu.linear_model import LinearModel  # noqa: E402
from server.nlu.neighbours import Neighbours  # noqa: E402
from server.nlu.scenarios import Scenarios  # noqa: E402


def errors(
    x: sp.csr_matrix,
    y: np.ndarray,
    widths: list[int],
    fit: np.ndarray,
    query: sp.csr_matrix,
    gold: np.ndarray,
    weights: list[float],
) -> dict[str, np.ndarray]:
    """Which `query` rows are wrong: the SVM, the blend, and the blend plus the scenario
    term at each weight (the `fit` rows of `x` trained on)."""
    ends = np.cumsum(widths)
    compressed = np.asarray([[ends[2] - widths[2], ends[2]]], np.int64)  # char_wb
    labels = list(y[fit])
    spread = ClassSpread.fit(x[fit], labels, widths)
    x_fit, x_q = spread.matrix(x[fit]), spread.matrix(query)
    model = LinearModel.fit(x_fit, labels)
    classes = np.asarray(model.classes)
    nearest = Neighbours.fit(
        x_fit, np.searchsorted(classes, y[fit]), len(classes), 1, 0.3, None, 16, compressed
    )
    scenarios = Scenarios.fit(x_fit, labels, model.classes, 1.0, "_")
    rows = [
        (x_q[i].indices.astype(np.int64), x_q[i].data.astype(np.float32))
        for i in range(x_q.shape[0])
    ]
    svm = [model.scores(i, v) for i, v in rows]
    blend = [nearest.blend(s, i, v) for s, (i, v) in zip(svm, rows, strict=True)]
    out = {
        "svm": classes[np.argmax(svm, axis=1)] != gold,
        "blend": classes[np.argmax(blend, axis=1)] != gold,
    }
    if scenarios is None:
        return out
    for weight in weights:
        scenarios.weight = weight
        mixed = [scenarios.blend(b, i, v) for b, (i, v) in zip(blend, rows, strict=True)]
        out[f"blend + scenarios × {weight}"] = classes[np.argmax(mixed, axis=1)] != gold
    return out


def main() -> None:
    from sklearn.model_selection import StratifiedKFold

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--cache", default="/tmp/nlu_distill")
    parser.add_argument("--weights", default="0.1,0.2,0.3,0.5,0.8,1,1.25,1.5,2,3")
    args = parser.parse_args()
    out, name = Path(args.cache), args.dataset
    weights = [float(w) for w in args.weights.split(",")]
    meta = json.loads((out / f"{name}_meta.json").read_text())
    xtr = sp.csr_matrix(sp.load_npz(out / f"{name}_xtr.npz"))
    xva = sp.csr_matrix(sp.load_npz(out / f"{name}_xva.npz"))
    ytr, yva = np.asarray(meta["ytr"]), np.asarray(meta["yva"])
    widths = meta["widths"]
    valid = errors(xtr, ytr, widths, np.arange(len(ytr)), xva, yva, weights)
    folds = StratifiedKFold(4, shuffle=True, random_state=0).split(xtr, ytr)
    per_fold: dict[str, list[int]] = {}
    for fit, held_out in folds:
        wrong = errors(xtr, ytr, widths, fit, xtr[held_out], ytr[held_out], weights)
        for label, rows in wrong.items():
            per_fold.setdefault(label, []).append(int(rows.sum()))
    for label, rows in valid.items():
        cv = per_fold[label]
        print(f"{name} {label:30s} valid {int(rows.sum()):4d}  4-fold CV {sum(cv):5d} {cv}")


if __name__ == "__main__":
    main()
