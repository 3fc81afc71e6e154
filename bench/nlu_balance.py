"""Sixteenth NLU round (docs/benchmarks.md, NLU): class-balanced weights and skip-grams under
the twelfth round's blend (`static_neighbours_chars`), on the static pipeline's cached blocks
(`bench/nlu_distill.py cache DATASET --no-teacher`): validation errors and 4-fold CV errors
(stratified, seed 0; class spread, SVM and the server's `Neighbours` refitted per fold,
each held-out sentence blended as a parse blends it).

    python bench/nlu_balance.py DATASET --cache DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.nlu_distill import cached_split  # noqa: E402
from server.nlu.class_spread import ClassSpread  # noqa: E402
from server.nlu.neighbours import Neighbours  # noqa: E402
from server.nlu.skip_grams import skip_grams  # noqa: E402


def main() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import LinearSVC

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--cache", default="/tmp/nlu_distill")
    args = parser.parse_args()
    out, name = Path(args.cache), args.dataset
    meta, xtr, xva, ytr, yva = cached_split(name, out)
    skips = TfidfVectorizer(
        analyzer=lambda t: skip_grams(t.lower().split(), 2, 4), sublinear_tf=True
    )
    s_tr = sp.csr_matrix(skips.fit_transform(meta["ttr"]))
    s_va = sp.csr_matrix(skips.transform(meta["tva"]))
    variants: dict[str, tuple[Any, Any, list[int], str | None]] = {
        "blend": (xtr, xva, meta["widths"], None),
        "blend, class_weight balanced": (xtr, xva, meta["widths"], "balanced"),
        "blend + skip-grams": (
            sp.hstack([xtr, s_tr]).tocsr(),
            sp.hstack([xva, s_va]).tocsr(),
            [*meta["widths"], s_tr.shape[1]],
            None,
        ),
    }

    def run(x: Any, widths: list[int], weight: Any, fit: np.ndarray, query: Any) -> np.ndarray:
        ends = np.cumsum(widths)
        compressed = np.asarray([[ends[2] - widths[2], ends[2]]], np.int64)  # char_wb
        spread = ClassSpread.fit(x[fit], list(ytr[fit]), widths)
        x_fit, x_q = spread.matrix(x[fit]), spread.matrix(query)
        model = LinearSVC(C=1.0, max_iter=2000, class_weight=weight, random_state=0).fit(
            x_fit, ytr[fit]
        )
        classes, scores = model.classes_, model.decision_function(x_q)
        nearest = Neighbours.fit(
            x_fit, np.searchsorted(classes, ytr[fit]), len(classes), 1, 0.3, None, 16, compressed
        )
        rows = [x_q[i] for i in range(x_q.shape[0])]
        mixed = np.stack(
            [
                nearest.blend(sc, r.indices.astype(np.int64), r.data.astype(np.float32))
                for sc, r in zip(scores, rows, strict=True)
            ]
        )
        return classes[mixed.argmax(axis=1)]

    folds = list(StratifiedKFold(4, shuffle=True, random_state=0).split(xtr, ytr))
    for label, (x, v, widths, weight) in variants.items():
        valid = int((run(x, widths, weight, np.arange(len(ytr)), v) != yva).sum())
        per_fold = [int((run(x, widths, weight, f, x[h]) != ytr[h]).sum()) for f, h in folds]
        print(f"{name} {label:32s} valid {valid:4d}  4-fold CV {sum(per_fold):5d} {per_fold}")


if __name__ == "__main__":
    main()
