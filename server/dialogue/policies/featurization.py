"""Dialogue state featurization: events → the list of turn states policies learn from.

A state is Rasa's dict `{"user": {"intent" | "text", "entities"}, "prev_action": {...},
"active_loop": {"name"}, "slots": {slot: feature}}`, one per prediction point (before each
ActionExecuted) plus the current one.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

import orjson

from server.dialogue.domain import ENTITY_LABEL_SEPARATOR, RULE_SNIPPET_ACTION, Domain
from server.dialogue.memo import Memo
from server.trackers.events import (
    ACTION_LISTEN,
    ActionExecuted,
    ActionReverted,
    ActiveLoop,
    AllSlotsReset,
    BotUttered,
    DefinePrevUserUtteredFeaturization,
    EntitiesAdded,
    Event,
    FollowupAction,
    LoopInterrupted,
    Restarted,
    SessionStarted,
    SlotSet,
    UserUtteranceReverted,
    UserUttered,
)
from server.trackers.tracker import LOOP_UNDONE as _UNDONE
from server.trackers.tracker import (
    Tracker,
    activated_loops,
    applied_events,
    collapse_loop_happy_paths,
)
from server.trackers.tracker import first_loop_run_or_unhappy_path as _first_run_or_unhappy_path

State = dict[str, dict[str, Any]]
T = TypeVar("T")
# Marks, in rule conditions, a slot or loop that must *not* be set.
SHOULD_NOT_BE_SET = "__should_not_be_set__"
USER, PREV_ACTION, ACTIVE_LOOP, SLOTS = "user", "prev_action", "active_loop", "slots"


# Where orjson's text may differ from json.dumps's: floats in exponent form (a digit before
# an e or E) or below 1e-4, DEL, NaN/infinity (null), non-ASCII text. Such keys take the slow
# path. Digits and E are mapped to 0 and e to find the first with one search (a regular
# expression with these alternatives cost twice as much).
_DIGITS_AND_E = bytes.maketrans(b"123456789E", b"000000000e")


def state_key(states: Sequence[State]) -> str:
    """A stable text key for a list of states (tuples become lists).

    Byte for byte `json.dumps(states, sort_keys=True, separators=(",", ":"))`, the format
    the trained lookups of archives hold; orjson writes it when it provably agrees.
    """
    return _json_text(list(states))


def state_text(state: State) -> str:
    """One state's part of its list's key: `state_key(states)` is
    `key_of([state_text(s) for s in states])`."""
    return _json_text(state)


def key_of(texts: Sequence[str]) -> str:
    """`state_key` of the states whose `state_text`s these are."""
    return "[" + ",".join(texts) + "]"


def _json_text(value: Any) -> str:
    try:
        fast = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # non-string keys, integers over 64 bits
        fast = b"\x80"
    if (
        fast.isascii()
        and b"null" not in fast
        and b"0.0000" not in fast
        and b"\x7f" not in fast
        and b"0e" not in fast.translate(_DIGITS_AND_E)
    ):
        return fast.decode()
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def state_identity(state: State) -> bytes | str:
    """Equal for equal states and only for them: orjson's bytes with sorted keys (a state
    holds strings, lists and objects, which orjson writes in one way), or `state_text` when
    orjson refuses the state. Cheaper than `state_text`, which must also equal json.dumps."""
    try:
        fast = orjson.dumps(state, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # non-string keys, integers over 64 bits
        return state_text(state)
    # A copy of the right size: orjson's bytes keep its 4 KB buffer, and identities are kept
    # (with their states, and in the ensemble's memory).
    return bytes(memoryview(fast))


def states_from_key(key: str) -> list[State]:
    return json.loads(key)  # type: ignore[no-any-return]


def label_of(event: ActionExecuted) -> str:
    return event.action_name or event.action_text or ""


def featurized_entities(domain: Domain, intent: str | None, entities: list[dict]) -> list[str]:
    """Entity labels (with `#role` / `#group` variants) the intent lets influence dialogue.

    For an intent of the domain, as in Rasa: the entities it uses, and their roles and groups
    the domain lists (an extractor's role the domain does not list counts as no role)."""
    names: set[str] = set()
    for entity in entities:
        name = entity.get("entity")
        if not name:
            continue
        names.add(name)
        for extra in ("role", "group"):
            if entity.get(extra):
                names.add(f"{name}{ENTITY_LABEL_SEPARATOR}{entity[extra]}")
    if not names:
        return []
    if intent is not None and intent in domain.intent_properties:
        wanted = set(domain.wanted_entities(intent))
        labels = domain.entity_labels
        names = {
            n
            for n in names
            if n.split(ENTITY_LABEL_SEPARATOR, 1)[0] in wanted
            and (ENTITY_LABEL_SEPARATOR not in n or labels is None or n in labels)
        }
    return sorted(names)


_AFTER_LISTEN = {"action_name": "action_listen"}


class _Fold:
    """The slice of tracker state that featurization needs, updated event by event."""

    def __init__(self, domain: Domain, omit_unset_slots: bool, live: bool = False) -> None:
        self.domain = domain
        self.omit_unset_slots = omit_unset_slots
        # A conversation's events, not training data: a loop the domain does not know reads
        # as none (training keeps the name, so a rule conditioned on a misspelt form never
        # applies instead of applying whenever no loop is active).
        self.live = live
        self.slot_values: dict[str, Any] = domain.slot_defaults()
        self.slots_set: set[str] = set()
        self.user: dict[str, Any] = {}
        self.user_text: str | None = None
        self.prev_action: dict[str, str] = {}
        self.loop: str | None = None
        # A followup action is pending (not part of the state; `_StoryStates` reads it).
        self.followup = False
        # The states `_StoryStates` gives may differ from these (`ConversationStates.stories`):
        # a turn was hidden or followed, or user input came after an action but action_listen.
        self.stories_differ = False

    def copy(self) -> _Fold:
        twin = _Fold.__new__(_Fold)
        twin.domain, twin.omit_unset_slots = self.domain, self.omit_unset_slots
        twin.live = self.live
        twin.slot_values, twin.slots_set = dict(self.slot_values), set(self.slots_set)
        twin.user, twin.prev_action, twin.loop = dict(self.user), self.prev_action, self.loop
        twin.user_text = self.user_text
        twin.followup, twin.stories_differ = self.followup, self.stories_differ
        return twin

    def apply(self, event: Event) -> bool:
        """Folds `event` in; False when it left the state as it was (the user_featurization
        logged after most messages, which keeps reading the message by its intent)."""
        if isinstance(event, ActionExecuted):  # the most frequent first
            if event.action_name is not None:
                self.prev_action = {"action_name": event.action_name}
            else:
                self.prev_action = {"action_text": event.action_text or ""}
            self.followup = False
        elif isinstance(event, UserUttered):
            self.user = self._user_sub_state(event.intent_name, event.text, event.entities)
            self.user_text = event.text
            self.followup = False
            self._input_arrived()
        elif isinstance(event, DefinePrevUserUtteredFeaturization):
            # The message was answered from its text (end to end): so it reads from now on.
            if not (event.use_text_for_featurization and self.user_text):
                return False
            self.user = {"text": self.user_text}
            self._input_arrived()
        elif isinstance(event, FollowupAction):
            self.followup = True
            return False
        elif isinstance(event, SlotSet):
            self.slot_values[event.key] = event.value
            self.slots_set.add(event.key)
        elif isinstance(event, AllSlotsReset):
            self.slot_values = self.domain.slot_defaults()
            self.slots_set = set()
        elif isinstance(event, ActiveLoop):
            name = event.name
            live = self.live and name != SHOULD_NOT_BE_SET
            self.loop = self.domain.known_loop(name) if live else name
        elif isinstance(event, EntitiesAdded) and self.user and self._just_listened():
            # As the tracker: entities count only right after the message they add to.
            intent = self.user.get("intent")
            names = set(self.user.get("entities", ()))
            names.update(featurized_entities(self.domain, intent, event.entities))
            if names:
                self.user["entities"] = sorted(names)
        return True

    def _just_listened(self) -> bool:
        return self.prev_action.get("action_name") == ACTION_LISTEN

    def _input_arrived(self) -> None:
        prev = self.prev_action  # one key: an action's name or text
        if prev and prev != _AFTER_LISTEN:
            self.stories_differ = True

    def _user_sub_state(
        self, intent: str | None, text: str | None, entities: list[dict]
    ) -> dict[str, Any]:
        sub: dict[str, Any] = {}
        if intent:
            sub["intent"] = intent
        elif text:
            sub["text"] = text
        else:
            return {}
        names = featurized_entities(self.domain, intent, entities)
        if names:
            sub["entities"] = names
        return sub

    def state(self) -> State:
        state: State = {}
        if self.user:
            state[USER] = dict(self.user)
        if self.prev_action:
            state[PREV_ACTION] = dict(self.prev_action)
        if self.loop:
            state[ACTIVE_LOOP] = {"name": self.loop}
        slots = self.slot_features()
        if slots:
            state[SLOTS] = slots
        return state

    def slot_features(self) -> dict[str, Any]:
        """The slots as a state reads them."""
        slots: dict[str, Any] = {}
        slot_values = self.slot_values
        # Only the domain's slots that influence the conversation (a value set for another
        # name is never shown): the others are not looked at on every state.
        for slot in self.domain.featurized_slots:
            name = slot.name
            if name not in slot_values or (self.omit_unset_slots and name not in self.slots_set):
                continue
            value = slot_values[name]
            if value == SHOULD_NOT_BE_SET:
                slots[name] = SHOULD_NOT_BE_SET
                continue
            feature = slot.feature(value)
            if feature is not None:
                slots[name] = feature
        return slots


def states_and_labels(
    events: Iterable[Event], domain: Domain, omit_unset_slots: bool = False, live: bool = False
) -> tuple[list[State], list[str]]:
    """All states of a conversation and the action taken after each of them (`live`: of a
    conversation, not of training data).

    `states[i]` is the state before the i-th action, `labels[i]` that action's name;
    the last state (after every event) has no label.
    """
    states, labels, _, _ = _walk(events, domain, omit_unset_slots, live)
    return states, labels


def _walk(
    events: Iterable[Event], domain: Domain, omit_unset_slots: bool, live: bool = False
) -> tuple[list[State], list[str], dict[int, int], bool]:
    """`states_and_labels`, the `_StoryStates` flags of the states before an action (by
    index, where not 0), and whether a followup action is pending after the last event."""
    fold = _Fold(domain, omit_unset_slots, live)
    states: list[State] = []
    labels: list[str] = []
    flags: dict[int, int] = {}
    for event in collapse_loop_happy_paths(list(events)):
        if isinstance(event, ActionExecuted):
            states.append(fold.state())
            labels.append(label_of(event))
            flag = turn_flags(event, fold.followup)
            if flag:
                flags[len(states) - 1] = flag
        fold.apply(event)
    states.append(fold.state())
    return states, labels, flags, fold.followup


def story_states(events: Iterable[Event], domain: Domain, rule_only: RuleOnly) -> list[State]:
    """The states policies that learn from stories read (`_StoryStates`), of a
    conversation's `events`."""
    states, _, flags, followup = _walk(events, domain, False, live=True)
    story = _StoryStates(rule_only)
    story.extend(states, flags, len(states) - 1)
    current = story.next_state(states[-1], _FOLLOWUP if followup else 0, commit=False)
    return story.states if current is None else [*story.states, current]


def cut_story_states(
    events: Sequence[Event],
    cuts: Sequence[int],
    walked: Sequence[bool],
    domain: Domain,
    rule_only: RuleOnly,
) -> list[list[State] | None]:
    """`story_states(events[cut:], domain, rule_only)` of each cut that `walked` marks (None
    for the others), for events that activate no loop (its collapse reads the whole list).

    One walk per cut, from the last cut back, each until it reaches an action where an
    earlier walk was in the same state (the fold's and the story states', `_walk_state`):
    from there it gives what that walk gave. A conversation of turns only rules know (they
    fold into no state) walked each cut to its end, its length squared at every turn; its
    walks now meet within a turn or two."""
    # (index of an action, the walk's state before it) -> (the states a walk gave, how
    # many of them it gave before that action)
    met: dict[tuple[int, str], tuple[list[State], int]] = {}
    states_of: list[list[State] | None] = [None] * len(cuts)
    fresh = _Fold(domain, False, live=True)  # copied for each walk (no defaults made again)
    for number in range(len(cuts) - 1, -1, -1):
        if walked[number]:
            states_of[number] = _walk_from(events, cuts[number], fresh.copy(), rule_only, met)
    return states_of


def _walk_from(
    events: Sequence[Event],
    cut: int,
    fold: _Fold,
    rule_only: RuleOnly,
    met: dict[tuple[int, str], tuple[list[State], int]],
) -> list[State]:
    """`story_states(events[cut:])` (no loop activated among them; `fold` a fresh one),
    from where a walk in `met` was in the same state; this walk's states are put there."""
    story = _StoryStates(rule_only)
    given = story.states
    passed: list[tuple[tuple[int, str], int]] = []
    result: list[State] | None = None
    for index in range(cut, len(events)):
        event = events[index]
        if isinstance(event, ActionExecuted):
            key = (index, _walk_state(fold, story))
            earlier = met.get(key)
            if earlier is not None:
                states, before = earlier
                result = [*given, *states[before:]]
                break
            passed.append((key, len(given)))
            state = story.next_state(fold.state(), turn_flags(event, fold.followup), True)
            if state is not None:
                given.append(state)
        fold.apply(event)
    if result is None:
        current = story.next_state(fold.state(), _FOLLOWUP if fold.followup else 0, False)
        result = given if current is None else [*given, current]
    for key, before in passed:
        met[key] = (result, before)
    return result


def _walk_state(fold: _Fold, story: _StoryStates) -> str:
    """All that the states a walk gives from here on depend on, besides the events: the
    fold's slots as states read them (a slot's value counts only by its feature until it is
    set again: a large value, an action's results, is not written out at every action),
    the slots set, message, previous action, loop and followup, and what the story states
    carry on (a hidden turn, the last kept action, the last state given). Equal texts are
    equal values (`repr`); unequal ones may be too (a dict's order): then two walks that
    could meet do not, which costs a walk, never a wrong state."""
    last = story.states[-1] if story.states else None
    return repr(
        (
            fold.slot_features(),
            sorted(fold.slots_set),
            fold.user,
            fold.user_text,
            fold.prev_action,
            fold.loop,
            fold.followup,
            story.hidden,
            story.last_action,
            last,
        )
    )


# `_StoryStates` flags of a state before an action: the action is a rule's turn no story
# has (`hide_rule_turn`); a followup action was pending.
_HIDDEN, _FOLLOWUP = 1, 2


def turn_flags(event: ActionExecuted, followup: bool) -> int:
    return (_HIDDEN if event.hide_rule_turn else 0) | (_FOLLOWUP if followup else 0)


class RuleOnly(NamedTuple):
    """Slots and loops only rules mention (RulePolicy learns them): left out of the states
    of the policies that learn from stories, which never saw them."""

    slots: frozenset[str] = frozenset()
    loops: frozenset[str] = frozenset()


NO_RULE_ONLY = RuleOnly()


def _without_rule_only(state: State, rule_only: RuleOnly) -> State:
    changed: State | None = None
    slots = state.get(SLOTS)
    if slots and not rule_only.slots.isdisjoint(slots):
        changed = dict(state)
        kept = {name: value for name, value in slots.items() if name not in rule_only.slots}
        if kept:
            changed[SLOTS] = kept
        else:
            del changed[SLOTS]
    if rule_only.loops and state.get(ACTIVE_LOOP, {}).get("name") in rule_only.loops:
        changed = dict(changed or state)
        del changed[ACTIVE_LOOP]
    return state if changed is None else changed


class _StoryStates:
    """The states memoization and the ML policy read, as Rasa's policies that learn from
    stories only (TED, memoization) read them.

    A turn only rules know (its action has `hide_rule_turn`, and the action_listen after it)
    is left out; the next state reads as if that turn never was: its previous action is
    the last one of a kept turn, and a state after an action other than action_listen
    carries the user input of the state kept before it. Slots and loops only rules mention
    are left out. Built from the full states and their flags, state by state; `marks` let
    a loop's collapsed happy path take states back. Up to the first state that can differ
    (`start_from`), they are the full states themselves.
    """

    def __init__(self, rule_only: RuleOnly) -> None:
        self.rule_only = rule_only
        self._strips = bool(rule_only.slots or rule_only.loops)
        self.states: list[State] = []
        self.texts: list[str | None] = []
        self.identities: list[bytes | str | None] = []
        self.done = 0  # full states read
        self.hidden = False  # the last turn read was left out
        self.last_action: dict[str, str] = {}  # the previous action of the last kept turn
        # After each full state read from `base` on: (len(states), hidden, last_action).
        self.marks: list[tuple[int, bool, dict[str, str]]] = []
        self.base = 0

    def start_from(
        self,
        body: list[State],
        texts: list[str | None],
        identities: list[bytes | str | None],
        size: int,
    ) -> None:
        """Takes the full states `body[:size]` as they are (nothing hidden or followed among
        them, no user input after an action but action_listen, nothing to leave out): a
        conversation's first hidden turn costs no walk over its history."""
        self.states, self.texts, self.identities = body[:size], texts[:size], identities[:size]
        self.done = self.base = size
        self.hidden = False
        self.last_action = (body[size - 1].get(PREV_ACTION) or {}) if size else {}
        self.marks = []

    def extend(self, body: Sequence[State], flags: dict[int, int], size: int) -> None:
        """Reads the full states `body[done:size]` (each before an action; `flags` by index,
        where not 0)."""
        for index in range(self.done, size):
            state = self.next_state(body[index], flags.get(index, 0), commit=True)
            if state is not None:
                self.states.append(state)
                self.texts.append(None)
                self.identities.append(None)
            self.marks.append((len(self.states), self.hidden, self.last_action))
        self.done = max(self.done, size)

    def truncate(self, body: list[State], size: int) -> None:
        """Forgets what the full states from `size` on gave (they were taken back; `body`
        still holds those before)."""
        if self.done <= size:
            return
        if size <= self.base:
            del self.states[size:], self.texts[size:], self.identities[size:]
            self.done = self.base = size
            self.hidden = False
            self.last_action = (body[size - 1].get(PREV_ACTION) or {}) if size else {}
            self.marks = []
            return
        count, self.hidden, self.last_action = self.marks[size - 1 - self.base]
        del self.marks[size - self.base :], self.states[count:], self.texts[count:]
        del self.identities[count:]
        self.done = size

    def next_state(self, state: State, flags: int, commit: bool) -> State | None:
        """The state `state` reads as, or None when its turn is left out; with `commit`,
        the next state follows it."""
        hidden, last_action = self.hidden, self.last_action
        prev = state.get(PREV_ACTION) or {}
        prev_name = prev.get("action_name")
        if not hidden:
            last_action = prev
        # A followup action, and a loop's next step, belong to the turn before them.
        loop = state.get(ACTIVE_LOOP)
        if not flags & _FOLLOWUP and prev_name != (loop.get("name") if loop else None):
            hidden = bool(flags & _HIDDEN)
        if commit:
            self.hidden, self.last_action = hidden, last_action
        if hidden:
            return None
        derived = state
        if self.states and prev_name != "action_listen":
            user = self.states[-1].get(USER)
            if user != state.get(USER):
                derived = dict(state)
                if user:
                    derived[USER] = user
                else:
                    del derived[USER]
        if last_action and last_action != prev:
            derived = dict(derived)
            derived[PREV_ACTION] = last_action
        return _without_rule_only(derived, self.rule_only) if self._strips else derived


def training_examples(
    events: Iterable[Event], domain: Domain, omit_unset_slots: bool = False
) -> list[tuple[StatesView, str]]:
    """(states up to a prediction point, the action taken there) for every action.

    Each prediction point's states are a view of the one list of the story's states, not a
    copy of its prefix: a story of n actions costs memory and time growing with n, not n²
    (8,000 actions held 250 MB of prefixes). A policy copies only the states it reads."""
    states, labels = states_and_labels(events, domain, omit_unset_slots)
    return [(StatesView(states, i, states[i]), label) for i, label in enumerate(labels)]


def strip_before_snippet(states: Sequence[State]) -> list[State]:
    """The states after the last `...` (rule snippet) state: what a rule really requires."""
    kept: list[State] = []
    for state in reversed(states):
        if state.get(PREV_ACTION, {}).get("action_name") == RULE_SNIPPET_ACTION:
            break
        kept.append(state)
    kept.reverse()
    return kept


def with_text_for_last_user(states: Sequence[State], text: str | None) -> Sequence[State] | None:
    """The states with the user input just received featurized by its text (end-to-end).

    As in Rasa, only a state right after `action_listen` changes, and entities are dropped.
    """
    if not text or not states:
        return None
    last = states[-1]
    if last.get(PREV_ACTION, {}).get("action_name") != "action_listen" or USER not in last:
        return None
    changed = dict(last)
    changed[USER] = {"text": text}
    if isinstance(states, StatesView):
        return states.with_last(changed)
    return [*states[:-1], changed]


class StatesView(Sequence):
    """Read-only: the first `size` states of `body`, then `last`; made without copying."""

    __slots__ = ("_body", "_size", "_last")

    def __init__(self, body: list, size: int, last: State) -> None:
        self._body, self._size, self._last = body, size, last

    def with_last(self, last: State) -> StatesView:
        return StatesView(self._body, self._size, last)

    def __len__(self) -> int:
        return self._size + 1

    def __getitem__(self, index: Any) -> Any:
        size = self._size
        if isinstance(index, slice):
            start, stop, step = index.indices(size + 1)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            out = self._body[start : min(stop, size)]
            if start <= size < stop:
                out.append(self._last)
            return out
        if index < 0:
            index += size + 1
        if index == size:
            return self._last
        if not 0 <= index < size:
            raise IndexError(index)
        return self._body[index]

    def __iter__(self) -> Iterator[State]:
        yield from itertools.islice(self._body, self._size)
        yield self._last

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (list, StatesView)) or len(other) != len(self):
            return False
        return all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]


class StatesWindow:
    """A conversation's states as policies read them: their JSON texts (`texts`) and
    identities, a state before an earlier action written once per conversation."""

    def __init__(
        self,
        tracker: Tracker,
        domain: Domain,
        events: list[Event],
        states: Sequence[State],
        body_texts: list[str | None] | None,
        body_identities: list[bytes | str | None] | None,
        rule_only: RuleOnly,
    ) -> None:
        self.tracker = tracker
        self.domain = domain
        self.rule_only = rule_only
        self.events, self.states = events, states
        self._body_texts, self._body_identities = body_texts, body_identities
        self._text_states: Sequence[State] | None | bool = False
        # Made when a policy first asks for texts (a remembered winner needs none).
        self._windows: dict[tuple[int | None, bool], tuple[str, ...]] | None = None
        self._current: dict[bool, str] | None = None

    def text_states(self) -> Sequence[State] | None:
        """The states with the last user message featurized by text, when that applies."""
        if self._text_states is False:
            self._text_states = with_text_for_last_user(
                self.states, self.tracker.latest_message.text
            )
        return self._text_states  # type: ignore[return-value]

    def texts(self, last: int | None, by_text: bool = False) -> tuple[str, ...]:
        """`state_text` of the last `last` states (all when None or 0) of `states`, or of
        `text_states()` when `by_text` (which must then not be None)."""
        windows, currents = self._windows, self._current
        if windows is None or currents is None:
            windows, currents = self._windows, self._current = {}, {}
        window = windows.get((last, by_text))
        if window is not None:
            return window
        states = self.text_states() if by_text else self.states
        assert states is not None
        count = len(states)
        start = max(0, count - last) if last else 0
        texts = _kept(states, start, count - 1, self._body_texts, state_text)
        if count:
            current = currents.get(by_text)
            if current is None:
                current = currents[by_text] = self._current_text(states[-1], by_text)
            texts.append(current)
        window = windows[(last, by_text)] = tuple(texts)
        return window

    def identities(self, last: int | None) -> tuple[bytes | str, ...]:
        """`state_identity` of the last `last` states (all when None or 0): what the
        ensemble remembers its winners by (a state's JSON text is written only when a
        policy asks for it)."""
        states = self.states
        count = len(states)
        start = max(0, count - last) if last else 0
        identities = _kept(states, start, count - 1, self._body_identities, state_identity)
        if count:
            identities.append(self._current_identity(states[-1]))
        return tuple(identities)

    def _current_text(self, state: State, by_text: bool) -> str:
        return state_text(state)

    def _current_identity(self, state: State) -> bytes | str:
        return state_identity(state)


class ConversationStates(StatesWindow):
    """A tracker's states, computed once per prediction and shared by every policy.

    RulePolicy reads them; the policies that learn from stories read `stories()`.
    """

    def __init__(
        self, tracker: Tracker, domain: Domain, rule_only: RuleOnly = NO_RULE_ONLY
    ) -> None:
        cache = getattr(tracker, _IncrementalStates.ATTRIBUTE, None)
        if type(cache) is not _IncrementalStates or cache.domain is not domain:
            cache = _IncrementalStates.of(tracker, domain)
        self._cache = cache
        events, states, body_texts = cache.update(tracker)
        body_identities = cache.body_identities if body_texts is not None else None
        super().__init__(tracker, domain, events, states, body_texts, body_identities, rule_only)
        self._stories: StatesWindow | None = None

    def stories(self) -> StatesWindow:
        """The states as memoization and the ML policy read them (`_StoryStates`): these
        same states (self) while they are provably equal, as in most conversations."""
        if self._stories is None:
            if self._body_texts is not None and self._cache.stories_equal(self.rule_only):
                self._stories = self
            else:
                self._stories = StoryStates(self)
        return self._stories

    def _current_text(self, state: State, by_text: bool) -> str:
        text = state_text(state)
        if not by_text:
            self._cache.current_text_is(state, text)
        return text

    def _current_identity(self, state: State) -> bytes | str:
        return self._cache.identity_of(state)

    def identities(self, last: int | None) -> tuple[bytes | str, ...]:
        states = self.states
        kept = self._body_identities
        if kept is not None and last and type(states) is StatesView:
            # The usual case, without the view's Python-level len and indexing.
            size = states._size
            start = size + 1 - last if size >= last else 0
            window = kept[start:size]
            if None in window:
                window = _kept(states._body, start, size, kept, state_identity)  # type: ignore[assignment]
            cache, state = self._cache, states._last
            identity = cache.current_identity if state is cache.current else None
            window.append(identity if identity is not None else cache.identity_of(state))
            return tuple(window)  # type: ignore[arg-type]  # no None left: filled above
        return super().identities(last)


class StoryStates(StatesWindow):
    """A conversation's states as the policies that learn from stories read them: rule-only
    turns and features left out (`_StoryStates`)."""

    def __init__(self, conversation: ConversationStates) -> None:
        cache = conversation._cache
        self._cache: _IncrementalStates | None = None
        texts: list[str | None] | None = None
        identities: list[bytes | str | None] | None = None
        if conversation._body_texts is not None:  # kept incrementally
            self._cache = cache
            story, current = cache.story_states(conversation.rule_only)
            texts, identities = story.texts, story.identities
            body = story.states
            if current is not None:
                states: Sequence[State] = StatesView(body, len(body), current)
            elif body:
                states = StatesView(body, len(body) - 1, body[-1])
            else:
                states = []
        else:
            states = story_states(conversation.events, conversation.domain, conversation.rule_only)
        super().__init__(
            conversation.tracker,
            conversation.domain,
            conversation.events,
            states,
            texts,
            identities,
            conversation.rule_only,
        )

    def _current_identity(self, state: State) -> bytes | str:
        cache = self._cache
        if cache is None or state is not cache.story_current:
            return state_identity(state)
        if cache.story_current_identity is None:
            cache.story_current_identity = state_identity(state)
        return cache.story_current_identity


def _kept(
    states: Sequence[State],
    start: int,
    stop: int,
    kept: list[T | None] | None,
    write: Callable[[State], T],
) -> list[T]:
    """`write(state)` for `states[start:stop]`, each written once into `kept` (the values
    of the states before the current one; None: not kept, written every time)."""
    if kept is None:
        return [write(states[index]) for index in range(start, stop)]
    values = []
    for index in range(start, stop):
        value = kept[index]
        if value is None:
            value = kept[index] = write(states[index])
        values.append(value)
    return values


# Events after which the applied events are no longer the old ones plus the new ones.
_HISTORY_REWRITES = (Restarted, SessionStarted, ActionReverted, UserUtteranceReverted)
_RECOMPUTE = _HISTORY_REWRITES
# Of those, the ones after which the applied events start afresh (`Tracker.applied_events`).
_STARTS_OVER = (Restarted, SessionStarted)


def _event_classes(cls: type[Event] = Event) -> list[type[Event]]:
    """`cls` and every event class derived from it."""
    return [cls, *(sub for child in cls.__subclasses__() for sub in _event_classes(child))]


# The event classes that are no history rewrite (`_RECOMPUTE`), as defined with the events.
_REWRITES_NOTHING = frozenset(c for c in _event_classes() if not issubclass(c, _RECOMPUTE))
# Events the fold does not read: the state before and after them is the same.
_UNFOLDED = (BotUttered, LoopInterrupted)


def _start_over_at(new: Sequence[Event]) -> int | None:
    """The index of the last restart or session start among `new` when no other history
    rewrite comes after it (see `_IncrementalStates._start_over`), else None."""
    for index in range(len(new) - 1, -1, -1):
        event = new[index]
        if isinstance(event, _STARTS_OVER):
            return index
        if isinstance(event, _RECOMPUTE):
            return None
    return None


def states_behind(tracker: Tracker, domain: Domain) -> int:
    """How many of the tracker's events its state cache has yet to fold: all of them when
    the new ones rewrite history (a rewind, a loop activated the first time), which folds
    the whole session again (100,000 events: 0.4 s)."""
    events = tracker.events
    cache = getattr(tracker, _IncrementalStates.ATTRIBUTE, None)
    if not isinstance(cache, _IncrementalStates) or cache.domain is not domain:
        return len(events)
    seen = cache.seen
    if cache.batch:  # folded again at every prediction (see the class docstring)
        return len(events) - seen
    if len(events) < seen or (seen and events[seen - 1] is not cache.last_event):
        return len(events)
    new = events[seen:]
    if not _REWRITES_NOTHING.issuperset(map(type, new)) and _start_over_at(new) is None:
        return len(events)
    if seen and ActiveLoop in map(type, new) and not activated_loops(new) <= cache.known_loops:
        return len(events)
    return len(new)


def cached_lists(tracker: Tracker) -> list[list[Any]]:
    """The long lists the tracker's state cache holds (its applied events and states), for
    a caller to free once the tracker is garbage (`server/trackers/freeing.py`)."""
    cache = getattr(tracker, _IncrementalStates.ATTRIBUTE, None)
    if not isinstance(cache, _IncrementalStates):
        return []
    lists: list[list[Any]] = [cache.events, cache.body, cache.body_texts, cache.body_identities]
    if cache.collapsed is not cache.events:
        lists.append(cache.collapsed)
    if cache.story is not None:
        story = cache.story
        lists.extend((story.states, story.texts, story.identities, story.marks))
    return lists


def fold_states(tracker: Tracker, domain: Domain, rule_only: RuleOnly | None = None) -> None:
    """Folds the tracker's events into its state cache now, and with `rule_only` (the
    model's) its story states (`DetachedStates`, here)."""
    states = DetachedStates(tracker, domain)
    states.fold(rule_only)
    states.attach_to(tracker)


class DetachedStates:
    """A tracker's state cache taken off it (made afresh if it has none) to fold its events
    in a thread: the first prediction on a long conversation does it there, not on the
    event loop. The thread writes an object nobody else reaches and reads a copy of the
    events, so a fold whose caller was cancelled (a turn cut off) and that runs on once the
    conversation's lock is free races no later turn on the same tracker: the cache goes
    back onto the tracker (`attach_to`, on the loop) only after the fold ended, and only if
    the tracker's events still start with those it folded. Such a cut-off fold may go on
    for the next turn's tracker (`continue_on`) rather than be folded again."""

    def __init__(self, tracker: Tracker, domain: Domain, upto: int | None = None) -> None:
        cache = getattr(tracker, _IncrementalStates.ATTRIBUTE, None)
        if cache is not None:
            # Another model's (a model replaced) too: left on the tracker, it kept this one
            # from being put back, and the prediction folded every event again, on the loop.
            delattr(tracker, _IncrementalStates.ATTRIBUTE)
        # One of another domain is dropped by the fold, in its thread, not on the loop.
        self._replaced: object = None
        if not isinstance(cache, _IncrementalStates) or cache.domain is not domain:
            self._replaced, cache = cache, _IncrementalStates(domain)
        self.cache = cache
        self.domain = domain
        # The tracker's events, of which the fold reads the first `upto` (None: all).
        self._events: list[Event] = tracker.events
        self._upto = upto
        # The events the fold read (its copy); once it ended, (how many, the last).
        self.folded_events: list[Event] = []
        self._folded: tuple[int, Event | None] | None = None
        # Folded before for another tracker (`continue_on`): its events the fold checks.
        self._earlier: list[Event] | None = None

    def continue_on(self, tracker: Tracker, domain: Domain, upto: int | None = None) -> bool:
        """On the loop, after `fold` ended (for a turn cut off): folds on for `tracker`, a
        later turn's of the same conversation, from the events folded so far when the
        tracker's start with them (the same objects, or equal ones of the same timestamps:
        the tracker read again from the store), checked by `fold` in its thread; from
        scratch when they differ (another process changed the conversation, a new session,
        a rewind). False, and nothing changed, when it cannot go on: the fold has not ended
        or failed, or it was for another domain (a model swap)."""
        if self._folded is None or domain is not self.domain:
            return False
        cache = getattr(tracker, _IncrementalStates.ATTRIBUTE, None)
        if cache is not None:
            delattr(tracker, _IncrementalStates.ATTRIBUTE)
            self._replaced = cache
        self._earlier, self.folded_events = self.folded_events, []
        self._events, self._upto, self._folded = tracker.events, upto, None
        return True

    def fold(self, rule_only: RuleOnly | None = None) -> None:
        """Folds the events into the cache, and with `rule_only` (the model's) its story
        states. In any thread."""
        # A copy (one C call: the GIL is held throughout), the tracker's own list let go of.
        upto = self._upto
        events = self._events[:] if upto is None else self._events[:upto]
        self._events = []
        self._replaced = None
        earlier, self._earlier = self._earlier, None
        if earlier is not None and not self._goes_on(events, earlier):
            self.cache = _IncrementalStates(self.domain)  # the other dropped here
        del earlier
        cache, copy = self.cache, _EventsOnly(events)
        if not cache.advance(copy) and not cache.batch:
            cache.update(copy)  # a rewind or a newly activated loop: from scratch, here
        if not cache.batch and rule_only is not None and not cache.stories_equal(rule_only):
            cache.story_states(rule_only)
        self.folded_events = events
        self._folded = (len(events), events[-1] if events else None)

    def _goes_on(self, events: list[Event], earlier: list[Event]) -> bool:
        """Whether the cache, which folded `earlier` (another tracker's events), holds the
        states of `events`' first `seen`: they are the same events. Its last one is then
        this tracker's (`advance` goes on from it)."""
        cache = self.cache
        seen = cache.seen
        if not seen:
            return False
        if seen > len(events) or seen > len(earlier) or cache.last_event is not earlier[seen - 1]:
            return False
        if not all(map(_same_event, events[:seen], earlier[:seen])):
            return False
        cache.last_event = events[seen - 1]
        return True

    def attach_to(self, tracker: Tracker) -> bool:
        """On the loop, after `fold` ended: puts the cache onto `tracker` if its events start
        with those folded and no other cache was put there meanwhile; whether it did. The
        events after them (the turn's own, with `upto`) fold at the next prediction."""
        folded, events = self._folded, tracker.events
        if (
            folded is None
            or hasattr(tracker, _IncrementalStates.ATTRIBUTE)
            or len(events) < folded[0]
            or (folded[0] and events[folded[0] - 1] is not folded[1])
        ):
            return False
        setattr(tracker, _IncrementalStates.ATTRIBUTE, self.cache)
        return True


def _same_event(event: Event, other: Event) -> bool:
    """Whether two events are one, or equal with the same timestamp (one read again) and
    what the fold reads of them of the same types too: as Python values 1 == 1.0 == True,
    which a categorical slot tells apart ("1", "1.0", "true")."""
    if event is other:
        return True
    if type(event) is not type(other) or event.timestamp != other.timestamp:
        return False
    if event != other:
        return False
    read = _FOLDED_VALUES.get(type(event))
    return read is None or _same_types(read(event), read(other))


# What `_Fold.apply` reads of an event that JSON may give of another type, yet equal.
_FOLDED_VALUES: dict[type[Event], Callable[[Any], Any]] = {
    SlotSet: lambda event: event.value,
    UserUttered: lambda event: (event.intent_name, event.entities),
    EntitiesAdded: lambda event: event.entities,
}


def _same_types(value: Any, other: Any) -> bool:
    """Of two equal values, whether they are of the same types (and float signs: "-0.0"
    reads apart from "0.0") throughout."""
    kind = type(value)
    if kind is not type(other):
        return False
    if kind is dict:
        return all(_same_types(item, other[key]) for key, item in value.items())
    if kind is list or kind is tuple:
        return all(map(_same_types, value, other))
    return kind is not float or math.copysign(1.0, value) == math.copysign(1.0, other)


def folds_on(events: Sequence[Event]) -> bool:
    """Whether a state cache that folded the events before `events` folds them on (no
    history rewrite, no loop activated among them), as a prediction does on the loop."""
    types = set(map(type, events))
    return _REWRITES_NOTHING.issuperset(types) and ActiveLoop not in types


class _EventsOnly:
    """What the state cache reads of a tracker: its events (`DetachedStates` folds a copy)."""

    __slots__ = ("events",)

    def __init__(self, events: list[Event]) -> None:
        self.events = events

    def applied_events(self) -> list[Event]:
        return applied_events(self.events)


class _FoldsEvents(Protocol):
    """A tracker, as the state cache reads it."""

    events: list[Event]

    def applied_events(self) -> list[Event]: ...


class _IncrementalStates:
    """A tracker's applied events and states, kept on the tracker and extended with only
    its new events, so a prediction costs the same at message 10 and 10,000.

    Anything that rewrites history (a restart, a rewind, a new session, another domain, a
    replaced event list) recomputes from scratch. A loop's happy path collapses as it runs
    (`collapse_loop_happy_paths`, event by event): back to the fold kept at its previous run.
    A session with two loops, or a loop run as an action before it was activated (or run
    twice while not the loop, when known from other events), is recomputed at every
    prediction; the first activation of a loop in the tracker's events recomputes once.
    """

    ATTRIBUTE = "_featurization_cache"

    # It holds no reference to its tracker: a cycle tracker <-> cache would keep every
    # evicted hot tracker alive until a full garbage collection.
    def __init__(self, domain: Domain) -> None:
        self.domain = domain
        self.seen = 0
        self.last_event: Event | None = None
        self.events: list[Event] = []
        self.body: list[State] = []  # the state before each action
        self.body_texts: list[str | None] = []  # their `state_text`, written when first asked
        self.body_identities: list[bytes | str | None] = []  # their `state_identity`, likewise
        self.body_flags: dict[int, int] = {}  # their `turn_flags`, where not 0
        # The states of the policies that learn from stories, read from `body` when first
        # asked; and the current one's, while `current` is the same (`story_current`).
        self.story: _StoryStates | None = None
        # How many states before an action are surely their own story states (None: all).
        self.differ_from: int | None = None
        self.story_current_of: State | None = None
        self.story_current: State | None = None
        self.story_current_identity: bytes | str | None = None
        self.fold = _Fold(domain, False, live=True)
        # The current state of the last update and its text (None: not asked), while no
        # event has changed it: the state before the next action, if that comes next.
        self.current: State | None = None
        self.current_text: str | None = None
        self.current_identity: bytes | str | None = None
        # The loops any of the tracker's events activates, rewound or before a restart too
        # (Rasa's applied events collapse their runs), and those of them whose action ran in
        # the applied events while not the loop (`_other_loop_ran`).
        self.known_loops: set[str] = set()
        self.loops_run: set[str] = set()
        self._no_loop()
        self.batch = False  # only `_recompute` gives the states (see the class docstring)

    def _no_loop(self) -> None:
        # The applied events with the loop's happy paths collapsed (the same list as
        # `events` until a loop is activated), the loop, and at its last run: the length of
        # `collapsed` and `body` and a copy of the fold, just after its action.
        self.collapsed: list[Event] = self.events
        self.loop: str | None = None
        self.loop_run: tuple[int, int, _Fold] | None = None

    @classmethod
    def of(cls, tracker: Tracker, domain: Domain) -> _IncrementalStates:
        cache = getattr(tracker, cls.ATTRIBUTE, None)
        if not isinstance(cache, cls) or cache.domain is not domain:
            cache = cls(domain)
            setattr(tracker, cls.ATTRIBUTE, cache)
        return cache

    def update(
        self, tracker: _FoldsEvents
    ) -> tuple[list[Event], Sequence[State], list[str | None] | None]:
        """The applied events (a loop's happy path collapsed, as `Tracker.applied_events`),
        the states, and the texts of the states before the current one (None when they are
        not kept: recomputed every time)."""
        if not self.advance(tracker):
            return self._recompute(tracker)
        # Views, not copies: copying a 25,000-event session costs ~0.16 ms per prediction.
        current = self.current
        assert current is not None
        return self.collapsed, StatesView(self.body, len(self.body), current), self.body_texts

    def advance(self, tracker: _FoldsEvents) -> bool:
        """Folds the tracker's new events; False when they rewrite history or a loop is
        active (then only `_recompute` gives the states)."""
        events = tracker.events
        seen = self.seen
        if self.batch or len(events) < seen or (seen and events[seen - 1] is not self.last_event):
            return False
        new = events[seen:]
        if ActiveLoop in map(type, new):
            names = activated_loops(new)
            if seen and not names <= self.known_loops:
                # A loop activated the first time in this tracker's events: Rasa's applied
                # events collapse its earlier runs too, which may change what a rewind before
                # took back. Once per loop and tracker.
                return False
            self.known_loops.update(names)
        # One C-level test for the usual new events, of classes that rewrite nothing; the
        # loop (isinstance, subclasses included) only when another class is among them.
        for event in () if _REWRITES_NOTHING.issuperset(map(type, new)) else new:
            if isinstance(event, _RECOMPUTE):
                rest = self._start_over(new)
                if rest is None:
                    return False
                new = rest
                break
        if not self._fold_events(new):
            return False
        self.seen = len(events)
        self.last_event = events[-1] if events else None
        if self.current is None:
            self.current = self.fold.state()
            self.current_text = self.current_identity = None
        return True

    def _fold_events(self, new: Sequence[Event]) -> bool:
        """Appends `new` (no history rewrites among them) to the events and their states;
        False when only `_recompute` can give the states (then always: `batch`)."""
        current = self.current
        body, texts, identities = self.body, self.body_texts, self.body_identities
        # The usual turn has no loop, active or activated here: no step and no collapsed list
        # for it (a loop step on an event before the activation changes nothing).
        looping = self.loop is not None or ActiveLoop in map(type, new)
        for event in new:
            if looping:
                changed = self._loop_step(event)
                if changed is None:
                    self.batch = True
                    return False
                body, texts, identities = self.body, self.body_texts, self.body_identities
                if changed:
                    # A later happy-path run of the loop: the fold went back to just after
                    # the previous run, and this run is not kept (`collapse_loop_happy_paths`).
                    current = None
                    self.events.append(event)
                    continue
            if isinstance(event, ActionExecuted):
                if self.known_loops and self._other_loop_ran(event.action_name):
                    self.batch = True
                    return False
                if event.hide_rule_turn or self.fold.followup:
                    self.body_flags[len(body)] = turn_flags(event, self.fold.followup)
                    self.fold.stories_differ = True
                    if self.differ_from is None:
                        self.differ_from = len(body)
                if current is not None:
                    body.append(current)
                    texts.append(self.current_text)
                    identities.append(self.current_identity)
                else:
                    body.append(self.fold.state())
                    texts.append(None)
                    identities.append(None)
                folded = True
            else:
                folded = not isinstance(event, _UNFOLDED)
            # The fold does not read the `_UNFOLDED` events; the current state holds while
            # the others leave it as it was.
            if folded and self.fold.apply(event):
                current = None
                if self.differ_from is None and self.fold.stories_differ:
                    self.differ_from = len(body)
            if looping:
                self.events.append(event)
                if self.loop is not None:
                    self._collapsed_append(event)
        if not looping:
            self.events.extend(new)
        if current is None:
            self.current = None
        return True

    def _other_loop_ran(self, name: str | None) -> bool:
        """Whether the action `name` is a known loop's (not the loop) run a second time in
        the applied events: Rasa's applied events may collapse it (a loop activated only in
        rewound events, or in another session), a case `_recompute` handles."""
        if name not in self.known_loops or name == self.loop:
            return False
        if name in self.loops_run:
            return True
        self.loops_run.add(name)
        return False

    def _collapsed_append(self, event: Event) -> None:
        self.collapsed.append(event)
        if isinstance(event, ActionExecuted) and event.action_name == self.loop:
            self.loop_run = (len(self.collapsed), len(self.body), self.fold.copy())

    def _loop_step(self, event: Event) -> bool | None:
        """Before `event` is folded: the loop it activates, or the happy path its loop's run
        collapses (True: the fold went back). None: a case `_recompute` handles."""
        if isinstance(event, ActiveLoop):
            name = event.name
            if name and name != self.loop:
                runs = [
                    index
                    for index, earlier in enumerate(self.collapsed)
                    if isinstance(earlier, ActionExecuted) and earlier.action_name == name
                ]
                if self.loop is not None or len(runs) > 1:
                    return None
                if runs and runs[0] != len(self.collapsed) - 1:
                    return None  # other events since its run: no copy of the fold there
                self.loop, self.collapsed = name, list(self.events)
                if runs:
                    self.loop_run = (len(self.collapsed), len(self.body), self.fold.copy())
            return False
        loop = self.loop
        if (
            loop is not None
            and isinstance(event, ActionExecuted)
            and event.action_name == loop
            and self.loop_run is not None
            and not _first_run_or_unhappy_path(loop, self.collapsed, self.loop_run[0])
        ):
            # `_undo_till_previous_loop_run` on the collapsed events, and the fold and
            # states back to just after that run (or its last collapse: the events kept
            # then are folded in it), then the events it keeps folded again. The run itself
            # is not kept (`collapse_loop_happy_paths`).
            position, body_size, fold = self.loop_run
            kept = [e for e in self.collapsed[position:] if not isinstance(e, _UNDONE)]
            del self.collapsed[position:]
            self.collapsed.extend(kept)
            del self.body[body_size:], self.body_texts[body_size:]
            del self.body_identities[body_size:]
            for index in [i for i in self.body_flags if i >= body_size]:
                del self.body_flags[index]
            if self.story is not None:
                self.story.truncate(self.body, body_size)
            self.fold = fold.copy()
            for kept_event in kept:
                if not isinstance(kept_event, _UNFOLDED):
                    self.fold.apply(kept_event)
            # The next run goes back to here: the events kept now are not walked again.
            self.loop_run = (len(self.collapsed), body_size, self.fold.copy())
            if self.differ_from is not None or self.fold.stories_differ:
                self.differ_from = min(body_size, self.differ_from or body_size)
            return True
        return False

    def _start_over(self, new: list[Event]) -> list[Event] | None:
        """When the last event of `new` that rewrites history is a restart or a session
        start (every new conversation's first turn) and nothing after it does: the applied
        events begin after it, so the fold starts afresh there (what `_recompute` would
        compute, without the whole history); returns the events to fold. Else None."""
        index = _start_over_at(new)
        if index is None:
            return None
        self._new_lists()
        self.fold = _Fold(self.domain, False, live=True)
        self.current = self.current_text = self.current_identity = None
        self._no_loop()
        return new[index + 1 :]

    def _new_lists(self) -> None:
        # New lists: views and events handed out before stay as they were.
        self.events, self.body, self.body_texts, self.body_identities = [], [], [], []
        self.body_flags = {}
        self.loops_run = set()
        self.story = None
        self.differ_from = None

    def stories_equal(self, rule_only: RuleOnly) -> bool:
        """After `advance` returned True: whether `_StoryStates` would give the states
        themselves (no turn hidden or followed, no user input after an action other than
        action_listen, nothing only rules mention to leave out)."""
        return not (self.fold.stories_differ or rule_only.slots or rule_only.loops)

    def story_states(self, rule_only: RuleOnly) -> tuple[_StoryStates, State | None]:
        """After `advance` returned True: the story states of the states before the current
        one, and the current one's (None: its turn is left out)."""
        story = self.story
        if story is None or story.rule_only != rule_only:
            story = self.story = _StoryStates(rule_only)
            self.story_current_of = None
            if not (rule_only.slots or rule_only.loops):
                size = len(self.body) if self.differ_from is None else self.differ_from
                story.start_from(self.body, self.body_texts, self.body_identities, size)
        if story.done < len(self.body):
            story.extend(self.body, self.body_flags, len(self.body))
            self.story_current_of = None
        current = self.current
        if self.story_current_of is not current:
            assert current is not None
            flags = _FOLLOWUP if self.fold.followup else 0
            self.story_current = story.next_state(current, flags, commit=False)
            self.story_current_identity = None
            self.story_current_of = current
        return story, self.story_current

    def window_identities(self, last: int) -> tuple[bytes | str, ...]:
        """`ConversationStates.identities(last)` (`last` > 0) after `advance` returned
        True: from the kept identities, without making the view."""
        body, kept = self.body, self.body_identities
        size = len(body)
        start = size + 1 - last if size >= last else 0
        window = kept[start:size]
        if None in window:
            window = _kept(body, start, size, kept, state_identity)  # type: ignore[assignment]
        identity = self.current_identity
        if identity is None:
            identity = self.current_identity = state_identity(self.current)  # type: ignore[arg-type]
        window.append(identity)
        return tuple(window)  # type: ignore[arg-type]  # no None left: filled above

    def story_window_identities(self, last: int, rule_only: RuleOnly) -> tuple[bytes | str, ...]:
        """`StoryStates.identities(last)` (`last` > 0) after `advance` returned True."""
        story, current = self.story_states(rule_only)
        body, kept = story.states, story.identities
        stop = len(body)
        start = max(0, stop + (current is not None) - last)
        window = kept[start:stop]
        if None in window:
            window = _kept(body, start, stop, kept, state_identity)  # type: ignore[assignment]
        if current is not None:
            if self.story_current_identity is None:
                self.story_current_identity = state_identity(current)
            window.append(self.story_current_identity)
        return tuple(window)  # type: ignore[arg-type]  # no None left: filled above

    def identity_of(self, state: State) -> bytes | str:
        """`state_identity(state)`, kept while `state` is the current state."""
        if state is not self.current:
            return state_identity(state)
        if self.current_identity is None:
            self.current_identity = state_identity(state)
        return self.current_identity

    def current_text_is(self, state: State, text: str) -> None:
        """Keeps `state_text(state)` when `state` is the current state."""
        if state is self.current:
            self.current_text = text

    def _recompute(
        self, tracker: _FoldsEvents
    ) -> tuple[list[Event], Sequence[State], list[str | None] | None]:
        applied = tracker.applied_events()
        if not self.batch:
            self.known_loops = activated_loops(tracker.events)
            self._new_lists()
            self.fold = _Fold(self.domain, False, live=True)
            self.current = self.current_text = self.current_identity = None
            self._no_loop()
            if self._fold_events(applied):
                self.current = self.fold.state()
                self._remember(tracker)
                return self.collapsed, [*self.body, self.current], self.body_texts
        # Two loops in the session, or a loop run before it was activated: from scratch.
        states, _ = states_and_labels(applied, self.domain, live=True)
        self.seen, self.last_event, self.current = 0, None, None
        return applied, states, None

    def _remember(self, tracker: _FoldsEvents) -> None:
        self.seen = len(tracker.events)
        self.last_event = tracker.events[-1] if tracker.events else None


# A tracker's last point whose window identities are known and from which later ones may be
# derived (`_DerivedFrom`), kept on the tracker under this name.
_DERIVED_ATTRIBUTE = "_derived_identities"
# At most this many events since the state cache last folded may be passed over by derived
# identities: past it the next prediction folds them (a bounded catch-up, see
# `window_step`).
DERIVED_LAG = 100
# A step's value types a SlotSet may carry (by exact type: 1, 1.0 and True are equal keys).
_PLAIN_VALUES = frozenset({str, int, bool, type(None)})

Identities = tuple[bytes | str, ...]
Windows = tuple[Identities, Identities]
# All a state cache holds that its next windows depend on (see `_derivation_state`).
Derivation = tuple[Any, ...]
# A step's entry: [the derivation state after, the windows after, what the caller attached
# to the step (the ensemble: its winner), None until it does]. A list: the caller attaches
# in place.
StepEntry = list[Any]
# How a conversation's states move between two predictions: (the derivation state before,
# what the events between them do, what else the caller's answer reads) -> its entry.
StepKey = tuple[Derivation, tuple[Any, ...], Any]
Steps = Memo[StepKey, StepEntry]
_FRESH: Derivation = ((), None)  # after a restart or session start: no state yet


# (steps, size, last, state, folded): after the tracker's first `size` events (`last` the
# last of them), its state cache was at `state` (None: it followed a loop or a followup
# action, or folded from scratch: only a restart or session start among later events lets a
# step begin), while `steps` was the ensemble's memory of steps; the cache had folded the
# first `folded` events. A plain tuple, made at every prediction: a NamedTuple's Python
# `__new__` cost some 2,500 instructions more each (a turn makes two).
_DerivedFrom = tuple[Steps, int, Event | None, Derivation | None, int]


def _step(tracker: Tracker, domain: Domain, steps: Steps, extra: Any) -> tuple[StepKey, int] | None:
    """The key of the step (with the caller's `extra`) from the tracker's last known
    derivation state (or, after a restart or session start among the new events, from no
    state at all) to its current one, and the events its state cache has folded; None when
    the new events hold one the step cannot describe (a loop, a followup action, a rewind, a
    rejection, a text read as a message's features, a slot's value of another type) or the
    cache is too far behind.

    A step's items say all that the fold reads of each event: the derivation state after
    them is a function of the one before and the items, so a step seen once in any
    conversation gives the windows in every other."""
    events = tracker.events
    size = len(events)
    known: _DerivedFrom | None = getattr(tracker, _DERIVED_ATTRIBUTE, None)
    state: Derivation | None = None
    start = folded = 0
    if known is not None:
        known_steps, known_size, known_last, known_state, known_folded = known
        if known_steps is steps and known_size <= size:
            if not known_size or events[known_size - 1] is known_last:
                state, start, folded = known_state, known_size, known_folded
    if size - folded > DERIVED_LAG:
        return None
    if state is None:  # a step begins only after a restart or session start
        start = _after_last_start(events, start, size)
        if start < 0:
            return None
        state = _FRESH
    items: list[tuple[Any, ...]] = []
    index = start
    while index < size:
        event = events[index]
        index += 1
        cls = type(event)
        if cls is ActionExecuted:  # the most frequent first
            items.append((event.action_name, event.action_text, event.hide_rule_turn))  # type: ignore[attr-defined]
        elif cls is BotUttered:
            continue
        elif cls is UserUttered:
            parse_data = event.parse_data  # type: ignore[attr-defined]
            intent = (parse_data.get("intent") or {}).get("name")  # as `intent_name`
            text = None if intent else event.text  # type: ignore[attr-defined]
            entities = parse_data.get("entities")  # as `entities`, read as the fold does
            names: tuple[str, ...] = ()
            if entities and (intent or text):
                names = tuple(featurized_entities(domain, intent, entities))
            items.append(("user", intent, text, names))
        elif cls is DefinePrevUserUtteredFeaturization and not event.use_text_for_featurization:  # type: ignore[attr-defined]
            continue  # the message still reads by its intent: nothing changes
        elif cls is SlotSet and type(event.key) is str and type(event.value) in _PLAIN_VALUES:  # type: ignore[attr-defined]
            items.append(("slot", event.key, type(event.value), event.value))  # type: ignore[attr-defined]
        elif cls is AllSlotsReset:
            items.append(("reset",))
        else:  # a restart or session start, or an event no step describes
            index = _after_last_start(events, index - 1, size)
            if index < 0:
                return None
            state, items = _FRESH, []
    return (state, tuple(items), extra), folded


def _runs_a_known_loop(tracker: Tracker, items: tuple[Any, ...]) -> bool:
    """Whether a step's actions run a loop the tracker's events activate (an earlier
    session's, a rewound one): its runs may collapse (`Tracker.applied_events`), which the
    step, learned where no loop was known, does not say."""
    cache = getattr(tracker, _IncrementalStates.ATTRIBUTE, None)
    if not isinstance(cache, _IncrementalStates) or not cache.known_loops:
        return False
    known = cache.known_loops
    for item in items:  # (a loop, not `any()` of a generator: no cell made at every call)
        if item[0] in known:
            return True
    return False


def _after_last_start(events: list[Event], start: int, size: int) -> int:
    """The index after the last restart or session start in `events[start:size]` (the
    states begin afresh there), or -1."""
    for index in range(size - 1, start - 1, -1):
        cls = type(events[index])
        if cls is SessionStarted or cls is Restarted:
            return index + 1
    return -1


def window_step(
    tracker: Tracker,
    domain: Domain,
    last: int,
    rule_only: RuleOnly = NO_RULE_ONLY,
    steps: Steps | None = None,
    extra: Any = None,
) -> StepEntry | None:
    """The identities of the last `last` states of `ConversationStates(tracker, domain,
    rule_only)` and of its `stories()` (the entry's second item), without making them, when
    the tracker's states are kept incrementally (the usual case) and `last` > 0; else None.

    With `steps` (the ensemble's, for one domain, window and `rule_only`), a step between
    two predictions that any conversation took before gives them without folding the new
    events (they fold at the next prediction that needs the states, at most `DERIVED_LAG`
    events later); each prediction that folds teaches `steps` the step it took.

    The entry is that of the step that led to the windows: the caller may attach to it, in
    place, an answer that depends on the windows and on `extra` alone (hashable; part of the
    step's key), and finds it there the next time any conversation takes that step, by that
    one key. Without a step (no `steps`, or new events no step describes) the entry is the
    caller's own, kept nowhere."""
    if not last:
        return None
    step = None
    if steps is not None:
        found = _step(tracker, domain, steps, extra)
        if found is not None and _runs_a_known_loop(tracker, found[0][1]):
            found = None
        if found is not None:
            step, folded = found
            derived = steps.get(step)
            if derived is not None:
                events = tracker.events
                last_event = events[-1] if events else None  # (the empty step from no events)
                derived_from: _DerivedFrom = (steps, len(events), last_event, derived[0], folded)
                setattr(tracker, _DERIVED_ATTRIBUTE, derived_from)
                return derived
    cache = getattr(tracker, _IncrementalStates.ATTRIBUTE, None)
    if type(cache) is not _IncrementalStates or cache.domain is not domain:
        cache = _IncrementalStates.of(tracker, domain)
    if not cache.advance(tracker):
        if steps is not None:
            _no_step_from_here(tracker, steps)
        return None
    identities = cache.window_identities(last)
    equal = cache.stories_equal(rule_only)
    if equal:
        windows = identities, identities
    else:
        windows = identities, cache.story_window_identities(last, rule_only)
    if steps is not None:
        return _learn_step(tracker, cache, last, equal, steps, step, windows)
    return [None, windows, None]


def _no_step_from_here(tracker: Tracker, steps: Steps) -> None:
    """The tracker's states now depend on more than the derivation state: no step begins
    before a restart or session start (and the events up to here are not read again)."""
    events = tracker.events
    size = len(events)
    last = events[-1] if events else None
    derived_from: _DerivedFrom = (steps, size, last, None, size)
    setattr(tracker, _DERIVED_ATTRIBUTE, derived_from)


def _learn_step(
    tracker: Tracker,
    cache: _IncrementalStates,
    last: int,
    equal: bool,
    steps: Steps,
    step: StepKey | None,
    windows: Windows,
) -> StepEntry:
    """After a fold: the tracker's point to derive from, and the step that led here (its
    entry, new)."""
    if cache.loop is not None or cache.fold.followup:
        _no_step_from_here(tracker, steps)
        return [None, windows, None]
    state = _derivation_state(cache, last, equal)
    events = tracker.events
    size = len(events)
    last_event = events[-1] if events else None
    derived_from: _DerivedFrom = (steps, size, last_event, state, size)
    setattr(tracker, _DERIVED_ATTRIBUTE, derived_from)
    entry = [state, windows, None]
    if step is not None:
        steps.put(step, entry)
    return entry


def _derivation_state(cache: _IncrementalStates, last: int, equal: bool) -> Derivation:
    """What the next windows depend on besides the next events, after `window_step`
    (no loop followed, no followup action pending; `equal`: the story states are the
    states): the identities of the last `last` states
    before an action and of the current one; and, when the story states differ, the
    identities of their last `last` states, the current one's (None: its turn is left out),
    whether the last turn read was left out and the previous action of the last one kept.

    Each new state is the fold of the current state with the events' items; the story
    states read the new states with those flags and registers; the windows and the state
    from which a story reading starts (`_StoryStates.start_from`) lie within `last` states."""
    body = cache.body
    size = len(body)
    conversation = _kept(body, max(0, size - last), size, cache.body_identities, state_identity)
    conversation.append(cache.identity_of(cache.current))  # type: ignore[arg-type]
    if equal:
        return tuple(conversation), None
    story = cache.story
    assert story is not None  # brought up to date by `story_window_identities`
    stop = len(story.states)
    tail = _kept(story.states, max(0, stop - last), stop, story.identities, state_identity)
    current = cache.story_current
    current_identity = None if current is None else cache.story_current_identity
    return tuple(conversation), (
        tuple(tail),
        current_identity,
        story.hidden,
        tuple(story.last_action.items()),
    )
