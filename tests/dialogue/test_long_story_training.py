"""A long story trains in memory growing with its steps: each prediction point reads a view of
the story's one list of states, not a copy of its prefix (a story of 8,000 steps held 250 MB
of copies), and the policies learn the same as from the copies, file for file. A policy's
state is written as it is encoded, not held as text beside it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from server.dialogue.domain import Domain
from server.dialogue.policies import ml, rule
from server.dialogue.policies.ensemble import PolicyEnsemble
from server.dialogue.policies.featurization import State, states_and_labels
from server.dialogue.policies.memoization import AugmentedMemoizationPolicy, MemoizationPolicy
from server.dialogue.policies.ml import MLPolicy
from server.dialogue.policies.policy import Policy
from server.dialogue.policies.rule import RulePolicy
from server.dialogue.story_steps import TrainingStory
from server.trackers.events import Event
from tests.dialogue.policy_fixtures import action, bot, story, user
from tests.traced_peak import traced_peak

DOMAIN = Domain.from_dict(
    {"intents": ["greet", "ask"], "responses": {f"utter_{a}": [{"text": a}] for a in "ab"}}
)
# 3,000 actions (a listen and an answer per turn): their prefixes were 36 MB of list slots.
TURNS = 1_500
# The states themselves and what the policies learn of them: some 2 MB.
PEAK_BOUND = 8 * 2**20


def _long_story(turns: int = TURNS) -> TrainingStory:
    events: list[Event] = []
    for index in range(turns):
        events += [user(("ask", "greet")[index % 2]), action(f"utter_{'ab'[index % 2]}")]
    return story("long", *events)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MemoizationPolicy("MemoizationPolicy", max_history=5),
        lambda: MemoizationPolicy("MemoizationPolicy"),
        lambda: AugmentedMemoizationPolicy("AugmentedMemoizationPolicy"),
        lambda: RulePolicy("RulePolicy"),
        lambda: MLPolicy("MLPolicy", max_history=5),
    ],
    ids=["memoization", "memoization-whole-histories", "augmented", "rule", "ml"],
)
def test_a_long_story_trains_in_memory_growing_with_its_steps(make: Callable[[], Policy]) -> None:
    stories = [_long_story()]
    make().train(stories, DOMAIN)  # modules a first training imports are not counted
    policy = make()
    peak = traced_peak(lambda: policy.train(stories, DOMAIN))
    assert peak < PEAK_BOUND, f"{peak / 2**20:.1f} MB"
    assert policy.learned_state()  # it learned from the story


class _HeldState(Policy):
    """A policy whose learned state is a large value it holds (as a rule lookup is)."""

    def train(self, stories: list[TrainingStory], domain: Domain) -> None:
        self.state_ = {f"history {i:06d}": f"utter_{i}" for i in range(40_000)}

    def learned_state(self) -> dict[str, Any]:
        return self.state_


def test_a_policy_writes_its_state_without_holding_its_text(tmp_path: Path) -> None:
    policy = _HeldState("HeldState")
    policy.train([], DOMAIN)
    peak = traced_peak(lambda: policy.persist(tmp_path))
    size = (tmp_path / "policy.json").stat().st_size
    assert size > 2**20
    # The text and its bytes, each as large as the file, were held at once.
    assert peak < size / 4, (peak, size)


def _prefixes(
    events: Iterable[Event], domain: Domain, omit_unset_slots: bool = False
) -> list[tuple[list[State], str]]:
    """Each prediction point's states as a list of its own: what the policies read before."""
    states, labels = states_and_labels(events, domain, omit_unset_slots)
    return [(states[: index + 1], label) for index, label in enumerate(labels)]


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


# e2ebot's stories hold texts: its states read a message by its text, which memoization learns.
MEMOIZATION = [{"name": "MemoizationPolicy"}, {"name": "AugmentedMemoizationPolicy"}]


@pytest.mark.parametrize("bot_name", ["formbot", "rules", "concertbot", "e2ebot"])
def test_the_policies_write_the_same_files_as_from_copied_prefixes(
    bot_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    domain, stories, policies = bot(bot_name)
    if bot_name == "e2ebot":
        policies = [*policies, *MEMOIZATION]
    PolicyEnsemble.train(policies, stories, domain).persist(tmp_path / "views")
    for module in (ml, rule):  # memoization reads each state once, not the examples
        monkeypatch.setattr(module, "training_examples", _prefixes)
    PolicyEnsemble.train(policies, stories, domain).persist(tmp_path / "copies")

    views, copies = _files(tmp_path / "views"), _files(tmp_path / "copies")
    assert any(name.endswith("policy.json") for name in views)
    assert views == copies
