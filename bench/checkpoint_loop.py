"""Process CPU time to join, for training and for `botserver test`, stories at a checkpoint
loop no story leaves: one story ending at `more`, then N stories going on from `more` and
ending at it, with the code on PYTHONPATH (run once with the base's, once with the head's).

    PYTHONPATH=<checkout> timeout 120 python bench/checkpoint_loop.py 10
"""

from __future__ import annotations

import sys
import time

from server.dialogue.story_steps import generate_training_stories, join_test_stories
from server.training.stories_yaml import read_story_data
from server.training.yaml_io import parse_yaml


def main() -> None:
    stories = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    lines = ["stories:", "- story: s0", "  steps:", "  - intent: greet", "  - action: a"]
    lines.append("  - checkpoint: more")
    for index in range(1, stories + 1):
        lines += [f"- story: s{index}", "  steps:", "  - checkpoint: more"]
        lines += [f"  - intent: i{index}", "  - action: b", "  - checkpoint: more"]
    steps = read_story_data(parse_yaml("\n".join(lines) + "\n"), "stories.yml")
    for name, join in (("test", join_test_stories), ("training", generate_training_stories)):
        started = time.process_time()
        joined = join(steps)
        print(f"{name:9} {len(joined)} stories, {time.process_time() - started:.2f} s", flush=True)


if __name__ == "__main__":
    main()
