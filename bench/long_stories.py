"""CPU seconds to load a project (`load_project`) and to validate it (`data validate`'s
checks) as its stories, rules or other sections grow, for this code and another checkout.

`python -m bench.long_stories [--base DIR] [--scenario NAME]... [--phase load|validate]...
SIZE...` runs each (tree, scenario, phase, size) in a fresh process, with PYTHONPATH set to
the tree, and prints process CPU time (utime + stime of the child). A scenario of SIZE holds:
  story        one story of SIZE steps          rule       one rule of SIZE steps
  stories      SIZE / 3 stories of 3 steps      checkpoints SIZE / 2 stories chained by checkpoints
  or           one story of SIZE steps, every user step an `or` of one alternative
  nlu          one intent of SIZE examples      responses  SIZE responses used by no story
  slots        SIZE slots of the domain
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("story", "rule", "stories", "checkpoints", "or", "nlu", "responses", "slots")
CONFIG = "language: en\npipeline: []\npolicies:\n- name: MemoizationPolicy\n- name: RulePolicy\n"


def _domain(scenario: str, size: int) -> str:
    lines = ['version: "3.1"', "intents: [greet, ask]", "responses:"]
    lines += [f"  utter_{a}:\n  - text: {a}" for a in "ab"]
    if scenario == "responses":
        lines += [f"  utter_r{i}:\n  - text: r{i}" for i in range(size)]
    if scenario == "slots":
        lines.append("slots:")
        slot = "  s{}:\n    type: text\n    mappings:\n    - type: custom"
        lines += [slot.format(i) for i in range(size)]
    return "\n".join(lines) + "\n"


def _turns(count: int, user: str = "  - intent: {intent}") -> list[str]:
    lines = []
    for index in range(count):
        lines.append(user.format(intent=("ask", "greet")[index % 2]))
        lines.append(f"  - action: utter_{'ab'[index % 2]}")
    return lines


def _data(scenario: str, size: int) -> str:
    if scenario in ("story", "rule", "or"):
        section, kind = ("rules", "rule") if scenario == "rule" else ("stories", "story")
        user = "  - or:\n    - intent: {intent}" if scenario == "or" else "  - intent: {intent}"
        lines = [f"{section}:", f"- {kind}: long", "  steps:", *_turns(size // 2, user)]
    elif scenario == "stories":
        lines = ["stories:"]
        for index in range(size // 3):
            lines += [f"- story: s{index}", "  steps:", *_turns(1), "  - action: utter_b"]
    elif scenario == "checkpoints":
        lines = ["stories:"]
        for index in range(size // 2):
            lines += [f"- story: c{index}", "  steps:"]
            if index:
                lines.append(f"  - checkpoint: c{index}")
            lines += _turns(1)[:1] + ["  - action: utter_a"]
            if index + 1 < size // 2:
                lines.append(f"  - checkpoint: c{index + 1}")
    elif scenario == "nlu":
        lines = ["nlu:", "- intent: greet", "  examples: |"]
        lines += [f"    - hello number {i}" for i in range(size)]
    else:
        lines = ["stories:", "- story: short", "  steps:", *_turns(1)]
    return 'version: "3.1"\n' + "\n".join(lines) + "\n"


def measure(scenario: str, phase: str, size: int) -> float:
    """In this process: CPU seconds of one load (or validation) of the scenario's project."""
    from server.training.project import load_project
    from server.training.validation import validate_project

    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        (project / "config.yml").write_text(CONFIG)
        (project / "domain.yml").write_text(_domain(scenario, size))
        (project / "data").mkdir()
        (project / "data" / "data.yml").write_text(_data(scenario, size))
        paths = (project / "config.yml", project / "domain.yml", [project / "data"])
        started = time.process_time()
        if phase == "load":
            load_project(*paths)
        else:
            report = validate_project(*paths)
            if report.errors:
                raise SystemExit(f"{scenario} {size}: {report.errors[0]}")
        return time.process_time() - started


def _child(tree: Path, scenario: str, phase: str, size: int, limit: float) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, __file__, "--measure", scenario, phase, str(size)]

    def cap() -> None:  # a base that grows with the square of the size is cut off
        resource.setrlimit(resource.RLIMIT_CPU, (int(limit), int(limit) + 1))

    done = subprocess.run(command, env=env, capture_output=True, text=True, preexec_fn=cap)
    if done.returncode:
        return f">{limit:.0f}" if done.returncode < 0 else "error"
    return f"{float(done.stdout.strip()):.2f}"


def main(argv: list[str]) -> None:
    if argv[:1] == ["--measure"]:
        print(measure(argv[1], argv[2], int(argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="+", type=int)
    parser.add_argument("--base", type=Path, help="another checkout to compare with")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--phase", action="append", choices=("load", "validate"))
    parser.add_argument("--limit", type=float, default=120, help="CPU seconds per run at most")
    args = parser.parse_args(argv)
    trees = [("head", ROOT)] + ([("base", args.base.resolve())] if args.base else [])
    print("scenario phase size " + " ".join(f"{name}_cpu_s" for name, _ in trees))
    for scenario in args.scenario or ["story"]:
        for phase in args.phase or ["load", "validate"]:
            for size in args.sizes:
                figures = [_child(tree, scenario, phase, size, args.limit) for _, tree in trees]
                print(f"{scenario} {phase} {size} " + " ".join(figures), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
