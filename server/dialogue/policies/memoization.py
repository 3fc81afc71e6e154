"""MemoizationPolicy and AugmentedMemoizationPolicy: replay the stories' exact histories."""

from __future__ import annotations

import filecmp
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from server.dialogue.domain import Domain
from server.dialogue.policies.featurization import (
    ConversationStates,
    State,
    StatesWindow,
    cut_story_states,
    state_text,
    states_and_labels,
    story_states,
    with_text_for_last_user,
)
from server.dialogue.policies.histories import ROOT, SHORT, Histories
from server.dialogue.policies.policy import STATE_FILE, Policy
from server.dialogue.policies.prediction import PolicyPrediction, prediction_from, zeros
from server.dialogue.story_steps import TrainingStory
from server.errors import ModelError, TrainingError
from server.nlu.params import flag
from server.trackers.events import (
    ACTION_LISTEN,
    ActionExecuted,
    ActiveLoop,
    Event,
    FollowupAction,
    UserUttered,
)
from server.trackers.tracker import activated_loops

MEMOIZATION_PRIORITY = 3


class MemoizationPolicy(Policy):
    """Predicts, with confidence 1, the action a story took after the same last turns.

    Trained on stories (not rules). Histories that lead to different actions in different
    stories are ambiguous and forgotten. Reads the conversation's `stories()` states, as
    Rasa's: turns only rules know are left out.
    """

    default_priority = MEMOIZATION_PRIORITY
    # As Rasa 3.6: no `max_history` reads the whole conversation (since its last session
    # start or restart), so a story is followed only from its start.
    defaults = {"max_history": None, "use_nlu_confidence_as_score": False}

    def __init__(self, name: str, priority: int | None = None, **options: Any) -> None:
        super().__init__(name, priority, **options)
        # As given (a written state's, when loaded): what a twin is made with (`memoization_twin`).
        self._given_options = options
        key = "use_nlu_confidence_as_score"
        self.options[key] = flag(self.options, key, False, name)
        self.histories_ = Histories()
        # The most states a learned history holds: without `max_history` a conversation of
        # more states matches none, so the last `longest_ + 1` states decide (`_reach`).
        self.longest_ = 0

    @property
    def max_history(self) -> int | None:
        return self.int_option("max_history")

    def _reach(self) -> int:
        """How many of the last states a prediction reads: `max_history`, or without one
        (the whole conversation, as Rasa) one more than the longest learned history, a
        window no longer conversation can match."""
        return self.max_history or self.longest_ + 1

    def _window(self, states: Sequence[State]) -> Sequence[State]:
        n = self.max_history
        return states[-n:] if n else states

    def train(self, stories: list[TrainingStory], domain: Domain) -> None:
        histories = Histories()
        n = self.max_history
        for story in stories:
            if story.is_rule:
                continue
            # The action at i followed states[: i + 1]: each state's text is written once,
            # and without `max_history` each history is the one before it and one state.
            states, labels = states_and_labels(story.events, domain)
            texts = [state_text(state) for state in states[: len(labels)]]
            node = ROOT
            try:
                for i, action in enumerate(labels):
                    if n:
                        histories.learn_window(texts[max(0, i + 1 - n) : i + 1], action)
                    else:
                        node = histories.child(node, texts[i], i + 1)
                        histories.learn(node, action)
            except ModelError as e:  # more histories than a model may load
                raise TrainingError(
                    f"{self.name} cannot learn these stories: {e} (a model holding them would "
                    f"not load); set a lower `max_history`, or train on fewer stories"
                ) from e
        histories.done()
        self._learned(histories, histories.depth)

    def _learned(self, histories: Histories, longest: int) -> None:
        self.histories_ = histories
        self.longest_ = longest

    def recall(self, states: Sequence[State]) -> str | None:
        window = self._window(states)
        if len(window) > self.histories_.depth:
            return None
        return self.histories_.action_of(tuple(map(state_text, window)))

    def _recall_conversation(self, conversation: StatesWindow) -> tuple[str | None, bool]:
        """(the remembered action or None, whether it was found by the message's text)."""
        # `recall` on the text states, then on the states, by their texts written once.
        reach = self._reach()
        if reach > SHORT and min(len(conversation.states), reach) > self.histories_.depth:
            return None, False  # a window longer than any learned history, left unwritten
        if conversation.text_states() is not None:
            texts = conversation.texts(reach, by_text=True)
            action = self.histories_.action_of(texts)
            if action is not None:
                return action, True
        return self.histories_.action_of(conversation.texts(reach)), False

    def predict(self, conversation: ConversationStates, domain: Domain) -> PolicyPrediction:
        probabilities = zeros(len(domain.action_names_or_texts))
        action, by_text = self._recall_conversation(conversation.stories())
        if action is not None:
            index = domain.index_of_action(action)
            if index is not None:
                probabilities[index] = self.action_score(conversation)
        return prediction_from(
            probabilities,
            domain.action_names_or_texts,
            self.name,
            self.priority,
            is_end_to_end_prediction=by_text and action is not None,
        )

    def prediction_window(self) -> int | None:
        if self.option("use_nlu_confidence_as_score"):
            return None  # the confidence is the message's, not the window's
        return self._reach()

    def reads_message_text(self) -> bool:
        # A window ending in the message's text ends in `{"text":...}`; without such a
        # state in a learned history, no text can be found.
        return self.histories_.reads_text

    def learned_state(self) -> dict[str, Any]:
        # `lookup` (the older form: a key per history) is null: a botserver before this form
        # refuses the archive instead of loading it as having learned nothing.
        return {"lookup": None, "histories": self.histories_.as_data()}

    def restore(self, state: dict[str, Any], directory: Path, domain: Domain) -> None:
        if "histories" in state:
            histories = Histories.from_data(state["histories"])
            self._learned(histories, histories.depth)
            return
        # An archive from before: a key per history (the JSON text of its states).
        lookup = state.get("lookup", {})
        histories = Histories.from_lookup(lookup)
        longest = state.get("longest")
        if not isinstance(longest, int) or isinstance(longest, bool) or longest < 0:
            longest = 0
            if not self.max_history:
                # from before the longest history was stored: counted from the keys
                longest = histories.depth
        self._learned(histories, longest)


class AugmentedMemoizationPolicy(MemoizationPolicy):
    """Memoization that, without an exact match, forgets the oldest turns one at a time.

    Each shorter history starts afresh at an action, so slots set before it are forgotten too
    (they come back only if set again later), as Rasa does.
    """

    # Not Rasa's default (the whole history): each prediction would try every shorter
    # history of the whole conversation, a cost growing with its square.
    defaults = {"max_history": 5, "use_nlu_confidence_as_score": False}

    def prediction_window(self) -> None:
        # The shorter histories are folded from events: a slot set before the window is
        # in the window's states but not in theirs.
        return None

    def _recall_conversation(self, conversation: StatesWindow) -> tuple[str | None, bool]:
        action, by_text = super()._recall_conversation(conversation)
        if action is not None:
            return action, by_text
        domain, message = conversation.domain, conversation.tracker.latest_message
        events = _trim_to_max_history(conversation.events, self.max_history)
        # Each shorter history starts at the next action. Without `max_history` a history
        # of more states than the longest learned matches none: a cut that provably folds
        # into more is passed by unwalked, so a turn walks the conversation a few times,
        # not once per action (its length squared).
        cuts = [i for i, event in enumerate(events) if isinstance(event, ActionExecuted)]
        fewest = None if self.max_history else fewest_story_states(events, cuts)
        depth, rule_only = self.histories_.depth, conversation.rule_only
        walked = [True] * len(cuts) if fewest is None else [f <= depth for f in fewest]
        # Without a loop, every cut's states in one pass (the walks from each meet): a
        # conversation of turns only rules know cost its length squared at every turn.
        states_of = (
            None
            if any(isinstance(event, ActiveLoop) for event in events)
            else cut_story_states(events, cuts, walked, domain, rule_only)
        )
        previous: Sequence[State] | None = conversation.states
        for index, cut in enumerate(cuts):
            if not walked[index]:
                previous = None  # not walked: the next cut's states are compared to none
                continue
            walk = None if states_of is None else states_of[index]
            states = story_states(events[cut:], domain, rule_only) if walk is None else walk
            if states == previous:
                continue
            previous = states
            with_text = with_text_for_last_user(states, message.text)
            for candidate, by_text in ((with_text, True), (states, False)):
                if candidate is not None:
                    action = self.recall(candidate)
                    if action is not None:
                        return action, by_text
        return None, False


def memoization_twin(
    cls: type[Policy], name: str, priority: int, directory: Path, loaded: list[tuple[Path, Policy]]
) -> MemoizationPolicy | None:
    """A memoization policy whose written state (`directory`'s) is byte for byte that of one
    `loaded` before (a (directory, policy) each), sharing its histories rather than reading
    them again: MemoizationPolicy and AugmentedMemoizationPolicy of the same `max_history`
    learn the same ones, and each copy kept the memory (and took the time) of the other.
    It is made as `load` would make it, with the options the same bytes gave the earlier one;
    None when there is no such twin, or its options differ (`restore` reads `max_history`)."""
    if not issubclass(cls, MemoizationPolicy):
        return None
    state = directory / STATE_FILE
    for earlier_directory, earlier in loaded:
        if (
            isinstance(earlier, MemoizationPolicy)
            and type(earlier).restore is cls.restore
            and _same_bytes(state, earlier_directory / STATE_FILE)
        ):
            twin = cls(name, priority, **earlier._given_options)
            if twin.options == earlier.options:
                twin._learned(earlier.histories_, earlier.longest_)
                return twin
    return None


def _same_bytes(path: Path, other: Path) -> bool:
    try:
        return path.stat().st_size == other.stat().st_size and filecmp.cmp(
            path, other, shallow=False
        )
    except OSError:
        return False


def _trim_to_max_history(events: list[Event], max_history: int | None) -> list[Event]:
    """The events from the latest action_listen before the last `max_history` actions, as
    Rasa trims: the user message that led into those actions is kept (all events when
    there is no such listen)."""
    if not max_history:
        return events
    seen = 0
    for i in range(len(events) - 1, -1, -1):
        event = events[i]
        if isinstance(event, ActionExecuted):
            seen += 1
            if seen > max_history and event.action_name == ACTION_LISTEN:
                return events[i:]
    return events


def fewest_story_states(events: list[Event], cuts: list[int]) -> list[int]:
    """For each cut (the index in `events` of an action), a number of states that
    `story_states(events[cut:])` holds at least, for all cuts in one pass over the events.

    Counted: each action whose state is surely kept. Its turn is not hidden (no
    `hide_rule_turn`, no followup pending, and the action before it, in the cut, is named
    and runs no loop), and no loop's collapse can take it or the action before it: a
    collapse undoes the events between two runs of one loop with no deactivation between
    them (`collapse_loop_happy_paths`), so the actions after the first of two such runs,
    up to the one after the second, are not counted for a cut before that first run."""
    loops = activated_loops(events)
    count = len(cuts)
    counted = [False] * count  # by the action's number among the cuts
    # (first run, the next run of the same loop with no deactivation between), by number
    spans: dict[int, list[int]] = {}
    last_run: dict[str, tuple[int, int]] = {}  # a loop's last run: (number, deactivations)
    deactivations, followup, number = 0, False, -1
    previous_name: str | None = None
    for event in events:
        if isinstance(event, ActionExecuted):
            number += 1
            counted[number] = (
                number > 0
                and not event.hide_rule_turn
                and not followup
                and previous_name is not None
                and previous_name not in loops
            )
            name = previous_name = event.action_name
            followup = False
            if name in loops:
                run = last_run.get(name)
                if run is not None and run[1] == deactivations:
                    spans.setdefault(run[0], []).append(number)
                last_run[name] = (number, deactivations)
        elif isinstance(event, UserUttered):
            followup = False
        elif isinstance(event, FollowupAction):
            followup = True
        elif isinstance(event, ActiveLoop) and event.name is None:
            deactivations += 1
    # From the last cut back: the spans starting at or after each, marked once each
    # (`unmarked` jumps over the marked numbers).
    unmarked = list(range(count + 1))

    def first_unmarked(at: int) -> int:
        while unmarked[at] != at:
            unmarked[at] = unmarked[unmarked[at]]
            at = unmarked[at]
        return at

    fewest = [0] * count
    after, lost = 0, 0  # counted actions after the cut, and those of them in a span
    for cut in range(count - 1, -1, -1):
        for second in spans.get(cut, ()):
            end = min(second + 1, count - 1)
            at = first_unmarked(cut + 1)
            while at <= end:
                lost += counted[at]
                unmarked[at] = at + 1
                at = first_unmarked(at + 1)
        fewest[cut] = after - lost
        after += counted[cut]
    return fewest
