"""Eighteenth NLU round (docs/benchmarks.md, NLU): SNIPS intents checked against the CRF's
entity types, prototyped on the static pipeline's cached blocks (`bench/nlu_distill.py cache
snips --no-teacher`), scored on `valid.yml` and by 5-fold CV of the training split (the folds
of bench/nlu_snips.py).

    python bench/nlu_consistency.py tag --cache DIR      # 5 jackknife SGD CRFs + 1 on all
    python bench/nlu_consistency.py scores --cache DIR   # the blend's scores, typed words on
    python bench/nlu_consistency.py judge --cache DIR    # the consistency penalty, a grid

`tag` trains one SGD CRF (`algorithm: l2sgd`, as the pipeline
`static_neighbours_chars_entity_types_sgd`) per CV fold on the other four and tags the
held-out fold, and one on the whole split that tags `valid.yml` (`crf_sgd.json`). `scores`
keeps the sixteenth round's blend scores (static blocks + typed words 2-3 grams × 0.5, class
spread, SVM, `static_neighbours_chars`' neighbours) for `valid.yml` and for every training
sentence out of fold (`blend_scores.npz`). `judge` lowers the score of each intent whose
training sentences never hold a predicted entity type, by μ per such type (in the softmax's
logits: the IntentEntityConsistency component), and prints the errors for a grid of μ.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.nlu import DATA  # noqa: E402
from bench.nlu_crf_types import jackknife_tags  # noqa: E402
from bench.nlu_snips import Cache, _folds  # noqa: E402
from server.nlu.entity_types import typed_words  # noqa: E402
from server.nlu.tokenizer import tokenize  # noqa: E402
from server.nlu.training_data import NLUTrainingData  # noqa: E402
from server.training.nlu_yaml import read_nlu_file  # noqa: E402

TEMPERATURE = 5.0  # the intent classifier's default: confidences = softmax(5 × scores)


def _train_data() -> NLUTrainingData:
    return read_nlu_file(DATA / "snips" / "rasa-yaml" / "train.yml")


def tag(cache: Cache, out: Path) -> None:
    started = time.process_time()
    tagged, tagged_valid = jackknife_tags(cache, {"algorithm": "l2sgd"})
    print(f"6 CRFs: {time.process_time() - started:.1f} s CPU", flush=True)
    (out / "crf_sgd.json").write_text(json.dumps({"train": tagged, "valid": tagged_valid}))


def typed_block(cache: Cache, tagged: dict[str, Any]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    def typed(texts: list[str], rows: list[dict[str, Any]]) -> list[list[str]]:
        return [typed_words(tokenize(t), r["entities"]) for t, r in zip(texts, rows, strict=True)]

    def ngrams(words: list[str]) -> list[str]:
        return [" ".join(words[i : i + n]) for n in (2, 3) for i in range(len(words) - n + 1)]

    vectors = TfidfVectorizer(analyzer=ngrams, sublinear_tf=True, lowercase=False)
    return (
        sp.csr_matrix(vectors.fit_transform(typed(cache.ttr, tagged["train"]))),
        sp.csr_matrix(vectors.transform(typed(cache.tva, tagged["valid"]))),
    )


def blend_scores(
    cache: Cache,
    extra: list[tuple[tuple[sp.csr_matrix, sp.csr_matrix], float]],
    side: dict[str, Callable[[], Any]] | None = None,
) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The blend's scores (static_neighbours_chars' options) for `valid.yml` (fitted on
    every training sentence) and for each training sentence from the fold without it, with
    `extra` blocks (x weight) beside the cached ones; `side` names more scikit-learn models
    fitted on the same weighted rows, whose decision functions come back beside the blend's
    (key "blend")."""
    from sklearn.svm import LinearSVC

    from server.nlu.class_spread import ClassSpread
    from server.nlu.neighbours import Neighbours

    xtr, xva, widths = cache.stacked(extra)
    ends = np.cumsum(widths)
    char = 2  # [regex, word, char_wb, static, extra...]
    compressed = np.asarray([[ends[char] - widths[char], ends[char]]], np.int64)
    classes = np.unique(cache.ytr)
    makers = side or {}

    def run(fit_rows: np.ndarray, x_out: sp.csr_matrix) -> dict[str, np.ndarray]:
        y = cache.ytr[fit_rows]
        spread = ClassSpread.fit(xtr[fit_rows], list(y), widths)
        x_fit, x_q = spread.matrix(xtr[fit_rows]), spread.matrix(x_out)
        model = LinearSVC(C=1.0, max_iter=2000, random_state=0).fit(x_fit, y)
        assert list(model.classes_) == list(classes)
        raw = model.decision_function(x_q)
        nearest = Neighbours.fit(
            x_fit, np.searchsorted(classes, y), len(classes), 1, 0.3, None, 16, compressed, 64
        )
        out = {
            "blend": np.stack(
                [
                    nearest.blend(s, r.indices.astype(np.int64), r.data.astype(np.float32))
                    for s, r in zip(raw, (x_q[i] for i in range(x_q.shape[0])), strict=False)
                ]
            )
        }
        for name, make in makers.items():
            other = make().fit(x_fit, y)
            assert list(other.classes_) == list(classes)
            out[name] = other.decision_function(x_q)
        return out

    valid = run(np.arange(len(cache.ytr)), xva)
    cv = {name: np.zeros((len(cache.ytr), len(classes))) for name in valid}
    for fit_rows, held_out in _folds(cache.ytr):
        for name, got in run(fit_rows, xtr[held_out]).items():
            cv[name][held_out] = got
    return classes, {name: (valid[name], cv[name]) for name in valid}


def scores(cache: Cache, tagged: dict[str, Any], out: Path, typed: bool) -> None:
    """The blend's scores for `valid.yml` and out of fold, saved for `judge`."""
    extra = [(typed_block(cache, tagged), 0.5)] if typed else []
    classes, found = blend_scores(cache, extra)
    valid, cv = found["blend"]
    name = "blend_scores.npz" if typed else "blend_scores_untyped.npz"
    np.savez(out / name, classes=classes, valid=valid, cv=cv)
    print(
        f"{name}: valid errors {int((classes[valid.argmax(1)] != cache.yva).sum())}, "
        f"CV errors {int((classes[cv.argmax(1)] != cache.ytr).sum())}"
    )


def report(label: str, cache: Cache, classes: np.ndarray, valid: Any, cv: Any) -> np.ndarray:
    """Print the validation and CV errors (and CV errors per fold) of two score arrays;
    return the validation predictions."""
    va, cvp = classes[valid.argmax(1)], classes[cv.argmax(1)]
    per_fold = [int((cvp[h] != cache.ytr[h]).sum()) for _, h in _folds(cache.ytr)]
    print(
        f"{label:44s} valid {int((va != cache.yva).sum()):3d}  "
        f"CV {int((cvp != cache.ytr).sum()):4d} {per_fold}",
        flush=True,
    )
    return np.asarray(va)


def type_table(rows: np.ndarray, classes: np.ndarray) -> dict[str, set[int]]:
    """For each gold entity type of the training sentences `rows`, the intents holding it."""
    train = _train_data()
    index = {name: i for i, name in enumerate(classes)}
    seen: dict[str, set[int]] = {}
    for i in rows:
        example = train.examples[i]
        for entity in example.entities:
            seen.setdefault(entity.entity, set()).add(index[example.intent])
    return seen


def penalised(
    scores: np.ndarray, entities: list[list[dict[str, Any]]], table: dict[str, set[int]], mu: float
) -> np.ndarray:
    logits = scores * TEMPERATURE
    out = logits.copy()
    for row, found in enumerate(entities):
        for kind in {e["entity"] for e in found}:
            allowed = table.get(kind)
            if allowed is None:
                continue
            for intent in range(scores.shape[1]):
                if intent not in allowed:
                    out[row, intent] -= mu
    return out


def judge(cache: Cache, tagged: dict[str, Any], out: Path, name: str) -> None:
    saved = np.load(out / name, allow_pickle=False)
    classes, valid, cv = saved["classes"], saved["valid"], saved["cv"]
    everything = np.arange(len(cache.ytr))
    table_all = type_table(everything, classes)
    tables = {k: type_table(fit, classes) for k, (fit, _) in enumerate(_folds(cache.ytr))}
    for mu in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 1e9):
        va = penalised(valid, [r["entities"] for r in tagged["valid"]], table_all, mu)
        cvp = np.zeros_like(cv)
        for k, (_, held_out) in enumerate(_folds(cache.ytr)):
            rows = [tagged["train"][i]["entities"] for i in held_out]
            cvp[held_out] = penalised(cv[held_out], rows, tables[k], mu)
        va_pred = report(f"{name} mu {mu:g}", cache, classes, va, cvp)
        if mu in (0.0, 1e9):
            for text, gold, got, r in zip(
                cache.tva, cache.yva, va_pred, tagged["valid"], strict=True
            ):
                if gold != got:
                    kinds = [(e["entity"], text[e["start"] : e["end"]]) for e in r["entities"]]
                    print(f"  {gold} -> {got}: {text}  {kinds}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["tag", "scores", "judge"])
    parser.add_argument("--cache", default="/tmp/nlu_distill")
    parser.add_argument("--untyped", action="store_true", help="scores without typed words")
    args = parser.parse_args()
    cache = Cache(Path(args.cache))
    if args.command == "tag":
        return tag(cache, Path(args.cache))
    tagged = json.loads((Path(args.cache) / "crf_sgd.json").read_text())
    if args.command == "scores":
        return scores(cache, tagged, Path(args.cache), not args.untyped)
    name = "blend_scores_untyped.npz" if args.untyped else "blend_scores.npz"
    return judge(cache, tagged, Path(args.cache), name)


if __name__ == "__main__":
    main()
