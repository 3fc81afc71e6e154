"""Seventeenth NLU round (docs/benchmarks.md, NLU): the CRF's training algorithm on SNIPS.

    python bench/nlu_crf_sgd.py speed lbfgs l2sgd l2sgd,max_iterations=5 ap ...
    python bench/nlu_distill.py cache snips --cache DIR --no-teacher   # once, for `blend`
    python bench/nlu_crf_sgd.py blend --cache DIR [--algorithm l2sgd]

`speed` trains one CRF per named crfsuite algorithm (options after commas) on four fifths of
the SNIPS training split (sentences i mod 5 != 0) and prints its process CPU and its
span-exact entity F1 on `valid.yml`. `blend` tags the training split with 5 jackknife CRFs
(the folds of bench/nlu_snips.py) and `valid.yml` with one CRF on the whole split, all
trained with `--algorithm`, and scores the sixteenth round's candidate on the cached static
blocks: the typed words' 2-3 grams × 0.5 beside them, SVM and the `static_neighbours_chars`
blend, validation and 5-fold CV errors (bench/nlu_crf_types.py's `blended`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pycrfsuite
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.nlu import DATA  # noqa: E402
from server.nlu.crf_extractor import (  # noqa: E402
    _seed_c_rand,
    bio_tags,
    token_features,
)
from server.nlu.tokenizer import tokenize  # noqa: E402
from server.training.nlu_yaml import read_nlu_file  # noqa: E402


def _spans(tags: list[str]) -> set[tuple[str, int, int]]:
    spans, current = set(), None
    for i, tag in enumerate([*tags, "O"]):
        continues = tag.startswith("I-") and current is not None and current[0] == tag[2:]
        if not continues:
            if current is not None:
                spans.add((current[0], current[1], i))
            current = (tag[2:], i) if tag != "O" else None
    return spans


def speed(specs: list[str]) -> None:
    train = read_nlu_file(DATA / "snips" / "rasa-yaml" / "train.yml")
    valid = read_nlu_file(DATA / "snips" / "rasa-yaml" / "valid.yml")
    kept = [e for i, e in enumerate(train.examples) if i % 5 != 0]
    sequences = []
    for example in kept:
        tokens = tokenize(example.text)
        sequences.append((token_features(tokens, None), bio_tags(tokens, example.entities)))
    gold = []
    for example in valid.examples:
        tokens = tokenize(example.text)
        gold.append((token_features(tokens, None), bio_tags(tokens, example.entities)))
    for spec in specs:
        algorithm, *options = spec.split(",")
        params: dict[str, Any] = {"feature.possible_transitions": True}
        if algorithm == "lbfgs":
            params.update({"c1": 0.1, "c2": 0.01, "max_iterations": 50})
        elif algorithm == "l2sgd":
            params.update({"c2": 0.01, "max_iterations": 10})
        else:
            params["max_iterations"] = 10
        for option in options:
            key, value = option.split("=")
            params[key] = float(value) if "." in value else int(value)
        started = time.process_time()
        trainer = pycrfsuite.Trainer(algorithm=algorithm, verbose=False)
        for features, tags in sequences:
            trainer.append(pycrfsuite.ItemSequence(features), tags)
        trainer.set_params(params)
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "model.crfsuite")
            _seed_c_rand()  # as the extractor does: the same shuffles as its SGD
            trainer.train(path)
            cpu = time.process_time() - started
            tagger = pycrfsuite.Tagger()
            tagger.open(path)
            hits = found = wanted = 0
            for features, tags in gold:
                got, want = _spans(tagger.tag(pycrfsuite.ItemSequence(features))), _spans(tags)
                hits, found, wanted = hits + len(got & want), found + len(got), wanted + len(want)
        f1 = 2 * hits / (found + wanted)
        print(f"{spec:36s} {cpu:6.1f} s CPU  span F1 {100 * f1:.2f} %", flush=True)


def blend(out: Path, algorithm: str) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from bench.nlu_crf_types import blended, jackknife_tags
    from bench.nlu_snips import Cache
    from server.nlu.entity_types import typed_words

    cache = Cache(out)
    config = {"algorithm": algorithm}
    started = time.process_time()
    tagged, tagged_valid = jackknife_tags(cache, config)
    spent = time.process_time() - started
    print(f"{algorithm}: 5 jackknife CRFs and the CRF on all: {spent:.1f} s CPU")

    def typed(texts: list[str], rows: list[dict[str, Any]]) -> list[list[str]]:
        return [typed_words(tokenize(t), r["entities"]) for t, r in zip(texts, rows, strict=True)]

    def ngrams(words: list[str]) -> list[str]:
        return [" ".join(words[i : i + n]) for n in (2, 3) for i in range(len(words) - n + 1)]

    vectors = TfidfVectorizer(analyzer=ngrams, sublinear_tf=True, lowercase=False)
    block = (
        sp.csr_matrix(vectors.fit_transform(typed(cache.ttr, tagged))),
        sp.csr_matrix(vectors.transform(typed(cache.tva, tagged_valid))),
    )
    blended(cache, f"{algorithm}: + typed 2-3 x 0.5", [(block, 0.5)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["speed", "blend"])
    parser.add_argument("specs", nargs="*", default=["lbfgs", "l2sgd"])
    parser.add_argument("--cache", default="/tmp/nlu_distill")
    parser.add_argument("--algorithm", default="l2sgd")
    args = parser.parse_args()
    if args.command == "speed":
        speed(args.specs)
    else:
        blend(Path(args.cache), args.algorithm)


if __name__ == "__main__":
    main()
