"""Twelfth NLU round (docs/benchmarks.md, NLU): SNIPS intent prototypes on the static
pipeline's cached featurizer blocks, scored on `valid.yml` and by 5-fold CV of the training
split (stratified, seed 0; class spread and SVM refitted per fold).

    python bench/nlu_distill.py cache snips --cache DIR --no-teacher   # once
    python bench/nlu_snips.py --cache DIR [--steps base,skips,gazetteer,edges,combined]

`base` prints the static baseline, its CV confusions and its validation errors; `skips` adds
pairs of words 2-4 (and other gaps) apart as one more TF-IDF block (the SkipGramFeaturizer);
`gazetteer` a block of the slot types whose training values occur in the sentence (for a
training sentence, values from the other CV folds only); `edges` the first and last two or
three words with sentence marks; `combined` skip-grams and the gazetteer together.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.nlu import DATA  # noqa: E402
from server.nlu.class_spread import ClassSpread  # noqa: E402
from server.nlu.skip_grams import skip_grams  # noqa: E402
from server.training.nlu_yaml import read_nlu_file  # noqa: E402

STEPS = ["base", "skips", "gazetteer", "edges", "combined"]
Block = tuple[sp.csr_matrix, sp.csr_matrix]


class Cache:
    def __init__(self, out: Path):
        meta = json.loads((out / "snips_meta.json").read_text())
        self.xtr = sp.csr_matrix(sp.load_npz(out / "snips_xtr.npz"))
        self.xva = sp.csr_matrix(sp.load_npz(out / "snips_xva.npz"))
        self.widths: list[int] = meta["widths"]
        self.ytr, self.yva = np.asarray(meta["ytr"]), np.asarray(meta["yva"])
        self.ttr: list[str] = meta["ttr"]
        self.tva: list[str] = meta["tva"]
        folds = _folds(self.ytr)
        self.fold_of = np.empty(len(self.ytr), dtype=int)
        for k, (_, held_out) in enumerate(folds):
            self.fold_of[held_out] = k

    def block(self, analyzer: Callable[[str], list[str]]) -> Block:
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectors = TfidfVectorizer(analyzer=analyzer, sublinear_tf=True)
        return (
            sp.csr_matrix(vectors.fit_transform(self.ttr)),
            sp.csr_matrix(vectors.transform(self.tva)),
        )

    def stacked(
        self, extra: list[tuple[Block, float]]
    ) -> tuple[sp.csr_matrix, sp.csr_matrix, list[int]]:
        """The train and validation matrices with `extra` blocks (× weight) beside the
        cached ones, and the blocks' widths."""
        parts_tr, parts_va, widths = [self.xtr], [self.xva], list(self.widths)
        for (train, valid), weight in extra:
            parts_tr.append(train * weight)
            parts_va.append(valid * weight)
            widths.append(train.shape[1])
        return sp.hstack(parts_tr).tocsr(), sp.hstack(parts_va).tocsr(), widths

    def evaluate(self, label: str, extra: list[tuple[Block, float]]) -> tuple[Any, Any]:
        """Validation and 5-fold CV predictions with `extra` blocks (× weight) beside the
        cached ones."""
        xtr, xva, widths = self.stacked(extra)
        spread = ClassSpread.fit(xtr, list(self.ytr), widths)
        predicted = _svm(spread.matrix(xtr), self.ytr).predict(spread.matrix(xva))
        cv = np.empty(len(self.ytr), dtype=object)
        for fit, held_out in _folds(self.ytr):
            spread = ClassSpread.fit(xtr[fit], list(self.ytr[fit]), widths)
            model = _svm(spread.matrix(xtr[fit]), self.ytr[fit])
            cv[held_out] = model.predict(spread.matrix(xtr[held_out]))
        valid_errors = int((predicted != self.yva).sum())
        cv_errors = int((cv != self.ytr).sum())
        print(f"{label:36s} valid {valid_errors:3d}  5-fold CV {cv_errors:4d}", flush=True)
        return predicted, cv


def _folds(labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return list(folds.split(np.zeros(len(labels)), labels))


def _svm(x: sp.csr_matrix, y: np.ndarray) -> Any:
    from sklearn.svm import LinearSVC

    return LinearSVC(C=1.0, max_iter=2000, random_state=0).fit(x, y)


def pairs(low: int, high: int) -> Callable[[str], list[str]]:
    return lambda text: skip_grams(text.lower().split(), low, high)


def edges(text: str) -> list[str]:
    marked = ["^", *text.lower().split(), "$"]
    grams = []
    for n in (2, 3):
        grams += ["B:" + " ".join(marked[:n]), "E:" + " ".join(marked[-n:])]
    return grams


def gazetteer_block(cache: Cache) -> Block:
    """Each slot type whose training values occur in the sentence (any word n-gram up to 8
    words), weighted by the share of that value's occurrences with the type."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.preprocessing import normalize

    train = read_nlu_file(DATA / "snips" / "rasa-yaml" / "train.yml")
    values = [[(a.value.lower(), a.entity) for a in e.entities] for e in train.examples]

    def table(rows: list[int]) -> dict[str, collections.Counter[str]]:
        found: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for i in rows:
            for value, entity in values[i]:
                found[value][entity] += 1
        return found

    def features(text: str, known: dict[str, collections.Counter[str]]) -> dict[str, float]:
        words, out = text.lower().split(), collections.defaultdict[str, float](float)
        for i in range(len(words)):
            for j in range(i + 1, min(len(words), i + 8) + 1):
                types = known.get(" ".join(words[i:j]), collections.Counter())
                for entity, count in types.items():
                    out["gaz:" + entity] += count / types.total()
        return dict(out)

    everything = table(list(range(len(values))))
    folds = [table([i for i in range(len(values)) if cache.fold_of[i] != k]) for k in range(5)]
    vectors = DictVectorizer()
    train_rows = vectors.fit_transform(
        [features(t, folds[k]) for t, k in zip(cache.ttr, cache.fold_of, strict=True)]
    )
    valid_rows = vectors.transform([features(t, everything) for t in cache.tva])
    return sp.csr_matrix(normalize(train_rows)), sp.csr_matrix(normalize(valid_rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="/tmp/nlu_distill")
    parser.add_argument("--steps", default=",".join(STEPS))
    args = parser.parse_args()
    cache = Cache(Path(args.cache))
    steps = args.steps.split(",")
    if "base" in steps:
        predicted, cv = cache.evaluate("static (cached blocks)", [])
        wrong = cv != cache.ytr
        confusions = collections.Counter(zip(cache.ytr[wrong], cv[wrong], strict=True))
        for (gold, got), count in confusions.most_common(8):
            print(f"  CV {gold} -> {got}: {count}")
        for text, gold, got in zip(cache.tva, cache.yva, predicted, strict=True):
            if gold != got:
                print(f"  valid {gold} -> {got}: {text}")
    if "skips" in steps:
        for low, high, weight in ((2, 4, 0.5), (2, 4, 1), (2, 4, 1.5), (2, 4, 2), (2, 3, 1)):
            block = cache.block(pairs(low, high))
            cache.evaluate(f"+ skip-grams {low}-{high} x {weight}", [(block, weight)])
        for low, high in ((2, 6), (1, 4)):
            block = cache.block(pairs(low, high))
            cache.evaluate(f"+ skip-grams {low}-{high} x 1", [(block, 1)])
    if "gazetteer" in steps:
        block = gazetteer_block(cache)
        for weight in (0.5, 1, 1.5, 2):
            cache.evaluate(f"+ gazetteer x {weight}", [(block, weight)])
    if "edges" in steps:
        block = cache.block(edges)
        for weight in (0.5, 1):
            cache.evaluate(f"+ edges x {weight}", [(block, weight)])
    if "combined" in steps:
        skips = cache.block(pairs(2, 4))
        both = [(skips, 1.0), (gazetteer_block(cache), 1.0)]
        cache.evaluate("+ skip-grams 2-4 x 1 + gazetteer x 1", both)


if __name__ == "__main__":
    main()
