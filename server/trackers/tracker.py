"""The dialogue state tracker: a fold over a conversation's events.

Slots, the latest message and action, the active loop, the followup action and the paused flag
are all derived from events; `current_state()` is the JSON served at /conversations/{id}/tracker.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any

from server.errors import CorruptConversation, InvalidEvent, clipped
from server.outages import RepeatsCounted
from server.trackers.events import (
    ACTION_LISTEN,
    ACTION_SESSION_START,
    ActionExecuted,
    ActionExecutionRejected,
    ActionReverted,
    ActiveLoop,
    AgentUttered,
    AllSlotsReset,
    BotUttered,
    ConversationPaused,
    ConversationResumed,
    DefinePrevUserUtteredFeaturization,
    EntitiesAdded,
    Event,
    FollowupAction,
    LoopInterrupted,
    ReminderCancelled,
    ReminderScheduled,
    Restarted,
    SessionStarted,
    SlotSet,
    StackUpdated,
    StoryExported,
    UserUtteranceReverted,
    UserUttered,
    off_loop_if_long,
    stored_events,
)

logger = logging.getLogger(__name__)

# A slot event for a slot the domain does not declare comes again at every fold of its
# conversation: one line a minute per name, the repeats counted.
UNDECLARED_SLOTS = RepeatsCounted(logger, 60.0, level=logging.ERROR)
_MOST_LOGGED = 10


# The events that take back earlier ones: the tracker's state is folded again without them.
REVERTS = (UserUtteranceReverted, ActionReverted)
# What the fold derives from the events (`_reset` sets each), besides `rejected_action`
# (of the events as logged: a rewind leaves it as it was).
_DERIVED = (
    "slots",
    "latest_message",
    "latest_action",
    "latest_bot_utterance",
    "active_loop",
    "followup_action",
    "paused",
    "_undeclared_logged",
)


class EventVerbosity(str, Enum):
    """Which events a tracker dump includes (Rasa's `include_events`)."""

    NONE = "NONE"
    APPLIED = "APPLIED"
    AFTER_RESTART = "AFTER_RESTART"
    ALL = "ALL"

    @classmethod
    def parse(cls, value: str | None, default: EventVerbosity) -> EventVerbosity:
        if value is None:
            return default
        try:
            return cls(value.upper())
        except ValueError:
            allowed = ", ".join(v.value for v in cls)
            raise InvalidEvent(
                f"Invalid parameter value for 'include_events'. Should be one of {allowed}"
            ) from None


class SlotDefaults(dict[str, Any]):
    """The slots' initial values, with the names of the list slots: as in Rasa, a list slot
    set to one value (`SlotSet("toppings", "ham")`, `initial_value: ham`) holds a list of it."""

    __slots__ = ("list_slots",)

    # dict's own methods by name, not through a `super()` object: a hot conversation's load
    # compares its tracker's defaults with the domain's every turn.
    def __init__(self, values: Any = (), list_slots: frozenset[str] = frozenset()) -> None:
        dict.__init__(self, values)
        self.list_slots = list_slots

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, dict):  # (dict's NotImplemented is no `False`)
            return NotImplemented
        return dict.__eq__(self, other) and self.list_slots == getattr(
            other, "list_slots", frozenset()
        )

    def __ne__(self, other: object) -> bool:  # (dict's own would ignore `list_slots`)
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def held(self, name: str, value: Any) -> Any:
        """What slot `name` holds when set to `value`."""
        if value and name in self.list_slots and not isinstance(value, list):
            return [value]
        return value


def _empty_latest_message() -> UserUttered:
    return UserUttered(text=None, parse_data={"intent": {}, "entities": []}, timestamp=0.0)


class Tracker:
    """The state of one conversation, kept up to date as events are appended."""

    # Names of undeclared slots already logged by this tracker (copies share it: a frozenset).
    _undeclared_logged: frozenset[str] = frozenset()
    # Set by the processor for a turn: the index of the turn's first event and the model's
    # `model_id` and `assistant_id`, which the turn's events get in their metadata when saved
    # (`stamp_model_ids`). `stamp_unsaved` gives them to those events before the tracker is
    # sent to an action server or an NLG server, so that it is sent as it is then stored.
    unsaved: tuple[int, str | None, str | None] | None = None
    # The action of the last action event when it is a rejection (`ActionExecutionRejected`),
    # else None: over the events as logged, which rewinds, restarts and sessions leave in
    # place (the policies read it at every prediction; kept here, not found by a walk back).
    rejected_action: str | None = None
    # Stored items folded into this tracker but left out of its events (`stored_events`):
    # the store's items it has read are its events and these.
    left_out = 0
    # What its stored items weigh beyond 1 each (see weight.py), as its store reported on
    # loading and appending them: the hot trackers' bound counts it.
    stored_extra = 0
    # Its store's `generation` of the session it folded (None: the store tells none), which
    # changes when another process rewrites the conversation (see TrackerRepository.load).
    stored_generation: int | str | None = None

    def __init__(
        self,
        sender_id: str,
        slot_defaults: dict[str, Any] | None = None,
        events: Iterable[Event] = (),
    ) -> None:
        self.sender_id = sender_id
        list_slots: frozenset[str] = getattr(slot_defaults, "list_slots", frozenset())
        self.slot_defaults = SlotDefaults(slot_defaults or {}, list_slots)
        self.events: list[Event] = []
        self._reset()
        for event in events:
            self.update(event)

    @classmethod
    def from_dicts(
        cls,
        sender_id: str,
        event_dicts: Iterable[dict[str, Any]],
        slot_defaults: dict[str, Any] | None = None,
    ) -> Tracker:
        tracker = cls(sender_id, slot_defaults)
        tracker.update_from_dicts(event_dicts)
        return tracker

    def update_from_dicts(self, event_dicts: Iterable[dict[str, Any]]) -> None:
        """Folds stored event dicts, counting in `left_out` those Rasa leaves out. One this
        server cannot read is CorruptConversation (500, logged, naming the conversation): the stored
        data's fault, not the request's (before: a 400 "unknown event type")."""
        left_out: list[Any] = []
        try:
            self.update_many(stored_events(event_dicts, left_out))
        except InvalidEvent as exc:
            raise CorruptConversation(
                f"Conversation '{self.sender_id}' holds a stored event this server cannot "
                f"read: {exc}"
            ) from exc
        if left_out:
            self.left_out += len(left_out)

    # -- state ------------------------------------------------------------------------------
    def _reset(self) -> None:
        self.slots: dict[str, Any] = _copy_slots(self.slot_defaults)
        self.latest_message: UserUttered = _empty_latest_message()
        self.latest_action: dict[str, Any] = {}
        self.latest_bot_utterance: BotUttered | None = None
        self.active_loop: dict[str, Any] = {}
        # As Rasa's reset: the next action is a listen, until an action or a message comes.
        self.followup_action: str | None = ACTION_LISTEN
        self.paused = False

    @property
    def active_loop_name(self) -> str | None:
        return self.active_loop.get("name")

    @property
    def latest_action_name(self) -> str | None:
        return self.latest_action.get("action_name")

    @property
    def is_active_loop_rejected(self) -> bool:
        return bool(self.active_loop.get("rejected"))

    @property
    def is_active_loop_interrupted(self) -> bool:
        return bool(self.active_loop.get("is_interrupted"))

    def get_slot(self, name: str) -> Any:
        return self.slots.get(name)

    # -- the fold ---------------------------------------------------------------------------
    def update(self, event: Event) -> None:
        """Appends one event and applies it to the derived state."""
        self.events.append(event)
        # A turn's usual events by their exact class, without `_apply`'s call and its chain
        # of isinstance tests (the same outcome: a subclass goes through `_apply`).
        cls = event.__class__
        if cls is ActionExecuted:
            self._set_latest_action(event)  # type: ignore[arg-type]
            self.followup_action = None
            self.rejected_action = None
        elif cls is BotUttered:
            self.latest_bot_utterance = event  # type: ignore[assignment]
        elif cls is not DefinePrevUserUtteredFeaturization:
            self._apply(event)

    def update_many(self, events: Iterable[Event]) -> None:
        for event in events:
            self.update(event)

    async def update_many_off_loop(self, events: Iterable[Event]) -> None:
        """`update_many`, where a rewind (which folds the applied events again: 100,000
        held the event loop 0.15 s) of a long conversation is folded in a thread, on a
        scratch tracker whose state this one then takes with the event. The caller holds
        the conversation's lock: nothing else changes the tracker meanwhile."""
        for event in events:
            if not isinstance(event, REVERTS):
                self.update(event)
                continue
            scratch = await off_loop_if_long(self._replayed, self.events, event)
            self.events.append(event)
            for name in _DERIVED:
                setattr(self, name, getattr(scratch, name))

    def _replayed(self, events: list[Event], revert: Event) -> Tracker:
        """A tracker holding the state of `events` then `revert` (no events of its own)."""
        scratch = Tracker(self.sender_id, self.slot_defaults)
        scratch._undeclared_logged = self._undeclared_logged
        scratch._replay(applied_events([*events, revert]))
        return scratch

    def _apply(self, event: Event) -> None:
        if event.__class__ in _NO_STATE:  # the user_featurization of most turns: no test
            return
        if isinstance(event, UserUttered):
            self.latest_message = event
            self.followup_action = None
        elif isinstance(event, ActionExecuted):
            self._set_latest_action(event)
            self.followup_action = None
            self.rejected_action = None
        elif isinstance(event, BotUttered):
            self.latest_bot_utterance = event
        elif isinstance(event, SlotSet):
            defaults = self.slot_defaults
            if event.key in defaults:
                self.slots[event.key] = defaults.held(event.key, event.value)
            else:
                self._undeclared_slot(event.key)
        elif isinstance(event, AllSlotsReset):
            self.slots = _copy_slots(self.slot_defaults)
        elif isinstance(event, Restarted):
            self._reset()
            self.followup_action = ACTION_SESSION_START
        elif isinstance(event, SessionStarted):
            self._reset()
        elif isinstance(event, REVERTS):
            self._replay(self.applied_events())
        elif isinstance(event, FollowupAction):
            self.followup_action = event.action_name
        elif isinstance(event, ActiveLoop):
            self._change_loop_to(event.name)
        elif isinstance(event, LoopInterrupted):
            if self.active_loop:
                self.active_loop["is_interrupted"] = event.is_interrupted
        elif isinstance(event, ActionExecutionRejected):
            self.rejected_action = event.action_name
            if self.active_loop and event.action_name == self.active_loop_name:
                self.active_loop["rejected"] = True
        elif isinstance(event, ConversationPaused):
            self.paused = True
        elif isinstance(event, ConversationResumed):
            self.paused = False
        elif isinstance(event, EntitiesAdded):
            # As Rasa: only right after the message (a custom action's entities, or ones before
            # any action, change nothing); an entity the message holds is not added again.
            if self.latest_action_name == ACTION_LISTEN:
                entities = list(self.latest_message.entities)
                for entity in event.entities:
                    if entity not in entities:
                        entities.append(entity)
                self.latest_message.parse_data = {**self.latest_message.parse_data}
                self.latest_message.parse_data["entities"] = entities

    def _undeclared_slot(self, name: str) -> None:
        """As Rasa: a slot the domain does not declare is not set (its event stays in the
        events), with an error naming it; once per name and tracker, as a bulk fold may
        run in a thread, where `RepeatsCounted` cannot count. At most a few names a tracker:
        a body of 100,000 slot events, each of its own name, is not 100,000 lines."""
        if name in self._undeclared_logged or len(self._undeclared_logged) >= _MOST_LOGGED:
            return
        self._undeclared_logged = self._undeclared_logged | {name}
        UNDECLARED_SLOTS.log(
            f"undeclared slot {clipped(name)}",
            "Tried to set non existent slot '%s' in conversation '%s'. Make sure you added "
            "all your slots to your domain file.",
            clipped(name),
            self.sender_id,
        )

    def _set_latest_action(self, event: ActionExecuted) -> None:
        if event.action_name is not None:
            self.latest_action = {"action_name": event.action_name}
        else:
            self.latest_action = {"action_text": event.action_text}
        if self.active_loop:
            # As Rasa: any action while a loop is active ends its interruption; only the
            # loop's own action ends its rejection.
            self.active_loop["is_interrupted"] = False
            if event.action_name == self.active_loop_name:
                self.active_loop["rejected"] = False

    def _change_loop_to(self, name: str | None) -> None:
        if name is None:
            self.active_loop = {}
            return
        self.active_loop = {
            "name": name,
            "is_interrupted": False,
            "rejected": False,
            "trigger_message": self.latest_message.full_parse_data(),
        }

    def _replay(self, events: list[Event]) -> None:
        rejected = self.rejected_action  # of the events as logged, not of those replayed
        self._reset()
        for event in events:
            if not isinstance(event, REVERTS):
                self._apply(event)
        self.rejected_action = rejected

    # -- views ------------------------------------------------------------------------------
    def applied_events(self) -> list[Event]:
        """Events since the last restart or session start, minus rewound and undone ones."""
        return applied_events(self.events)

    def events_after_latest_restart(self) -> list[Event]:
        return events_after_latest_restart(self.events)

    def latest_input_channel(self) -> str | None:
        for event in reversed(self.events):
            if isinstance(event, UserUttered):
                return event.input_channel
        return None

    def last_user_event(self) -> UserUttered | None:
        # By index, not `reversed()`: every turn asks (for its session's expiry).
        events = self.events
        index = len(events)
        while index:
            index -= 1
            event = events[index]
            if isinstance(event, UserUttered):
                return event
        return None

    def current_session_events(self) -> list[Event]:
        """Events from the last `action_session_start` (or session start) on."""
        for i in range(len(self.events) - 1, -1, -1):
            event = self.events[i]
            if isinstance(event, ActionExecuted) and event.action_name == ACTION_SESSION_START:
                return self.events[i:]
            if isinstance(event, SessionStarted) and (
                i == 0 or not _is_session_start_action(self.events[i - 1])
            ):
                return self.events[i:]
        return list(self.events)

    def current_state(
        self, verbosity: EventVerbosity = EventVerbosity.AFTER_RESTART
    ) -> dict[str, Any]:
        """The tracker JSON Rasa serves, with events chosen by `verbosity`."""
        events = None if verbosity is EventVerbosity.NONE else event_dicts(self.events, verbosity)
        return {
            "sender_id": self.sender_id,
            "slots": dict(self.slots),
            "latest_message": self.latest_message.full_parse_data(),
            "latest_event_time": self.events[-1].timestamp if self.events else None,
            "followup_action": self.followup_action,
            "paused": self.paused,
            "events": events,
            "latest_input_channel": self.latest_input_channel(),
            "active_loop": self.active_loop,
            "latest_action": self.latest_action,
            "latest_action_name": self.latest_action_name,
        }

    def until(self, timestamp: float) -> Tracker:
        """A new tracker of the conversation as it was at `timestamp`: its events in stored
        order up to the first one after that time (as Rasa's `travel_back_in_time`). An
        event stored later with an earlier timestamp was not part of it then."""
        return Tracker(
            self.sender_id,
            self.slot_defaults,
            itertools.takewhile(lambda e: e.timestamp <= timestamp, self.events),
        )

    def copy(self) -> Tracker:
        other = Tracker(self.sender_id, self.slot_defaults, list(self.events))
        other.unsaved = self.unsaved
        other.left_out = self.left_out
        return other

    def begin_turn(self, model_id: str | None, assistant_id: str | None) -> int:
        """The index of the turn's first event (the next one), recorded with the model's ids
        for the turn's events (`unsaved`)."""
        start = len(self.events)
        self.unsaved = (start, model_id, assistant_id)
        return start

    def stamp_unsaved(self, *more: Event) -> None:
        """The model's ids (see `unsaved`) into the metadata of the turn's events, and of
        `more` (events about to be logged), where they have none: as they will be saved."""
        unsaved = self.unsaved
        if unsaved is None:
            return
        start, model_id, assistant_id = unsaved
        for events in (self.events[start:], more):
            for event in events:
                metadata = event.metadata
                if model_id:
                    metadata.setdefault("model_id", model_id)
                if assistant_id:
                    metadata.setdefault("assistant_id", assistant_id)

    def extended(self, events: Iterable[Event]) -> Tracker:
        """A new tracker: this one's events and state, then `events` folded; this one is
        left as it was (a bulk append folds in a thread while other requests may read the
        hot tracker). Whatever else is kept on it (the policies' state cache) carries over:
        the old events are the same objects, so the cache goes on from where it was."""
        other = copy.copy(self)
        other.events = list(self.events)
        other.slots = dict(self.slots)
        other.latest_action = dict(self.latest_action)
        other.active_loop = dict(self.active_loop)
        other.update_many(events)
        return other


def applied_events(events: Sequence[Event]) -> list[Event]:
    """Events since the last restart or session start, minus rewound and undone ones, with
    a loop's later happy-path runs collapsed into its first, as Rasa's `applied_events`:
    all in one pass, so a rewind after a collapsed run reaches back past the answers the
    collapse dropped (a form's last answer followed by `action_default_fallback` takes back
    the whole form, back to the message that started it)."""
    return _applied(events, rewinds=True)


def events_after_latest_restart(events: list[Event]) -> list[Event]:
    for i in range(len(events) - 1, -1, -1):
        if isinstance(events[i], Restarted):
            return events[i + 1 :]
    return list(events)


def event_dicts(events: list[Event], verbosity: EventVerbosity) -> list[dict[str, Any]]:
    """The JSON of the events `verbosity` (not NONE) chooses, as `current_state` serves them."""
    return [e.as_dict() for e in chosen_events(events, verbosity)]


def chosen_events(events: list[Event], verbosity: EventVerbosity) -> list[Event]:
    """The events `verbosity` (not NONE) chooses, as `current_state` serves them."""
    if verbosity is EventVerbosity.ALL:
        return events
    if verbosity is EventVerbosity.APPLIED:
        # As Rasa's `applied_events`: a form's happy path reads as one run.
        return applied_events(events)
    return events_after_latest_restart(events)


def collapse_loop_happy_paths(events: Sequence[Event]) -> list[Event]:
    """Drops the turns between consecutive happy-path runs of a loop, and the later runs
    themselves, as Rasa's `applied_events` does (restarts and rewinds are kept as events:
    for story events; a tracker's are `applied_events`).

    A form asking for slot after slot then looks, to the policies, as if it ran once (the
    slots it took and its questions stay).
    """
    return _applied(events, rewinds=False)


def _applied(events: Sequence[Event], rewinds: bool) -> list[Event]:
    # As Rasa, the loops are those any of the events activates (rewound or before a restart
    # too).
    loop_names = activated_loops(events)
    applied: list[Event] = []
    # (loop, index): the events from that loop's kept run up to the index were cleaned by
    # its last collapse, so the next one looks only at those after (linear, not quadratic,
    # in the questions one activation asks). A rewind below the index forgets it.
    clean: tuple[str, int] | None = None
    for event in events:
        if rewinds and isinstance(event, _REWINDS):
            if isinstance(event, (Restarted, SessionStarted)):
                applied = []
            elif isinstance(event, ActionReverted):
                _undo_till_previous(ActionExecuted, applied)
            else:
                _undo_till_previous(UserUttered, applied)
                _undo_till_previous(ActionExecuted, applied)
            if clean is not None and len(applied) < clean[1]:
                clean = None
            continue
        if loop_names and isinstance(event, ActionExecuted) and event.action_name in loop_names:
            loop = event.action_name
            stop = clean[1] if clean is not None and clean[0] == loop else 0
            if not first_loop_run_or_unhappy_path(loop, applied, stop):
                # As Rasa: back to the previous run, and this run is not kept (a story
                # after a form that asked three questions reads as the story after one run).
                undo_till_previous_loop_run(loop, applied, stop)
                clean = (loop, len(applied))
                continue
            clean = None
        applied.append(event)
    return applied


def activated_loops(events: Iterable[Event]) -> set[str]:
    """The names of the loops any of `events` activates."""
    return {e.name for e in events if isinstance(e, ActiveLoop) and e.name}


# The events `applied_events` applies to the events before them.
_REWINDS = (Restarted, SessionStarted, ActionReverted, UserUtteranceReverted)


def first_loop_run_or_unhappy_path(loop: str, applied: list[Event], stop: int = 0) -> bool:
    """Rasa's test, on the events after `stop` (those from the loop's kept run to `stop`
    hold nothing it stops at: the last collapse cleaned them)."""
    next_action: str | None = None
    for index in range(len(applied) - 1, stop - 1, -1):
        event = applied[index]
        if isinstance(event, ActiveLoop) and event.name is None:
            return True
        if isinstance(event, ActionExecutionRejected) and event.action_name == loop:
            return True
        if isinstance(event, UserUttered) and next_action is not None and next_action != loop:
            return True
        if isinstance(event, ActionExecuted):
            if event.action_name == loop:
                return False
            next_action = event.action_name
    return stop == 0


# What a loop's next happy-path run undoes back to its previous run.
LOOP_UNDONE = (ActionExecuted, UserUttered, DefinePrevUserUtteredFeaturization)


def undo_till_previous_loop_run(loop: str, applied: list[Event], stop: int = 0) -> None:
    # Walked by index, not over a copy: a copy of the whole history at every run of the loop
    # made a long form conversation's prediction quadratic (25,000 events: 0.1 s). Nothing
    # before `stop` is undone (see `first_loop_run_or_unhappy_path`).
    for index in range(len(applied) - 1, stop - 1, -1):
        event = applied[index]
        if isinstance(event, ActionExecuted) and event.action_name == loop:
            break
        if isinstance(event, LOOP_UNDONE):
            del applied[index]


# Values a slot shares safely between trackers: nothing in them can change.
_IMMUTABLE = (str, int, float, bool, type(None))

# Events that change nothing `_apply` keeps (the last of its tests would fail for them).
_NO_STATE = frozenset(
    {
        DefinePrevUserUtteredFeaturization,
        StoryExported,
        ReminderScheduled,
        ReminderCancelled,
        AgentUttered,
        StackUpdated,
    }
)


def _copy_slots(defaults: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of the slots' initial values (`copy.deepcopy` walks even a str or None,
    at a few microseconds per tracker and session start)."""
    return {
        name: value if type(value) in _IMMUTABLE else copy.deepcopy(value)
        for name, value in defaults.items()
    }


def _is_session_start_action(event: Event) -> bool:
    return isinstance(event, ActionExecuted) and event.action_name == ACTION_SESSION_START


def _undo_till_previous(event_type: type[Event], applied: list[Event]) -> None:
    while applied:
        last = applied.pop()
        if isinstance(last, event_type):
            return
