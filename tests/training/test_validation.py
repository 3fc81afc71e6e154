"""`data validate`'s story structure check, held against Rasa's own conflicting stories."""

from __future__ import annotations

import pytest

from server.dialogue.story_steps import generate_training_stories
from server.training.domain_yaml import read_domain
from server.training.stories_yaml import read_story_file
from server.training.validation import story_conflicts
from tests.shared_data import TESTDATA


def conflicts(file: str, max_history: int) -> list[str]:
    domain = read_domain(TESTDATA / "test_domains" / "default.yml", warnings=[])
    steps = read_story_file(TESTDATA / "test_yaml_stories" / file, warnings=[])
    stories = [s for s in generate_training_stories(steps) if not s.is_rule]
    return story_conflicts(stories, domain, max_history)


def test_the_intent_before_the_window_still_tells_stories_apart() -> None:
    # The two stories differ only in their first intent, which the states after the
    # bot's first answer still carry: four states see it, three do not (as in Rasa).
    assert conflicts("stories_conflicting_1.yml", 4) == []
    assert conflicts("stories_conflicting_1.yml", 3) == [
        "story structure conflict after intent 'greet': the same history leads to "
        "'utter_default' in story 'story 2', 'utter_greet' in story 'story 1'"
    ]


@pytest.mark.parametrize(
    ("file", "count"),
    [
        ("stories.yml", 0),
        ("stories_conflicting_2.yml", 1),
        ("stories_conflicting_3.yml", 1),
        ("stories_conflicting_4.yml", 1),
        ("stories_conflicting_5.yml", 0),
        ("stories_conflicting_6.yml", 1),
    ],
)
def test_rasas_conflicting_stories(file: str, count: int) -> None:
    assert len(conflicts(file, 5)) == count
