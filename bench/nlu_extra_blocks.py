"""Twentieth NLU round (docs/benchmarks.md, NLU, hwu): one more feature block under the
twelfth round's blend (`static_neighbours_chars`), on the static pipeline's cached blocks
(`bench/nlu_distill.py cache DATASET`): validation errors, and the sentences won and lost
against the blend without it.

    python bench/nlu_extra_blocks.py DATASET --cache DIR [--variants base,stem2,...]
                                     [--folds K]

A variant is `KIND[@WEIGHT]`: `stemN` snowball-stemmed words, 1-N grams (TF-IDF, L2, as the
CountVectorsFeaturizer weighs its words; needs the PyPI package `snowballstemmer`), added as
a block; `stemNr` the same replacing the word block; `pieceN` MiniLM's WordPiece tokens, 1-N
grams, added; `static@W` the static table's block times W; `mini` MiniLM's sentence
embedding (the cache's teacher, a transformer pass a parse) added. `--folds K` also counts
the blend's errors in stratified K-fold CV of the training split (seed 0).
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.nlu_distill import cached_split  # noqa: E402
from bench.nlu_scenarios import errors  # noqa: E402

WORD = re.compile(r"\w+(?:'\w+)?")


def tfidf_block(
    analyse: Callable[[str], str], train: list[str], valid: list[str], ngram: int
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, ngram), token_pattern=r"\S+", lowercase=False)
    x_train = vectorizer.fit_transform([analyse(t) for t in train])
    return sp.csr_matrix(x_train), sp.csr_matrix(vectorizer.transform([analyse(t) for t in valid]))


@functools.cache
def stemmer() -> Any:
    import snowballstemmer  # type: ignore[import-not-found]  # PyPI, not a dependency

    return snowballstemmer.stemmer("english")


@functools.cache
def tokenizer() -> Any:
    from server.nlu.dense_featurizer import load_tokenizer

    return load_tokenizer()


def stems(text: str) -> str:
    return " ".join(stemmer().stemWords(WORD.findall(text.lower())))


def pieces(text: str) -> str:
    return " ".join(tokenizer().encode(text, add_special_tokens=False).tokens)


def main() -> None:
    from sklearn.model_selection import StratifiedKFold

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--cache", default="/tmp/nlu_distill")
    parser.add_argument("--variants", default="base,stem2,stem1,stem2r,piece2,piece1,mini")
    parser.add_argument("--folds", type=int, default=0)
    args = parser.parse_args()
    out, name = Path(args.cache), args.dataset
    meta, xtr, xva, ytr, yva = cached_split(name, out)
    widths: list[int] = meta["widths"]  # regex, word, char_wb, static
    baseline = None
    for variant in args.variants.split(","):
        kind, _, weight_text = variant.partition("@")
        weight = float(weight_text or 1)
        x1, x2, kept = xtr, xva, widths
        if kind == "static":  # the static table's block (the last) scaled
            scale = np.ones(xtr.shape[1])
            scale[-widths[-1] :] = weight
            x1, x2 = sp.csr_matrix(xtr @ sp.diags(scale)), sp.csr_matrix(xva @ sp.diags(scale))
        elif kind != "base":
            if kind.startswith("stem") or kind.startswith("piece"):
                analyse = stems if kind.startswith("stem") else pieces
                ngram = int(kind.removeprefix("stem").removeprefix("piece").rstrip("r"))
                btr, bva = tfidf_block(analyse, meta["ttr"], meta["tva"], ngram)
            elif kind == "mini":
                btr = sp.csr_matrix(np.load(out / f"{name}_etr.npy"))
                bva = sp.csr_matrix(np.load(out / f"{name}_eva.npy"))
            else:
                parser.error(f"unknown variant {variant!r}")
            if kind.endswith("r"):  # in the word block's place
                x1 = sp.csr_matrix(sp.hstack([weight * btr, xtr[:, widths[1] :]]))
                x2 = sp.csr_matrix(sp.hstack([weight * bva, xva[:, widths[1] :]]))
                kept = [0, btr.shape[1], *widths[2:]]
            else:
                x1 = sp.csr_matrix(sp.hstack([xtr, weight * btr]))
                x2 = sp.csr_matrix(sp.hstack([xva, weight * bva]))
                kept = [*widths, btr.shape[1]]
        wrong = errors(x1, ytr, kept, np.arange(len(ytr)), x2, yva, [])
        line = f"{name} {variant:12s} valid SVM {int(wrong['svm'].sum()):4d}"
        line += f" blend {int(wrong['blend'].sum()):4d}"
        if baseline is None:
            baseline = wrong["blend"]
        else:
            won = int((baseline & ~wrong["blend"]).sum())
            lost = int((~baseline & wrong["blend"]).sum())
            line += f"  won {won} lost {lost}"
        if args.folds:
            folds = StratifiedKFold(args.folds, shuffle=True, random_state=0).split(x1, ytr)
            cv = [int(errors(x1, ytr, kept, f, x1[h], ytr[h], [])["blend"].sum()) for f, h in folds]
            line += f"  {args.folds}-fold CV {sum(cv)} {cv}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
