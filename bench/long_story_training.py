"""Memory and CPU to train the dialogue policies of a project whose one story has SIZE steps,
for this code and another checkout.

`python -m bench.long_story_training [--base DIR] [--scenario NAME]... [--limit S] SIZE...`
trains (`train_core`, as `botserver train core`: read the project, train, write the archive)
in a fresh process per (tree, scenario, size), with PYTHONPATH set to the tree, twice: once
for the process CPU seconds of the training and the growth of the peak RSS over the process
before it (scikit-learn and scipy imported first), once under tracemalloc for the peak of
Python's allocations during it. The story is `intent` and `action` steps in turn. Scenarios:
  window   MemoizationPolicy, AugmentedMemoizationPolicy, TEDPolicy (max_history 5), RulePolicy
  whole    MemoizationPolicy without max_history (Rasa's default: a key per whole history,
           so the model itself grows with the square of the story), RulePolicy
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {
    "window": (
        "- name: MemoizationPolicy\n  max_history: 5\n- name: AugmentedMemoizationPolicy\n"
        "- name: TEDPolicy\n  max_history: 5\n- name: RulePolicy\n"
    ),
    "whole": "- name: MemoizationPolicy\n- name: RulePolicy\n",
}
DOMAIN = (
    'version: "3.1"\nintents: [greet, ask]\nresponses:\n'
    "  utter_a:\n  - text: a\n  utter_b:\n  - text: b\n"
)


def _story(size: int) -> str:
    lines = ['version: "3.1"', "stories:", "- story: long", "  steps:"]
    for index in range(size // 2):
        lines.append(f"  - intent: {('ask', 'greet')[index % 2]}")
        lines.append(f"  - action: utter_{'ab'[index % 2]}")
    return "\n".join(lines) + "\n"


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(scenario: str, size: int, traced: bool) -> dict[str, float]:
    """In this process: one training of the scenario's project of `size` steps."""
    import scipy.sparse  # noqa: F401  # imported by the training: not counted in its RSS
    import sklearn.linear_model  # noqa: F401

    from server.training.train import train_core

    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        (project / "config.yml").write_text(
            "language: en\npipeline: []\npolicies:\n" + CONFIGS[scenario]
        )
        (project / "domain.yml").write_text(DOMAIN)
        (project / "data").mkdir()
        (project / "data" / "stories.yml").write_text(_story(size))
        paths = (project / "config.yml", project / "domain.yml", [project / "data"])
        rss_before = _max_rss_mib()
        if traced:
            tracemalloc.start()
        started = time.process_time()
        result = train_core(*paths, project / "models", force=True)
        cpu = time.process_time() - started
        figures = {"cpu_s": cpu, "rss_growth_mib": _max_rss_mib() - rss_before}
        if traced:
            figures["traced_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        figures["archive_kib"] = Path(result.path).stat().st_size / 1024
        return figures


def _child(tree: Path, scenario: str, size: int, traced: bool, limit: float) -> dict | None:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, __file__, "--measure", scenario, str(size), str(int(traced))]

    def cap() -> None:  # a base that grows with the square of the size is cut off
        resource.setrlimit(resource.RLIMIT_CPU, (int(limit), int(limit) + 1))

    done = subprocess.run(command, env=env, capture_output=True, text=True, preexec_fn=cap)
    if done.returncode:
        sys.stderr.write(done.stderr[-2000:])
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _row(tree: Path, scenario: str, size: int, limit: float) -> list[str]:
    plain = _child(tree, scenario, size, False, limit)
    traced = _child(tree, scenario, size, True, limit)
    if plain is None:
        return [f">{limit:.0f}s"] * 3
    return [
        f"{plain['cpu_s']:.2f}",
        f"{plain['rss_growth_mib']:.1f}",
        f"{traced['traced_peak_mib']:.1f}" if traced else f">{limit:.0f}s",
    ]


def main(argv: list[str]) -> None:
    if argv[:1] == ["--measure"]:
        print(json.dumps(measure(argv[1], int(argv[2]), argv[3] == "1")))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="+", type=int)
    parser.add_argument("--base", type=Path, help="another checkout to compare with")
    parser.add_argument("--scenario", action="append", choices=sorted(CONFIGS))
    parser.add_argument("--limit", type=float, default=300, help="CPU seconds per run at most")
    args = parser.parse_args(argv)
    trees = [("head", ROOT)] + ([("base", args.base.resolve())] if args.base else [])
    columns = [f"{name}_{what}" for name, _ in trees for what in ("cpu_s", "rss_mib", "py_mib")]
    print("scenario size " + " ".join(columns))
    for scenario in args.scenario or ["window"]:
        for size in args.sizes:
            figures = [f for _, tree in trees for f in _row(tree, scenario, size, args.limit)]
            print(f"{scenario} {size} " + " ".join(figures), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
