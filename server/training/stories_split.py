"""`botserver data split stories`: each stories file's stories split into a training file and a
test file, as Rasa's `rasa data split stories` splits them."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.errors import InvalidProjectFile
from server.training.project import data_files
from server.training.stories_yaml import read_story_data
from server.training.yaml_io import check_version, dump_yaml, line_of, read_yaml_file

logger = logging.getLogger(__name__)

DEFAULT_VERSION = "3.1"


@dataclass
class StoriesSplit:
    """One stories file's split: where each part goes and how many stories it holds."""

    source: Path
    content: dict[str, Any]
    train: list[Any]
    test: list[Any]
    train_path: Path
    test_path: Path

    def write(self) -> None:
        # The training file is the source with fewer stories (its rules and other sections
        # too); the test file holds the other stories, with the version Rasa leaves out.
        self.train_path.write_text(dump_yaml({**self.content, "stories": self.train}), "utf-8")
        version = self.content.get("version", DEFAULT_VERSION)
        self.test_path.write_text(dump_yaml({"version": version, "stories": self.test}), "utf-8")


def _test_stories(total: int, training_fraction: float, seed: int | None) -> set[int]:
    """Which stories (by index) go to the test part: the test share of `total`, rounded up,
    chosen by scikit-learn's `train_test_split`, as Rasa's split chooses them (so a seed
    picks the same stories). Empty when the training part would be.

    Rasa passes `1 - training_fraction` as the share, whose float error made 0.7 of 10
    stories 6 for training (ceil(10 * 0.30000000000000004) = 4 for test); the count here is
    taken from the share rounded to 9 places."""
    from sklearn.model_selection import train_test_split

    in_test = math.ceil(round((1 - training_fraction) * total, 9))
    if in_test >= total:
        return set()
    _, test = train_test_split(list(range(total)), test_size=in_test, random_state=seed)
    return {int(i) for i in test}


def plan_stories_split(
    paths: list[str], out: Path, training_fraction: float, seed: int | None = None
) -> list[StoriesSplit]:
    """Reads and checks every stories file of `paths` and splits each one's stories; writes
    nothing. The same seed chooses the same stories."""
    splits: list[StoriesSplit] = []
    names: dict[str, Path] = {}
    for file in data_files(paths):
        content = read_yaml_file(file)
        if not isinstance(content, dict) or "stories" not in content:
            continue
        check_version(content, str(file))
        read_story_data(content, str(file))  # a broken story is an error with its line
        stories = content["stories"] or []
        if not stories:
            logger.info("%s has no stories; skipped", file)
            continue
        total = len(stories)
        chosen = _test_stories(total, training_fraction, seed)
        if not chosen:
            raise InvalidProjectFile(
                f"{total} {'story' if total == 1 else 'stories'} cannot be split with "
                f"--training-fraction {training_fraction}: the training part would be empty",
                str(file),
                line_of(content, "stories"),
            )
        if file.name in names:
            raise InvalidProjectFile(
                f"the split of {names[file.name]} is also named train_{file.name} and "
                f"test_{file.name}: give the files different names",
                str(file),
            )
        names[file.name] = file
        splits.append(
            StoriesSplit(
                source=file,
                content=content,
                train=[s for i, s in enumerate(stories) if i not in chosen],
                test=[s for i, s in enumerate(stories) if i in chosen],
                train_path=out / f"train_{file.name}",
                test_path=out / f"test_{file.name}",
            )
        )
    if not splits:
        raise InvalidProjectFile(
            "no stories to split (give their files with --nlu)", ", ".join(paths)
        )
    return splits
