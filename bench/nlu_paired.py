"""Two bench/nlu.py runs of the same split compared sentence by sentence (seventeenth NLU
round): how many sentences each pipeline gets right that the other gets wrong, and the
two-sided sign test of that split (McNemar's exact test). A difference of a few sentences
in accuracy means little when the two pipelines disagree on many more.

    python bench/nlu.py --split valid|test --pipeline A --out a.json ...
    python bench/nlu.py --split valid|test --pipeline B --out b.json ...
    python bench/nlu_paired.py a.json b.json
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import sys
from pathlib import Path


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial p of `wins` against `losses` at even odds."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(a: dict, b: dict) -> dict:
    """One dataset's two results (bench/nlu.py's JSON entries, with `intent_misses`)."""
    if (a["dataset"], a["split"], a.get("test_examples")) != (
        b["dataset"],
        b["split"],
        b.get("test_examples"),
    ):
        raise ValueError(f"{a['dataset']}: the two runs did not score the same sentences")
    wrong_a = collections.Counter((text, gold) for text, gold, _ in a["intent_misses"])
    wrong_b = collections.Counter((text, gold) for text, gold, _ in b["intent_misses"])
    only_a = sum((wrong_b - wrong_a).values())  # right in a, wrong in b
    only_b = sum((wrong_a - wrong_b).values())
    return {
        "dataset": a["dataset"],
        "split": a["split"],
        "errors": [a["intent_errors"], b["intent_errors"]],
        "right_only_in": [only_a, only_b],
        "sign_test_p": sign_test(only_a, only_b),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    runs = []
    for path in (args.a, args.b):
        try:
            results = json.loads(path.read_text())["results"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"{path}: not a bench/nlu.py report ({exc})", file=sys.stderr)
            return 2
        if any("intent_misses" not in r for r in results):
            print(f"{path}: written before bench/nlu.py kept its misses", file=sys.stderr)
            return 2
        runs.append({r["dataset"]: r for r in results})
    common = [name for name in runs[0] if name in runs[1]]
    if not common:
        print("the two reports share no dataset", file=sys.stderr)
        return 2
    print(f"{'dataset':<10} {'split':<6} {'errors a / b':>13} {'right only in a / b':>20} {'p':>6}")
    for name in common:
        try:
            row = paired(runs[0][name], runs[1][name])
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        errors = "{} / {}".format(*row["errors"])
        only = "{} / {}".format(*row["right_only_in"])
        print(f"{name:<10} {row['split']:<6} {errors:>13} {only:>20} {row['sign_test_p']:>6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
