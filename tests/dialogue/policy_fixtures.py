"""Helpers for the policy tests: the real bots' training data, hand-made trackers, replay."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from server.dialogue.domain import RULE_SNIPPET_ACTION, Domain
from server.dialogue.policies.featurization import ConversationStates
from server.dialogue.policies.policy import Policy
from server.dialogue.policies.rule import rule_events
from server.dialogue.story_steps import TrainingStory
from server.trackers.events import (
    ACTION_LISTEN,
    ActionExecuted,
    ActionExecutionRejected,
    Event,
    UserUttered,
)
from server.trackers.tracker import Tracker
from server.training.project import load_project
from tests.shared_data import BOTS


@functools.cache
def bot(name: str) -> tuple[Domain, list[TrainingStory], list[dict[str, Any]]]:
    """(domain, training stories and rules, config.yml policies) of a bot in shared/bots."""
    folder = BOTS / name
    project = load_project(folder / "config.yml", folder / "domain.yml", [folder / "data"])
    return project.domain, project.training_stories(), project.config.policies


def user(intent: str, text: str | None = None, **entities: str) -> UserUttered:
    return UserUttered(
        text=text or f"/{intent}",
        parse_data={
            "intent": {"name": intent, "confidence": 1.0},
            "entities": [{"entity": k, "value": v} for k, v in entities.items()],
        },
    )


def action(name: str) -> ActionExecuted:
    return ActionExecuted(action_name=name)


def listen() -> ActionExecuted:
    return ActionExecuted(action_name=ACTION_LISTEN)


def story(name: str, *events: Event, is_rule: bool = False, **flags: Any) -> TrainingStory:
    """A training story from events; `action_listen` goes before each user turn and at the
    end (at the end of a rule only if it waits for user input), as the story reader does."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, UserUttered):
            out.append(listen())
        out.append(event)
    if flags.get("wait_for_user_input", True):
        out.append(listen())
    return TrainingStory(name=name, is_rule=is_rule, events=out, **flags)


def tracker(domain: Domain, *events: Event) -> Tracker:
    return Tracker("test", domain.slot_defaults(), events)


def next_action_of(policy: Policy, domain: Domain) -> Callable[[Tracker], str]:
    """`replay`'s `predict` for one policy: the action it predicts on a tracker."""
    return lambda t: policy.predict(ConversationStates(t, domain), domain).action_name


def replay(predict: Any, training: TrainingStory, domain: Domain) -> list[tuple[str, str]]:
    """(expected, predicted) at every predictable action of a story or rule.

    As `rasa test` does, an active loop that a story does not run next is rejected first.
    `predict(tracker)` returns the predicted action name.
    """
    events = rule_events(training) if training.is_rule else training.events
    running = Tracker(training.name, domain.slot_defaults())
    pairs: list[tuple[str, str]] = []
    unpredictable = True
    for event in events:
        if isinstance(event, ActionExecuted):
            gold = event.action_name or event.action_text or ""
            if gold == RULE_SNIPPET_ACTION or unpredictable:
                unpredictable = gold == RULE_SNIPPET_ACTION
                running.update(event)
                continue
            predicted = predict(running)
            loop = running.active_loop_name
            if loop and predicted == loop and gold != loop:
                running.update(ActionExecutionRejected(action_name=loop))
                predicted = predict(running)
            pairs.append((gold, predicted))
        running.update(event)
    return pairs
