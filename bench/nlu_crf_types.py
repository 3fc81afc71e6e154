"""Sixteenth NLU round (docs/benchmarks.md, NLU): SNIPS intent features from a CRF's entity
types, prototyped on the static pipeline's cached blocks (`bench/nlu_distill.py cache snips
--no-teacher`), scored on `valid.yml` and by 5-fold CV of the training split (the folds of
bench/nlu_snips.py: stratified, seed 0; class spread and SVM refitted per fold).

    python bench/nlu_crf_types.py tag --cache DIR      # 5 jackknife CRFs + 1 on all, cached
    python bench/nlu_crf_types.py score --cache DIR

`tag` trains one CRF per CV fold on the other four (the CRF extractor's defaults) and tags
the held-out fold, and one CRF on the whole training split that tags `valid.yml`; for every
sentence it stores the predicted entities and, for each entity type, the largest marginal
probability of any of its tags over the tokens (`crf_types.json`). `score` adds blocks built
from them: the typed words (EntityTypeFeaturizer's 2-3 grams), the marginals, skip-grams.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.nlu import DATA  # noqa: E402
from bench.nlu_snips import Cache, pairs  # noqa: E402
from server.nlu.crf_extractor import CRFEntityExtractor  # noqa: E402
from server.nlu.entity_types import typed_words  # noqa: E402
from server.nlu.message import Message  # noqa: E402
from server.nlu.tokenizer import tokenize  # noqa: E402
from server.nlu.training_data import NLUTrainingData  # noqa: E402
from server.training.nlu_yaml import read_nlu_file  # noqa: E402


def _tag(crf: CRFEntityExtractor, text: str) -> dict[str, Any]:
    message = Message(text, tokenize(text))
    crf.process(message)
    tagger = crf._tagger
    marginals: dict[str, float] = {}
    if tagger is not None and message.tokens:
        # process() left the tagger set on this sequence
        for label in tagger.labels():
            if label == "O":
                continue
            kind = label[2:]
            best = max(tagger.marginal(label, i) for i in range(len(message.tokens)))
            marginals[kind] = max(marginals.get(kind, 0.0), best)
    return {
        "entities": [
            {"entity": e["entity"], "start": e["start"], "end": e["end"]} for e in message.entities
        ],
        "marginals": marginals,
    }


def jackknife_tags(
    cache: Cache, config: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each training sentence tagged by the CRF (`config`) of the CV fold without it, and
    `valid.yml` by one CRF on the whole split."""
    train = read_nlu_file(DATA / "snips" / "rasa-yaml" / "train.yml")
    messages = [Message(e.text, tokenize(e.text)) for e in train.examples]
    tagged: list[dict[str, Any]] = [{} for _ in messages]
    for fold in range(5):
        kept = [i for i in range(len(messages)) if cache.fold_of[i] != fold]
        crf = CRFEntityExtractor(config)
        crf.train(
            [messages[i] for i in kept], NLUTrainingData(examples=[train.examples[i] for i in kept])
        )
        for i in np.flatnonzero(cache.fold_of == fold):
            tagged[i] = _tag(crf, cache.ttr[i])
    crf = CRFEntityExtractor(config)
    crf.train(messages, train)
    return tagged, [_tag(crf, text) for text in cache.tva]


def tag(cache: Cache, out: Path) -> None:
    train = read_nlu_file(DATA / "snips" / "rasa-yaml" / "train.yml")
    messages = [Message(e.text, tokenize(e.text)) for e in train.examples]
    result_train: list[dict[str, Any]] = [{} for _ in messages]
    for fold in range(5):
        started = time.process_time()
        kept = [i for i in range(len(messages)) if cache.fold_of[i] != fold]
        crf = CRFEntityExtractor({})
        crf.train(
            [messages[i] for i in kept], NLUTrainingData(examples=[train.examples[i] for i in kept])
        )
        for i in np.flatnonzero(cache.fold_of == fold):
            result_train[i] = _tag(crf, cache.ttr[i])
        print(f"fold {fold}: {time.process_time() - started:.1f} s CPU", flush=True)
    crf = CRFEntityExtractor({})
    crf.train(messages, train)
    result_valid = [_tag(crf, text) for text in cache.tva]
    (out / "crf_types.json").write_text(json.dumps({"train": result_train, "valid": result_valid}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["tag", "score", "blend"])
    parser.add_argument("--cache", default="/tmp/nlu_distill")
    args = parser.parse_args()
    out = Path(args.cache)
    cache = Cache(out)
    if args.command == "tag":
        tag(cache, out)
        return
    tagged = json.loads((out / "crf_types.json").read_text())
    score(cache, tagged, blend=args.command == "blend")


def blended(cache: Cache, label: str, extra: list[tuple[Any, float]]) -> None:
    """Validation and 5-fold CV errors of the SVM and of the twelfth round's blend
    (`static_neighbours_chars`: top 1, λ 0.3, the static block as 16 directions, the
    character block as 64) through the server's `Neighbours`, sentence by sentence."""
    from sklearn.svm import LinearSVC

    from bench.nlu_snips import _folds
    from server.nlu.class_spread import ClassSpread
    from server.nlu.neighbours import Neighbours

    xtr, xva, widths = cache.stacked(extra)
    ends = np.cumsum(widths)
    char = 2  # [regex, word, char_wb, static, extra...]
    compressed = np.asarray([[ends[char] - widths[char], ends[char]]], np.int64)

    def run(fit_rows: np.ndarray, x_out: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        y = cache.ytr[fit_rows]
        spread = ClassSpread.fit(xtr[fit_rows], list(y), widths)
        x_fit, x_q = spread.matrix(xtr[fit_rows]), spread.matrix(x_out)
        model = LinearSVC(C=1.0, max_iter=2000, random_state=0).fit(x_fit, y)
        scores = model.decision_function(x_q)
        classes = model.classes_
        nearest = Neighbours.fit(
            x_fit, np.searchsorted(classes, y), len(classes), 1, 0.3, None, 16, compressed, 64
        )
        rows = [x_q[i] for i in range(x_q.shape[0])]
        mixed = np.stack(
            [
                nearest.blend(sc, r.indices.astype(np.int64), r.data.astype(np.float32))
                for sc, r in zip(scores, rows, strict=True)
            ]
        )
        return classes[scores.argmax(axis=1)], classes[mixed.argmax(axis=1)]

    everything = np.arange(len(cache.ytr))
    svm_va, blend_va = run(everything, xva)
    svm_cv = np.empty(len(cache.ytr), dtype=object)
    blend_cv = np.empty(len(cache.ytr), dtype=object)
    for fit_rows, held_out in _folds(cache.ytr):
        svm_cv[held_out], blend_cv[held_out] = run(fit_rows, xtr[held_out])
    print(
        f"{label:30s} SVM valid {int((svm_va != cache.yva).sum()):3d} CV "
        f"{int((svm_cv != cache.ytr).sum()):4d} | blend valid "
        f"{int((blend_va != cache.yva).sum()):3d} CV {int((blend_cv != cache.ytr).sum()):4d}",
        flush=True,
    )
    for text, gold, got in zip(cache.tva, cache.yva, blend_va, strict=True):
        if gold != got:
            print(f"  valid {gold} -> {got}: {text}")


def score(cache: Cache, tagged: dict[str, Any], blend: bool = False) -> None:
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    def typed(texts: list[str], rows: list[dict[str, Any]]) -> list[list[str]]:
        return [typed_words(tokenize(t), r["entities"]) for t, r in zip(texts, rows, strict=True)]

    def ngrams(words: list[str], low: int, high: int) -> list[str]:
        return [
            " ".join(words[i : i + n])
            for n in range(low, high + 1)
            for i in range(len(words) - n + 1)
        ]

    typed_tr, typed_va = typed(cache.ttr, tagged["train"]), typed(cache.tva, tagged["valid"])

    def text_block(analyzer: Any) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        vectors = TfidfVectorizer(analyzer=analyzer, sublinear_tf=True, lowercase=False)
        return (
            sp.csr_matrix(vectors.fit_transform(typed_tr)),
            sp.csr_matrix(vectors.transform(typed_va)),
        )

    def marginal_block(power: float = 1.0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        vectors = DictVectorizer()
        tr = vectors.fit_transform(
            [{k: v**power for k, v in r["marginals"].items()} for r in tagged["train"]]
        )
        va = vectors.transform(
            [{k: v**power for k, v in r["marginals"].items()} for r in tagged["valid"]]
        )
        return sp.csr_matrix(normalize(tr)), sp.csr_matrix(normalize(va))

    types23 = text_block(lambda w: ngrams(w, 2, 3))
    marg = marginal_block()
    skips = cache.block(pairs(2, 4))
    if blend:
        blended(cache, "static", [])
        blended(cache, "+ typed 2-3 x 0.5", [(types23, 0.5)])
        blended(cache, "+ skips x 1", [(skips, 1.0)])
        blended(cache, "+ skips + typed x 0.5", [(skips, 1.0), (types23, 0.5)])
        return
    cache.evaluate("static (cached blocks)", [])
    cache.evaluate("+ typed 2-3 x 0.5", [(types23, 0.5)])
    for weight in (0.3, 0.5, 1.0):
        cache.evaluate(f"+ marginals x {weight}", [(marg, weight)])
    cache.evaluate("+ typed x 0.5 + marginals x 0.5", [(types23, 0.5), (marg, 0.5)])
    cache.evaluate("+ skips x 1", [(skips, 1.0)])
    cache.evaluate("+ skips + typed x 0.5", [(skips, 1.0), (types23, 0.5)])
    cache.evaluate("+ skips + marginals x 0.5", [(skips, 1.0), (marg, 0.5)])
    cache.evaluate(
        "+ skips + typed x 0.5 + marginals x 0.5", [(skips, 1.0), (types23, 0.5), (marg, 0.5)]
    )


if __name__ == "__main__":
    main()
