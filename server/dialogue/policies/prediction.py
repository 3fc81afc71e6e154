"""What a policy (and the ensemble) predicts: action probabilities plus Rasa's flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.trackers.events import Event


@dataclass
class PolicyPrediction:
    """The next action, its confidence, and the policy and probabilities behind it.

    `probabilities` is aligned with `domain.action_names_or_texts`. `events` are applied before
    the action runs (for example `LoopInterrupted` when a form returns from an unhappy path).
    `is_no_user_prediction` marks predictions that do not depend on user input (a form's happy
    path); they overrule all others. `hide_rule_turn` marks turns only rules know about.
    """

    action_name: str
    confidence: float
    policy_name: str | None
    probabilities: list[float]
    events: list[Event] = field(default_factory=list)
    is_end_to_end_prediction: bool = False
    is_no_user_prediction: bool = False
    action_metadata: dict | None = None
    policy_priority: int = 0
    hide_rule_turn: bool = False

    def with_events(self, events: list[Event]) -> PolicyPrediction:
        """A copy with other `events` (`dataclasses.replace` costs several times more)."""
        return self.copied(events, self.probabilities)

    def copied(self, events: list[Event], probabilities: list[float]) -> PolicyPrediction:
        """A copy with these `events` and `probabilities`."""
        copy = object.__new__(PolicyPrediction)
        # A new dict given to the copy costs half of updating the copy's own.
        fields = self.__dict__.copy()
        fields["events"] = events
        fields["probabilities"] = probabilities
        copy.__dict__ = fields
        return copy


def zeros(size: int) -> list[float]:
    return [0.0] * size


def prediction_from(
    probabilities: list[float],
    action_names: list[str],
    policy_name: str | None,
    priority: int,
    **flags: object,
) -> PolicyPrediction:
    """A prediction of the most probable action (the first one on ties, as argmax)."""
    best = probabilities.index(max(probabilities)) if probabilities else 0
    return PolicyPrediction(
        action_name=action_names[best] if action_names else "action_listen",
        confidence=probabilities[best] if probabilities else 0.0,
        policy_name=policy_name,
        probabilities=probabilities,
        policy_priority=priority,
        **flags,  # type: ignore[arg-type]
    )
