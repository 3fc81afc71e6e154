"""Tenth NLU round (docs/benchmarks.md, NLU): classifier-side prototypes on the ninth round's
cached features (`bench/nlu_distill.py cache`), validation splits only.

    python bench/nlu_distill.py cache DATASET --cache DIR     # once per dataset
    python bench/nlu_oof.py DATASET --cache DIR [--steps clean,upweight,stack,pairs,rff,augment]

The baseline is the static pipeline's intent classifier (class spread + linear SVM, C 1) on
the cached blocks. `clean`, `upweight`, `stack` and `pairs` use out-of-fold SVM scores of the
training sentences (5 stratified folds, seed 0): `clean` refits without the training
sentences the out-of-fold SVM gets wrong (or by more than a margin), `upweight` refits with
those sentences weighted 2 or 3, `stack` fits a multinomial logistic regression on the
out-of-fold score vectors and applies it (alone or blended) to the full SVM's validation
scores, `pairs` trains a binary SVM for each pair of intents confused out of fold and lets it
decide between the full SVM's top two when they are such a pair. `rff` adds random Fourier
features of the static-table block (an RBF kernel on the sentence vector) as one more block;
`augment` retrains the featurizers and adds word-dropout copies of the training sentences.
`neighbours_scale_cv` (seventeenth round) tries the neighbour term without its per-sentence
standardisation.
`neighbours` blends each intent's nearest training sentences (cosine on the weighted
features; the mean of the top 1 or 3 per intent) into the SVM's scores, z(svm) + λ z(nn), on
the validation split; `neighbours_cv` does the same in a 4-fold CV of the training split
(class spread and SVM refitted per fold), the measure that chose `neighbours: 1,
neighbour_weight: 0.3` (server/nlu/neighbours.py).
Each line prints the validation errors, their change, and the sentences fixed and broken.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.nlu import DATA, STATIC_PIPELINE, VALID_SPLITS, featurized  # noqa: E402
from server.nlu.class_spread import ClassSpread  # noqa: E402
from server.nlu.linear_model import feature_matrix  # noqa: E402
from server.nlu.pipeline import NLUPipeline  # noqa: E402
from server.training.nlu_yaml import read_nlu_file  # noqa: E402


def svm(x: Any, y: np.ndarray, weights: np.ndarray | None = None) -> Any:
    from sklearn.svm import LinearSVC

    return LinearSVC(C=1.0, max_iter=2000, random_state=0).fit(x, y, sample_weight=weights)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9)


class Round:
    def __init__(self, name: str, out: Path):
        meta = json.loads((out / f"{name}_meta.json").read_text())
        x_train = sp.csr_matrix(sp.load_npz(out / f"{name}_xtr.npz"))
        x_valid = sp.csr_matrix(sp.load_npz(out / f"{name}_xva.npz"))
        self.name, self.widths, self.cache = name, meta["widths"], out
        self.spread = ClassSpread.fit(x_train, meta["ytr"], self.widths)
        self.xtr, self.xva = self.spread.matrix(x_train), self.spread.matrix(x_valid)
        self.ytr, self.yva = np.asarray(meta["ytr"]), np.asarray(meta["yva"])
        self.texts = meta["ttr"]
        started = time.process_time()
        full = svm(self.xtr, self.ytr)
        self.classes = full.classes_
        self.scores = full.decision_function(self.xva)
        self.base = self.classes[self.scores.argmax(axis=1)]
        self.errors = int((self.base != self.yva).sum())
        self.result: dict[str, int] = {"base": self.errors}
        print(
            f"{name}: baseline {self.errors} errors of {len(self.yva)} "
            f"({time.process_time() - started:.1f} s CPU)",
            flush=True,
        )
        index = {c: i for i, c in enumerate(self.classes)}
        self.gold = np.asarray([index[c] for c in self.ytr])
        self._oof: np.ndarray | None = None

    def report(self, label: str, predicted: np.ndarray) -> None:
        wrong = predicted != self.yva
        before = self.base != self.yva
        count = int(wrong.sum())
        self.result[label] = count
        print(
            f"{label:44s} {count:4d} ({count - self.errors:+d}; fixed "
            f"{int((before & ~wrong).sum())}, broke {int((~before & wrong).sum())})",
            flush=True,
        )

    def oof(self) -> np.ndarray:
        from sklearn.model_selection import StratifiedKFold

        if self._oof is None:
            started = time.process_time()
            scores = np.zeros((len(self.ytr), len(self.classes)))
            folds = StratifiedKFold(5, shuffle=True, random_state=0)
            for fit_rows, held_out in folds.split(self.xtr, self.ytr):
                scores[held_out] = svm(self.xtr[fit_rows], self.ytr[fit_rows]).decision_function(
                    self.xtr[held_out]
                )
            self._oof = scores
            accuracy = (scores.argmax(axis=1) == self.gold).mean() * 100
            print(
                f"out-of-fold scores: {time.process_time() - started:.1f} s CPU, "
                f"accuracy {accuracy:.2f} %",
                flush=True,
            )
        return self._oof

    def margins(self) -> np.ndarray:
        scores = self.oof()
        return scores.max(axis=1) - scores[np.arange(len(self.gold)), self.gold]

    def clean(self) -> None:
        margin = self.margins()
        for tau in (0.0, 0.25, 0.5, 1.0):
            keep = margin <= tau if tau > 0 else self.oof().argmax(axis=1) == self.gold
            predicted = svm(self.xtr[keep], self.ytr[keep]).predict(self.xva)
            self.report(f"clean: margin > {tau} dropped ({int((~keep).sum())})", predicted)

    def upweight(self) -> None:
        margin = self.margins()
        for tau, weight in ((0.0, 2.0), (0.0, 3.0)):
            weights = np.where(margin > tau, weight, 1.0)
            predicted = svm(self.xtr, self.ytr, weights).predict(self.xva)
            self.report(
                f"upweight: margin > {tau} x {weight} ({int((weights > 1).sum())})", predicted
            )

    def stack(self) -> None:
        from sklearn.linear_model import LogisticRegression

        z = (self.scores - self.scores.mean(1, keepdims=True)) / self.scores.std(1, keepdims=True)
        for c in (0.1, 1.0):
            model = LogisticRegression(C=c, max_iter=3000).fit(self.oof(), self.ytr)
            self.report(f"stack: LR C {c}", model.predict(self.scores))
            log_p = model.predict_log_proba(self.scores)
            for blend in (0.1, 0.3):
                self.report(
                    f"stack: z-scores + {blend} x LR C {c} log p",
                    self.classes[(z + blend * log_p).argmax(axis=1)],
                )

    def pairs(self) -> None:
        from sklearn.svm import LinearSVC

        guesses = self.oof().argmax(axis=1)
        confused = collections.Counter(
            (min(a, b), max(a, b)) for a, b in zip(self.gold, guesses, strict=True) if a != b
        )
        top2 = np.argsort(-self.scores, axis=1)[:, :2]
        for least in (1, 2, 3):
            models = {}
            for a, b in (pair for pair, n in confused.items() if n >= least):
                rows = (self.gold == a) | (self.gold == b)
                models[(a, b)] = LinearSVC(C=1.0, max_iter=2000, random_state=0).fit(
                    self.xtr[rows], self.gold[rows]
                )
            for delta in (0.25, 0.5, 10.0):
                predicted = self.scores.argmax(axis=1)
                for i, (p, q) in enumerate(top2):
                    key = (min(p, q), max(p, q))
                    if key in models and self.scores[i, p] - self.scores[i, q] < delta:
                        predicted[i] = models[key].predict(self.xva[i])[0]
                self.report(
                    f"pairs: confused >= {least} ({len(models)}), margin < {delta}",
                    self.classes[predicted],
                )

    def rff(self) -> None:
        width = self.widths[-1]
        static_train = unit(np.asarray(self.xtr[:, -width:].todense()))
        static_valid = unit(np.asarray(self.xva[:, -width:].todense()))
        rng = np.random.default_rng(0)
        for gamma, dims, weight in ((1, 512, 0.5), (1, 512, 1), (4, 512, 0.5), (4, 512, 1)):
            omega = rng.normal(0, np.sqrt(2 * gamma), (width, dims))
            phase = rng.uniform(0, 2 * np.pi, dims)
            blocks = [
                unit(np.cos(e @ omega + phase)) * weight for e in (static_train, static_valid)
            ]
            x_train = sp.hstack([self.xtr, sp.csr_matrix(blocks[0])]).tocsr()
            x_valid = sp.hstack([self.xva, sp.csr_matrix(blocks[1])]).tocsr()
            self.report(
                f"rff: gamma {gamma}, {dims} columns x {weight}",
                svm(x_train, self.ytr).predict(x_valid),
            )

    def augment(self) -> None:
        """Word-dropout copies through the featurizers trained on the original sentences."""
        train = read_nlu_file(DATA / self.name / "rasa-yaml" / VALID_SPLITS[self.name][0])
        components = [c for _, c in NLUPipeline.train(train, STATIC_PIPELINE[:5])._components]

        def features(texts: list[str]) -> sp.csr_matrix:
            messages = featurized(components, texts)
            return self.spread.matrix(feature_matrix(messages, sum(self.widths)))

        for copies, drop, weight in (
            (1, "one", 1.0),
            (1, "one", 0.5),
            (2, "one", 0.5),
            (1, 0.2, 0.5),
        ):
            rng = random.Random(0)
            texts, labels = [], []
            for text, label in zip(self.texts, self.ytr, strict=True):
                words = text.split()
                if len(words) < 3:
                    continue
                for _ in range(copies):
                    if drop == "one":
                        j = rng.randrange(len(words))
                        kept = words[:j] + words[j + 1 :]
                    else:
                        kept = [w for w in words if rng.random() > float(drop)] or words
                    texts.append(" ".join(kept))
                    labels.append(label)
            x = sp.vstack([self.xtr, features(texts)]).tocsr()
            y = np.concatenate([self.ytr, labels])
            weights = np.concatenate([np.ones(len(self.ytr)), np.full(len(labels), weight)])
            self.report(
                f"augment: {copies} copies, drop {drop}, x {weight}",
                svm(x, y, weights).predict(self.xva),
            )

    def neighbours(self) -> None:
        for label, predicted in neighbour_blends(self.xtr, self.ytr, self.xva, self.scores):
            self.report(f"neighbours: {label}", predicted)

    def fold_fit(
        self, x: sp.csr_matrix, widths: list[int], fit_rows: np.ndarray, held_out: np.ndarray
    ) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray, np.ndarray]:
        """One CV fold: the class-spread features fitted on `fit_rows` of `x` (blocks of
        `widths`), both parts' matrices, the SVM's scores of the held-out rows and its
        classes."""
        spread = ClassSpread.fit(x[fit_rows], list(self.ytr[fit_rows]), widths)
        x_fit, x_out = spread.matrix(x[fit_rows]), spread.matrix(x[held_out])
        scores = svm(x_fit, self.ytr[fit_rows]).decision_function(x_out)
        return x_fit, x_out, scores, np.unique(self.ytr[fit_rows])

    def cv_folds(self) -> Iterator[tuple[Any, ...]]:
        """The 4-fold CV of the training split (stratified, seed 0) fold by fold: what
        `fold_fit` returns, then the fitted and the held-out sentences' intents."""
        from sklearn.model_selection import StratifiedKFold

        raw = sp.csr_matrix(sp.load_npz(self.cache / f"{self.name}_xtr.npz"))
        split = StratifiedKFold(4, shuffle=True, random_state=0).split(raw, self.ytr)
        for fit, out in split:
            yield (*self.fold_fit(raw, self.widths, fit, out), self.ytr[fit], self.ytr[out])

    def neighbours_cv(self) -> None:
        from sklearn.model_selection import StratifiedKFold

        raw = sp.csr_matrix(sp.load_npz(self.cache / f"{self.name}_xtr.npz"))
        totals: collections.Counter[str] = collections.Counter()
        folds = StratifiedKFold(4, shuffle=True, random_state=0)
        for fit_rows, held_out in folds.split(raw, self.ytr):
            x_fit, x_out, scores, classes = self.fold_fit(raw, self.widths, fit_rows, held_out)
            totals["svm"] += int((classes[scores.argmax(axis=1)] != self.ytr[held_out]).sum())
            for label, predicted in neighbour_blends(x_fit, self.ytr[fit_rows], x_out, scores):
                totals[label] += int((predicted != self.ytr[held_out]).sum())
        for label, count in totals.items():
            self.result[f"cv {label}"] = count
            print(f"neighbours, 4-fold CV errors: {label:24s} {count:5d}", flush=True)

    def neighbours_words_cv(self) -> None:
        """Eleventh round: 4-fold CV of the blend on every block against the blend without
        the character n-gram block (regex, word n-grams and, where present, the static
        block), for the static pipeline (the cached blocks) and the sparse one (the static
        block dropped)."""
        from sklearn.model_selection import StratifiedKFold

        raw = sp.csr_matrix(sp.load_npz(self.cache / f"{self.name}_xtr.npz"))
        n_blocks = len(self.widths)
        char = n_blocks - 2  # regex, word, char_wb, static
        grid = tuple((1, w) for w in (0.1, 0.2, 0.3, 0.4, 0.5))
        pipelines = {
            "static": list(range(n_blocks)),
            "sparse": list(range(n_blocks - 1)),
        }
        totals: collections.Counter[str] = collections.Counter()
        folds = StratifiedKFold(4, shuffle=True, random_state=0)
        for fold, (fit_rows, held_out) in enumerate(folds.split(raw, self.ytr)):
            for pipeline, blocks in pipelines.items():
                widths = [self.widths[b] for b in blocks]
                x = raw[:, block_columns(self.widths, blocks)]
                x_fit, x_out, scores, classes = self.fold_fit(x, widths, fit_rows, held_out)
                gold = self.ytr[held_out]
                totals[f"{pipeline} svm"] += int((classes[scores.argmax(axis=1)] != gold).sum())
                no_char = [i for i, b in enumerate(blocks) if b != char]
                for features, mask in (
                    ("all", None),
                    ("no char", block_columns(widths, no_char)),
                ):
                    blends = neighbour_blends(x_fit, self.ytr[fit_rows], x_out, scores, grid, mask)
                    for label, predicted in blends:
                        totals[f"{pipeline} {features} {label}"] += int((predicted != gold).sum())
            print(f"fold {fold}: {dict(totals)}", flush=True)
        for label, count in totals.items():
            self.result[f"cv {label}"] = count
            print(f"4-fold CV errors: {label:36s} {count:5d}", flush=True)

    def neighbours_cost(self) -> None:
        """Eleventh round: what `Neighbours.class_scores` (the server's code) reads and costs
        per validation sentence, on every block, without the character n-grams, and with
        the dense block as 16 singular directions too: stored values read (postings + dense
        block) and thread CPU time per call, 3 passes."""
        from server.nlu.neighbours import Neighbours

        index = {c: i for i, c in enumerate(self.classes)}
        labels = np.asarray([index[c] for c in self.ytr], np.int64)
        offsets = np.cumsum(self.widths)
        char = len(self.widths) - 2
        no_char = np.asarray(
            [(offsets[b] - w, offsets[b]) for b, w in enumerate(self.widths) if b != char],
            np.int64,
        )
        rows = [(r.indices.astype(np.int64), r.data.astype(np.float32)) for r in self.xva[:500]]
        variants = (
            ("all blocks", None, None),
            ("no char n-grams", no_char, None),
            ("no char, dense 16", no_char, 16),
        )
        for label, ranges, d in variants:
            nearest = Neighbours.fit(self.xtr, labels, len(self.classes), 1, 0.3, ranges, d)
            read = sorted(nearest.postings_read(i) for i, _ in rows)
            times = []
            for _ in range(3):
                for i, v in rows:
                    started = time.thread_time()
                    nearest.class_scores(i, v)
                    times.append((time.thread_time() - started) * 1e6)
            times.sort()
            stored = nearest.sparse.nnz + nearest.dense.size
            print(
                f"{label:17s} stored {stored:>9,d} values; read per parse p50 "
                f"{read[len(read) // 2]:>9,d} (dense {nearest.dense.size:,d}); CPU per call "
                f"p50 {times[len(times) // 2]:.0f} us, p99 {times[int(len(times) * 0.99)]:.0f} us",
                flush=True,
            )
            self.result[f"cost {label} read p50"] = read[len(read) // 2]
            self.result[f"cost {label} cpu us p50"] = int(times[len(times) // 2])

    def neighbours_projection_cv(self) -> None:
        """Eleventh round: the word-only blend (static pipeline, top 1, λ 0.2) with the
        static block of the stored rows projected on its d leading right singular vectors
        (the dense read at a parse shrinks by 128 / d), 4-fold CV of the training split."""
        from sklearn.model_selection import StratifiedKFold

        raw = sp.csr_matrix(sp.load_npz(self.cache / f"{self.name}_xtr.npz"))
        char = len(self.widths) - 2
        mask = block_columns(self.widths, [b for b in range(len(self.widths)) if b != char])
        static = block_columns(self.widths, [len(self.widths) - 1])
        totals: collections.Counter[str] = collections.Counter()
        folds = StratifiedKFold(4, shuffle=True, random_state=0)
        for fit_rows, held_out in folds.split(raw, self.ytr):
            x_fit, x_out, scores, classes = self.fold_fit(raw, self.widths, fit_rows, held_out)
            gold_fit = np.searchsorted(classes, self.ytr[fit_rows])
            keep = sp.diags(mask.astype(np.float64))
            a = _unit_rows(sp.csr_matrix(x_fit @ keep))
            b = _unit_rows(sp.csr_matrix(x_out @ keep))
            sparse_part = (b[:, ~static] @ a[:, ~static].T).toarray()
            dense_a, dense_b = a[:, static].toarray(), b[:, static].toarray()
            _, _, vt = np.linalg.svd(dense_a, full_matrices=False)
            for d in (16, 32, 64, 128):
                v = vt[:d].T
                similarity = sparse_part + (dense_b @ v) @ (dense_a @ v).T
                nearest = np.full((len(held_out), len(classes)), -np.inf)
                for c in range(len(classes)):
                    nearest[:, c] = similarity[:, gold_fit == c].max(axis=1)
                predicted = classes[(_z(scores) + 0.2 * _z(nearest)).argmax(axis=1)]
                totals[f"d {d}"] += int((predicted != self.ytr[held_out]).sum())
            totals["svm"] += int((classes[scores.argmax(axis=1)] != self.ytr[held_out]).sum())
            print(dict(totals), flush=True)
        for label, count in totals.items():
            self.result[f"cv projection {label}"] = count
            print(f"4-fold CV errors, word-only blend, static block in {label:8s} {count:5d}")

    def neighbours_component_cv(self) -> None:
        """Eleventh round: the server's `Neighbours` (word-only, top 1, λ 0.2; the dense
        columns as they are or as 16 / 32 singular directions) in the 4-fold CV of
        `neighbours_words_cv`, scored sentence by sentence as a parse scores them."""
        from sklearn.model_selection import StratifiedKFold

        from server.nlu.neighbours import Neighbours

        raw = sp.csr_matrix(sp.load_npz(self.cache / f"{self.name}_xtr.npz"))
        offsets = np.cumsum(self.widths)
        char = len(self.widths) - 2
        ranges = np.asarray(
            [(offsets[b] - w, offsets[b]) for b, w in enumerate(self.widths) if b != char],
            np.int64,
        )
        totals: collections.Counter[str] = collections.Counter()
        folds = StratifiedKFold(4, shuffle=True, random_state=0)
        for fit_rows, held_out in folds.split(raw, self.ytr):
            x_fit, x_out, scores, classes = self.fold_fit(raw, self.widths, fit_rows, held_out)
            gold = self.ytr[held_out]
            totals["svm"] += int((classes[scores.argmax(axis=1)] != gold).sum())
            labels = np.searchsorted(classes, self.ytr[fit_rows])
            rows = [x_out[i] for i in range(x_out.shape[0])]
            queries = [(r.indices.astype(np.int64), r.data) for r in rows]
            for d in (None, 16, 32):
                nearest = Neighbours.fit(x_fit, labels, len(classes), 1, 0.2, ranges, d)
                blended = np.stack(
                    [nearest.blend(sc, *q) for sc, q in zip(scores, queries, strict=True)]
                )
                label = f"dense as {d or 'is'}"
                totals[label] += int((classes[blended.argmax(axis=1)] != gold).sum())
            print(dict(totals), flush=True)
        for label, count in totals.items():
            self.result[f"cv component {label}"] = count
            print(f"4-fold CV errors, word-only blend (component), {label:12s} {count:5d}")

    def neighbours_compressed_cv(self) -> None:
        """Twelfth round: the blend with the character n-gram block kept but compressed to
        its d leading singular directions (the word n-grams exact, the static block as 16
        directions), against the eleventh round's word-only blend and the every-block one,
        at several λ and top k, 4-fold CV of the training split (folds as above)."""
        from sklearn.model_selection import StratifiedKFold
        from sklearn.utils.extmath import randomized_svd

        raw = sp.csr_matrix(sp.load_npz(self.cache / f"{self.name}_xtr.npz"))
        n_blocks = len(self.widths)
        char, static = n_blocks - 2, n_blocks - 1
        char_mask = block_columns(self.widths, [char])
        static_mask = block_columns(self.widths, [static])
        word_mask = ~(char_mask | static_mask)
        weights = (0.1, 0.2, 0.3, 0.4, 0.5)
        totals: collections.Counter[str] = collections.Counter()
        folds = StratifiedKFold(4, shuffle=True, random_state=0)
        for fold, (fit_rows, held_out) in enumerate(folds.split(raw, self.ytr)):
            x_fit, x_out, scores, classes = self.fold_fit(raw, self.widths, fit_rows, held_out)
            gold = self.ytr[held_out]
            gold_fit = np.searchsorted(classes, self.ytr[fit_rows])
            totals["svm"] += int((classes[scores.argmax(axis=1)] != gold).sum())
            a, b = _unit_rows(x_fit), _unit_rows(x_out)
            a_no, b_no = _unit_rows(x_fit[:, ~char_mask]), _unit_rows(x_out[:, ~char_mask])
            nw = int(word_mask[~char_mask].sum())
            exact_all = (b @ a.T).toarray()
            word_part = (b[:, word_mask] @ a[:, word_mask].T).toarray()
            char_a, char_b = a[:, char_mask], b[:, char_mask]
            static_a, static_b = a[:, static_mask].toarray(), b[:, static_mask].toarray()
            _, _, vt = np.linalg.svd(static_a, full_matrices=False)
            v16 = vt[:16].T
            static16 = (static_b @ v16) @ (static_a @ v16).T
            # The eleventh round's option: no char n-grams, the static block as 16 directions.
            wa, wb = a_no[:, :nw], b_no[:, :nw]
            sa, sb = a_no[:, nw:].toarray(), b_no[:, nw:].toarray()
            _, _, vt2 = np.linalg.svd(sa, full_matrices=False)
            u = vt2[:16].T
            words16 = (wb @ wa.T).toarray() + (sb @ u) @ (sa @ u).T
            sims = {"all exact": exact_all, "words+static16": words16}
            for d in (32, 64, 128):
                _, _, char_vt = randomized_svd(char_a, d, random_state=0)
                cv = char_vt.T
                char_d = np.asarray(char_b @ cv) @ np.asarray(char_a @ cv).T
                sims[f"char{d}+words+static16"] = word_part + char_d + static16
            for label, similarity in sims.items():
                for k in (1, 2):
                    nearest = np.zeros((len(held_out), len(classes)))
                    for c in range(len(classes)):
                        own = similarity[:, gold_fit == c]
                        nearest[:, c] = -np.partition(-own, k - 1, axis=1)[:, :k].mean(axis=1)
                    for weight in weights:
                        blend = _z(scores) + weight * _z(nearest)
                        predicted = classes[blend.argmax(axis=1)]
                        key = f"{label} top{k} λ {weight}"
                        errors = int((predicted != gold).sum())
                        totals[key] += errors
                        totals[f"fold{fold} {key}"] += errors
            totals[f"fold{fold} svm"] += int((classes[scores.argmax(axis=1)] != gold).sum())
            print(f"fold {fold} done", flush=True)
        for label, count in totals.items():
            self.result[f"cv {label}"] = count
            if not label.startswith("fold"):
                print(f"4-fold CV errors: {label:44s} {count:5d}", flush=True)

    def neighbours_scale_cv(self) -> None:
        """Seventeenth round: the every-block blend's neighbour term without standardising it
        per sentence, z(svm) + μ (nn - mean nn) / s with s a constant (the mean spread of
        2,000 fit sentences' leave-one-out neighbour scores), and raw svm + μ × cosine,
        against the shipped z(svm) + λ z(nn); validation split, then 4-fold CV (folds as
        above)."""
        for label, predicted in _scale_variants(self.xtr, self.ytr, self.xva, self.scores):
            self.report(label, predicted)
        totals: collections.Counter[str] = collections.Counter()
        for x_fit, x_out, scores, classes, y_fit, gold in self.cv_folds():
            totals["svm"] += int((classes[scores.argmax(axis=1)] != gold).sum())
            for label, predicted in _scale_variants(x_fit, y_fit, x_out, scores):
                totals[label] += int((predicted != gold).sum())
        for label, count in totals.items():
            self.result[f"cv {label}"] = count
            print(f"4-fold CV errors: {label:44s} {count:5d}", flush=True)


def _unit_rows(x: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel()
    return sp.csr_matrix(sp.diags(1 / np.maximum(norms, 1e-9)) @ x)


def _z(rows: np.ndarray) -> np.ndarray:
    spread = rows.std(axis=1, keepdims=True)
    return (rows - rows.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)


def _top1(similarity: np.ndarray, gold: np.ndarray, n_classes: int) -> np.ndarray:
    return np.stack([similarity[:, gold == c].max(axis=1) for c in range(n_classes)], axis=1)


def _scale_variants(
    x_fit: sp.csr_matrix, y_fit: np.ndarray, x_out: sp.csr_matrix, scores: np.ndarray
) -> list[tuple[str, np.ndarray]]:
    """Predictions of the blends `neighbours_scale_cv` compares (top 1, every block)."""
    classes = np.unique(y_fit)
    gold = np.searchsorted(classes, y_fit)
    a, b = _unit_rows(x_fit), _unit_rows(x_out)
    nearest = _top1((b @ a.T).toarray(), gold, len(classes))
    sample = np.random.default_rng(0).choice(a.shape[0], min(2000, a.shape[0]), replace=False)
    own = (a[sample] @ a.T).toarray()
    own[np.arange(len(sample)), sample] = -np.inf
    spread = float(_top1(own, gold, len(classes)).std(axis=1).mean())
    centred = nearest - nearest.mean(axis=1, keepdims=True)
    blends = [(f"z blend, λ {w}", _z(scores) + w * _z(nearest)) for w in (0.2, 0.3, 0.4)]
    blends += [(f"fixed scale, μ {m}", _z(scores) + m * centred / spread) for m in (0.2, 0.3, 0.5)]
    blends += [(f"raw: svm + {m} × cosine", scores + m * nearest) for m in (0.5, 1.0, 2.0)]
    return [(label, classes[blend.argmax(axis=1)]) for label, blend in blends]


TENTH_ROUND_GRID = tuple((k, w) for k in (1, 3) for w in (0.1, 0.2, 0.3))


def neighbour_blends(
    x_train: sp.csr_matrix,
    y_train: np.ndarray,
    x_test: sp.csr_matrix,
    scores: np.ndarray,
    grid: tuple[tuple[int, float], ...] = TENTH_ROUND_GRID,
    columns: np.ndarray | None = None,
) -> list[tuple[str, np.ndarray]]:
    """Predictions of z(scores) + λ z(neighbour scores) for each (top k, λ) of `grid`, the
    similarity on the `columns` given (a boolean mask; all by default)."""
    classes = np.unique(y_train)
    gold = np.searchsorted(classes, y_train)
    if columns is not None:
        keep = sp.diags(columns.astype(np.float64))
        x_train, x_test = sp.csr_matrix(x_train @ keep), sp.csr_matrix(x_test @ keep)
    similarity = (_unit_rows(x_test) @ _unit_rows(x_train).T).toarray()
    out = []
    for k in sorted({k for k, _ in grid}):
        nearest = np.zeros((x_test.shape[0], len(classes)))
        for c in range(len(classes)):
            own = similarity[:, gold == c]
            kk = min(k, own.shape[1])
            nearest[:, c] = -np.partition(-own, kk - 1, axis=1)[:, :kk].mean(axis=1)
        for weight in (w for kk, w in grid if kk == k):
            blend = _z(scores) + weight * _z(nearest)
            out.append((f"top{k}, weight {weight}", classes[blend.argmax(axis=1)]))
    return out


def block_columns(widths: list[int], blocks: list[int]) -> np.ndarray:
    """A mask of the columns of the feature `blocks` (positions in `widths`)."""
    offsets = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
    mask = np.zeros(int(offsets[-1]), bool)
    for block in blocks:
        mask[offsets[block] : offsets[block + 1]] = True
    return mask


STEPS = (
    "clean",
    "upweight",
    "stack",
    "pairs",
    "rff",
    "augment",
    "neighbours",
    "neighbours_cv",
    "neighbours_words_cv",
    "neighbours_cost",
    "neighbours_projection_cv",
    "neighbours_component_cv",
    "neighbours_compressed_cv",
    "neighbours_scale_cv",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(VALID_SPLITS))
    parser.add_argument("--cache", default="/tmp/nlu_distill")
    parser.add_argument("--steps", default=",".join(STEPS))
    args = parser.parse_args()
    run = Round(args.dataset, Path(args.cache))
    for step in args.steps.split(","):
        if step not in STEPS:
            parser.error(f"unknown step {step!r}: one of {', '.join(STEPS)}")
        getattr(run, step)()
    print("RESULT", args.dataset, json.dumps(run.result), flush=True)


if __name__ == "__main__":
    main()
