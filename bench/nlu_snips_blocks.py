"""Nineteenth NLU round (docs/benchmarks.md, NLU): SNIPS candidates beside the typed words
under the blend, on the static pipeline's cached blocks and the SGD CRFs' jackknife tags
(`bench/nlu_consistency.py tag`), scored on `valid.yml` and by 5-fold CV of the training split.

    python bench/nlu_snips_blocks.py blocks --cache DIR   # gazetteer / carrier blocks
    python bench/nlu_snips_blocks.py losses --cache DIR   # LR / ridge beside the blend
    python bench/nlu_snips_blocks.py combined --cache DIR # gazetteer and carrier together
    python bench/nlu_snips_blocks.py titles               # is a title's kind in its words?

`blocks` adds one more block to the blend + typed words: a gazetteer of the training
split's entity values per type (longest match on token boundaries; a training sentence sees
the values of the other CV folds only), or the carrier (the words outside the CRF's entity
spans, each span one `_`, 1-3 grams with sentence marks). `losses` fits a multinomial
logistic regression and a ridge classifier on the same weighted rows and adds
w × z(their scores) to z(the blend's), z standardising over the intents. `titles` asks
whether a title alone tells a film (`movie_name`) from another work (`object_name`): a
logistic regression on the training split's values, scored on `valid.yml`'s (with the
`dense` extra, also on MiniLM's embedding of each value).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.nlu import DATA  # noqa: E402
from bench.nlu_consistency import blend_scores, report, typed_block  # noqa: E402
from bench.nlu_snips import Block, Cache  # noqa: E402
from server.nlu.entity_types import carrier_words  # noqa: E402
from server.nlu.gazetteer import Trie, Values, gazetteer_types, value_trie  # noqa: E402
from server.nlu.tokenizer import tokenize  # noqa: E402
from server.training.nlu_yaml import read_nlu_file  # noqa: E402


def _words(text: str) -> list[str]:
    return [t.text.lower() for t in tokenize(text)]


def gazetteer_block(cache: Cache) -> Block:
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.preprocessing import normalize

    train = read_nlu_file(DATA / "snips" / "rasa-yaml" / "train.yml")
    values = [
        [(tuple(_words(e.text[a.start : a.end])), a.entity) for a in e.entities]
        for e in train.examples
    ]

    def table(rows: list[int]) -> Trie:
        found: Values = collections.defaultdict(collections.Counter)
        for i in rows:
            for value, entity in values[i]:
                if value:
                    found[value][entity] += 1
        return value_trie(found)

    everything = table(list(range(len(values))))
    folds = [table([i for i in range(len(values)) if cache.fold_of[i] != k]) for k in range(5)]
    vectors = DictVectorizer()
    train_rows = vectors.fit_transform(
        [
            gazetteer_types(_words(t), folds[k])
            for t, k in zip(cache.ttr, cache.fold_of, strict=True)
        ]
    )
    valid_rows = vectors.transform([gazetteer_types(_words(t), everything) for t in cache.tva])
    return sp.csr_matrix(normalize(train_rows)), sp.csr_matrix(normalize(valid_rows))


def carrier_block(cache: Cache, tagged: dict[str, Any]) -> Block:
    from sklearn.feature_extraction.text import TfidfVectorizer

    def grams(words: list[str]) -> list[str]:
        return [" ".join(words[i : i + n]) for n in (1, 2, 3) for i in range(len(words) - n + 1)]

    def carriers(texts: list[str], rows: list[dict[str, Any]]) -> list[list[str]]:
        return [carrier_words(tokenize(t), r["entities"]) for t, r in zip(texts, rows, strict=True)]

    vectors = TfidfVectorizer(analyzer=grams, sublinear_tf=True, lowercase=False)
    return (
        sp.csr_matrix(vectors.fit_transform(carriers(cache.ttr, tagged["train"]))),
        sp.csr_matrix(vectors.transform(carriers(cache.tva, tagged["valid"]))),
    )


def _z(scores: np.ndarray) -> np.ndarray:
    centred = scores - scores.mean(1, keepdims=True)
    return centred / np.maximum(centred.std(1, keepdims=True), 1e-12)


def blocks(cache: Cache, tagged: dict[str, Any], out: Path) -> None:
    typed = (typed_block(cache, tagged), 0.5)
    # One weight each, fixed beforehand (a blend run is minutes of CPU): the gazetteer at
    # the twelfth round's best CV weight, the carrier at the typed words' (the same kind).
    candidates = {
        "gazetteer": (gazetteer_block(cache), 1.0),
        "carrier": (carrier_block(cache, tagged), 0.5),
    }
    for name, (block, weight) in candidates.items():
        classes, found = blend_scores(cache, [typed, (block, weight)])
        valid, cv = found["blend"]
        report(f"+ {name} x {weight:g}", cache, classes, valid, cv)
        np.savez(out / f"blocks_{name}_{weight:g}.npz", classes=classes, valid=valid, cv=cv)


def combined(cache: Cache, tagged: dict[str, Any], out: Path) -> None:
    extra = [
        (typed_block(cache, tagged), 0.5),
        (gazetteer_block(cache), 1.0),
        (carrier_block(cache, tagged), 0.5),
    ]
    classes, found = blend_scores(cache, extra)
    valid, cv = found["blend"]
    report("+ gazetteer x 1 + carrier x 0.5", cache, classes, valid, cv)
    np.savez(out / "blocks_combined.npz", classes=classes, valid=valid, cv=cv)


def losses(cache: Cache, tagged: dict[str, Any], out: Path) -> None:
    from sklearn.linear_model import LogisticRegression, RidgeClassifier

    side = {
        "lr": lambda: LogisticRegression(C=10.0, max_iter=300),
        "ridge": lambda: RidgeClassifier(alpha=1.0, solver="sparse_cg"),
    }
    classes, found = blend_scores(cache, [(typed_block(cache, tagged), 0.5)], side)
    arrays: dict[str, Any] = {"classes": classes}
    for name, (valid, cv) in found.items():
        arrays[f"{name}_v"], arrays[f"{name}_c"] = valid, cv
    np.savez(out / "losses.npz", **arrays)
    judge_losses(cache, out)


def judge_losses(cache: Cache, out: Path) -> None:
    saved = np.load(out / "losses.npz", allow_pickle=False)
    classes = saved["classes"]
    base_v, base_c = saved["blend_v"], saved["blend_c"]
    report("blend + typed words", cache, classes, base_v, base_c)
    for name in ("lr", "ridge"):
        report(f"{name} alone", cache, classes, saved[f"{name}_v"], saved[f"{name}_c"])
        for weight in (0.1, 0.2, 0.3, 0.5, 1.0):
            valid = _z(base_v) + weight * _z(saved[f"{name}_v"])
            cv = _z(base_c) + weight * _z(saved[f"{name}_c"])
            report(f"z(blend) + {weight:g} z({name})", cache, classes, valid, cv)


def _title_values(split: str) -> tuple[list[str], np.ndarray]:
    data = read_nlu_file(DATA / "snips" / "rasa-yaml" / split)
    found = [
        (e.text[a.start : a.end].lower(), a.entity)
        for e in data.examples
        for a in e.entities
        if a.entity in ("movie_name", "object_name")
    ]
    return [v for v, _ in found], np.asarray([k for _, k in found])


def titles() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from server.nlu.dense_featurizer import dense_available

    train, y = _title_values("train.yml")
    valid, gold = _title_values("valid.yml")
    films = gold == "movie_name"
    print(f"{len(train)} training values ({int((y == 'movie_name').sum())} movie_name), ", end="")
    print(f"{len(valid)} validation values ({int(films.sum())} movie_name)")
    views: dict[str, tuple[Any, Any]] = {}
    for analyzer, ngrams in (("char_wb", (2, 5)), ("word", (1, 2))):
        vectors = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True)
        views[f"{analyzer} {ngrams}"] = (vectors.fit_transform(train), vectors.transform(valid))
    if dense_available():
        from server.nlu.dense_featurizer import SentenceEncoder

        encoder = SentenceEncoder(1)
        views["MiniLM embedding"] = (encoder.embed(train), encoder.embed(valid))
    for name, (x, x_valid) in views.items():
        for c in (0.3, 1.0, 3.0):
            model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(x, y)
            got = model.predict(x_valid)
            print(
                f"{name:18s} C {c:g}: accuracy {float((got == gold).mean()):.3f}, "
                f"movie_name recall {float((got[films] == 'movie_name').mean()):.3f}, "
                f"object_name recall {float((got[~films] == 'object_name').mean()):.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "command", choices=["blocks", "combined", "losses", "judge_losses", "titles"]
    )
    parser.add_argument("--cache", default="/tmp/nlu_distill")
    args = parser.parse_args()
    if args.command == "titles":
        return titles()
    out = Path(args.cache)
    cache = Cache(out)
    tagged = json.loads((out / "crf_sgd.json").read_text())
    if args.command == "blocks":
        return blocks(cache, tagged, out)
    if args.command == "combined":
        return combined(cache, tagged, out)
    if args.command == "losses":
        return losses(cache, tagged, out)
    return judge_losses(cache, out)


if __name__ == "__main__":
    main()
