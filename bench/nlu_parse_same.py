"""Whether two source trees parse alike (review59, for speed rounds that claim the same
predictions): each tree trains the same small pipelines (word, char and char_wb count
vectors with several n-gram ranges and lowercase off, the CRF and its entity types, the
gazetteer, skip-grams, the static WordPiece table, the neighbours' blend) and parses the
same hostile texts (other scripts, combining marks, controls, CJK, emoji, words around the
WordPiece and cache limits, each text twice); every answer, token and sparse row is
compared, and the neighbours' bounded search on random rows.

    python bench/nlu_parse_same.py OLD_TREE NEW_TREE [--per-intent 600] [--texts 1500]

(a worktree of the old commit: `git worktree add --detach /tmp/old <commit>`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
from typing import Any

WORDS = (
    "play find book the matrix alien heat jaws emma dune beyoncé café naïve ΣΟΦΟΣ σοφός 日本語 "
    "Straße İstanbul ﬁne x\u0301 ##ing un##able McDonald's ABC123 a-b e.g. 42 3.14"
).split()
FORMS = {
    "find_movie": [
        "find [{e}](movie_name)",
        "when is [{e}](movie_name) on",
        "see [{e}](movie_name) {w}",
    ],
    "find_book": [
        "find the novel [{e}](book_name)",
        "get [{e}](book_name) {w}",
        "read [{e}](book_name)",
    ],
    "greet": ["hello {w}", "good morning {w}", "hey there {w} {w}"],
}
ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 '\".,!?-#@$%&*()[]{}<>/\\_:;"
    "éÉèàüÜöñçßİıΣσςΑωЖжё日本語中文한국어テキストﬁﬀ½²①"
    "\u0301\u0308\u0327\u00a0\u2028\u3000\t\n\r\x00\x1c\x7f\u200b\u200d\ufeff\ufffd👍🏽🇫🇷𝔘𝔫"
)
CRF = {"name": "CRFEntityExtractor"}
PIPELINES: dict[str, list[dict[str, Any]]] = {
    "word_charwb_crf_types": [
        {"name": "WhitespaceTokenizer"},
        {"name": "RegexFeaturizer"},
        {"name": "LexicalSyntacticFeaturizer"},
        {"name": "CountVectorsFeaturizer", "min_ngram": 1, "max_ngram": 3},
        {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 5},
        CRF,
        {"name": "EntityTypeFeaturizer", "folds": 3, "carrier_weight": 0.5},
        {"name": "EntityGazetteerFeaturizer"},
        {"name": "LogisticRegressionClassifier"},
        {"name": "EntitySynonymMapper"},
    ],
    "char_nolower": [
        {"name": "WhitespaceTokenizer", "case_sensitive": True},
        {"name": "CountVectorsFeaturizer", "analyzer": "char", "min_ngram": 2, "max_ngram": 4,
         "lowercase": False, "OOV_token": "oov", "use_shared_vocab": True},
        {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 2, "max_ngram": 6,
         "lowercase": False},
        {"name": "CountVectorsFeaturizer", "min_ngram": 2, "max_ngram": 2, "lowercase": False,
         "use_tfidf": False},
        CRF,
        {"name": "EntityTypeFeaturizer", "folds": 2},
        {"name": "SkipGramFeaturizer"},
        {"name": "IntentClassifier", "neighbour_weight": 0.5},
    ],
    "static": [
        {"name": "WhitespaceTokenizer"},
        {"name": "StaticEmbeddingFeaturizer", "common_tokens": 300},
        {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4},
        CRF,
        {"name": "IntentClassifier", "neighbour_weight": 0.5, "neighbour_dimensions": 48},
    ],
}  # fmt: skip


def training_yaml(rng: random.Random, per_intent: int) -> str:
    body = "nlu:\n"
    for intent, forms in FORMS.items():
        lines = set()
        for i in range(per_intent):
            entity = " ".join(rng.choice(WORDS[:20]) for _ in range(rng.randint(1, 2)))
            word = rng.choice(WORDS) + str(i % 37)
            lines.add(forms[i % len(forms)].format(e=entity, w=word))
        examples = "".join(f"    - {x}\n" for x in sorted(lines))
        body += f"- intent: {intent}\n  examples: |\n{examples}"
    body += "- lookup: movie_name\n  examples: |\n    - the matrix\n    - jaws\n    - café\n"
    return body + "- synonym: heat\n  examples: |\n    - HEAT\n    - Heat\n"


def hostile(rng: random.Random, i: int) -> str:
    kind = i % 6
    if kind == 0:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
    if kind == 1:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))
    if kind == 2:  # seen words with other separators: pieces in new contexts
        seps = [" ", "  ", "\t", "\u00a0", "", "-", " \u0301", "##", "日"]
        return "".join(rng.choice(WORDS) + rng.choice(seps) for _ in range(rng.randint(1, 6)))
    if kind == 3:  # around WordPiece's 100 characters a word and the caches' 64
        n = rng.choice([63, 64, 65, 99, 100, 101, 150, 300])
        word = "".join(rng.choice("abcé日##\u0301") for _ in range(n))
        return f"{rng.choice(WORDS)} {word} {rng.choice(WORDS)}"
    if kind == 4:
        return f"{rng.choice(WORDS).upper()} {rng.choice(WORDS).title()} {rng.randint(0, 10**9)}"
    return "".join(rng.choice(ALPHABET[:60]) for _ in range(rng.randint(1, 12))) + " " + WORDS[0]


def dump(per_intent: int, count: int) -> None:
    """One JSON line a parse, from the tree on PYTHONPATH."""
    from server.nlu.message import Message
    from server.nlu.pipeline import NLUPipeline
    from server.training.nlu_yaml import read_nlu_yaml

    rng = random.Random(59)
    data = read_nlu_yaml(training_yaml(rng, per_intent))
    texts = [hostile(rng, i) for i in range(count)]
    for name, config in PIPELINES.items():
        pipeline = NLUPipeline.train(data, config)
        for text in texts * 2:
            message = Message(text)
            for _, component in pipeline._components:
                component.process(message)
            indices, values = message.sparse_vector()
            row = hashlib.sha1(indices.tobytes() + values.tobytes()).hexdigest()
            tokens = [(t.text, t.start, t.end) for t in message.tokens]
            answer = pipeline.parse(text)
            print(json.dumps([name, text, answer, row, str(values.dtype), tokens], default=repr))
    print(json.dumps(["bounded neighbours", bounded_neighbours()]))


def bounded_neighbours() -> str:
    """The neighbours' class scores on random rows, the bounded search on."""
    import numpy as np
    import scipy.sparse as sp

    from server.nlu.neighbours import Neighbours

    rng = np.random.default_rng(5)
    digest = hashlib.sha1()
    for trial in range(6):
        intents, width = 3 + trial % 3, 300
        n = 500 * intents + 37 * trial + (5000 if trial == 5 else 0)  # > HEAD_PIECE
        dense = rng.standard_normal((n, 40)) * (rng.random((n, 40)) < 0.9)
        rest = sp.random(n, width - 40, density=0.02, random_state=trial, format="csr")
        x = sp.hstack([sp.csr_matrix(dense), rest]).tocsr()
        classes = rng.integers(0, intents, n)
        nearest = Neighbours.fit(x, classes, intents, 1, 0.5, dimensions=32 if trial % 2 else None)
        for query in range(400):
            features = np.unique(rng.integers(0, width, rng.integers(1, 60))).astype(np.int64)
            values = rng.standard_normal(len(features)).astype(np.float32)
            if query % 7 == 0:
                values[:] = 0.0
                values[0] = -0.0
            scores = nearest.class_scores(features, values)
            digest.update(b"none" if scores is None else scores.tobytes())
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*")
    parser.add_argument("--per-intent", type=int, default=600)
    parser.add_argument("--texts", type=int, default=1500)
    parser.add_argument("--dump", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dump:
        dump(args.per_intent, args.texts)
        return 0
    if len(args.trees) != 2:
        parser.error("give two source trees")
    outputs = []
    for tree in args.trees:
        command = [sys.executable, __file__, "--dump", f"--per-intent={args.per_intent}"]
        command.append(f"--texts={args.texts}")
        env = {**os.environ, "PYTHONPATH": tree}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        outputs.append(done.stdout.splitlines())
    old, new = outputs
    differing = [(a, b) for a, b in zip(old, new, strict=False) if a != b]
    print(f"{len(old)} and {len(new)} lines, {len(differing)} differ")
    for a, b in differing[:5]:
        print(f"- {a[:300]}\n+ {b[:300]}")
    return 0 if len(old) == len(new) and not differing else 1


if __name__ == "__main__":
    sys.exit(main())
