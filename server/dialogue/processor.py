"""The turn processor: parse, fill slots, predict and run actions until the bot listens.

One turn, under the conversation's lock: load the tracker (current session, incrementally),
start or expire the session, append the user message, extract slots, then predict and run
actions (at most `max_predictions` run since the bot listened), append the new events in
one transaction and publish them after the commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

import orjson

from server.brokers.ordering import same_time_run, stored_run
from server.dialogue import turn_log
from server.dialogue.actions import (
    Action,
    ActionContext,
    ActionListen,
    ActionServer,
    ActionSessionStart,
    EndToEndAction,
    RemoteAction,
    ResponseAction,
    ResponseEndpoint,
    RetrievalAction,
    default_action,
    slot_extraction_events,
)
from server.dialogue.domain import Domain
from server.dialogue.loops import TWO_STAGE_FALLBACK, FormAction, TwoStageFallbackAction
from server.dialogue.memo import Memo
from server.dialogue.messages import (
    MAX_TEXT_CHARS,
    CollectingOutputChannel,
    OutputChannel,
    UserMessage,
    check_text_length,
    split_message,
)
from server.dialogue.policies.ensemble import policy_name
from server.dialogue.policies.featurization import (
    DetachedStates,
    RuleOnly,
    folds_on,
    states_behind,
)
from server.dialogue.policies.prediction import PolicyPrediction
from server.dialogue.reminders import (
    ReminderScheduler,
    applied_cancel,
    cancels,
    was_scheduled,
)
from server.dialogue.slot_extraction import (
    VALIDATE_SLOT_MAPPINGS,
    custom_mapping_actions,
    extract_slots,
)
from server.dialogue.slots import SESSION_STARTED_METADATA
from server.dialogue.state_folds import CutOffFolds, let_go_of_fold
from server.errors import (
    ActionError,
    ActionRejected,
    BotServerError,
    NoDialogueModel,
    UnknownConversation,
    how_many,
)
from server.outages import RepeatsCounted
from server.setting_values import max_predictions
from server.trackers.events import (
    ACTION_LISTEN,
    ACTION_SESSION_START,
    OFF_LOOP_EVENTS,
    ActionExecuted,
    ActionExecutionRejected,
    BotUttered,
    DefinePrevUserUtteredFeaturization,
    Event,
    ReminderCancelled,
    ReminderScheduled,
    Restarted,
    SessionStarted,
    SlotSet,
    UserUtteranceReverted,
    UserUttered,
    left_out_by_rasa,
    off_loop_if_long,
)
from server.trackers.freeing import release_off_loop
from server.trackers.memory_lock import InMemoryLockStore
from server.trackers.repository import TrackerRepository
from server.trackers.store import NAME_COLUMN_LENGTH, check_conversation_id
from server.trackers.tracker import REVERTS, Tracker, applied_events

logger = logging.getLogger(__name__)

# Conversations remembered as told about an active loop the domain lacks (a bound: anyone
# may post such an event).
_UNKNOWN_LOOPS_TOLD = 10_000

# Clients that gave up while their messages waited: while a store is silent, every client of
# a busy server times out; one line and a count, not one line per message.
CLIENTS_GONE = RepeatsCounted(logger, 60.0, level=logging.INFO)
CLIENT_GONE_KEY = "clients went away while their messages waited: not handled"

DEFAULT_MAX_PREDICTIONS = max_predictions()
# Predictions a turn makes at most, per action the limit allows (rejected ones included).
_MOST_PREDICTIONS_PER_ACTION = 3
# The policy name a followup action is logged with, as Rasa logs it.
FOLLOWUP_POLICY = "followup_action"
# The events after which a tracker has none applied (`session_expired`).
_RESETS = (Restarted, SessionStarted)
# Distinct message texts whose parse a model remembers (about 2.5 KB each, decoded).
PARSE_MEMO_SIZE = 1024
# Hashes of texts parsed once, kept until this many: a parse is remembered when its text
# comes a second time, so a stream of texts that never repeat adds no entries.
PARSE_CANDIDATES_SIZE = 1024


class NLU(Protocol):
    def parse(
        self, text: str, message_id: str | None = None, metadata: dict | None = None
    ) -> dict[str, Any]: ...


class Policies(Protocol):
    def predict(self, tracker: Tracker, domain: Domain) -> Any: ...


@dataclass
class DialogueModel:
    """What a turn needs from a trained model."""

    domain: Domain
    policies: Policies
    nlu: NLU | None = None
    model_id: str | None = None
    assistant_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Parse results by text, never changed (`Processor.parse` gives a caller a copy, a turn
    # shares all but the top level); only for a pipeline whose parse depends on the text
    # alone (see `_parse`).
    parses: Memo[str, dict[str, Any]] = field(
        default_factory=lambda: Memo(PARSE_MEMO_SIZE), repr=False, compare=False
    )
    parse_candidates: set[int] = field(default_factory=set, repr=False, compare=False)
    # Trained without stories or rules (`training_type` "nlu"): as Rasa's, it understands
    # and logs messages and predicts no action. Said once per model (`tell_nlu_only`).
    nlu_only: bool = field(init=False, repr=False, compare=False)
    told_nlu_only: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.nlu_only = self.metadata.get("training_type") == "nlu"

    def check_predicts(self) -> None:
        """NoDialogueModel for an NLU-only model, asked for a prediction."""
        if self.nlu_only:
            raise NoDialogueModel(
                "The loaded model is NLU-only (trained without stories or rules, or by "
                "`botserver train nlu`): it predicts no action. Train a model with stories or "
                "rules to predict actions."
            )

    def tell_nlu_only(self) -> None:
        """The warning of a turn on an NLU-only model, once per model (Rasa's warning
        filter shows its own once per process)."""
        if not self.told_nlu_only:
            self.told_nlu_only = True
            logger.warning(
                "No dialogue model (an NLU-only model): messages are understood and logged, "
                "no action is predicted or run. Train a model with stories or rules for the "
                "bot to answer."
            )


@dataclass
class Prediction:
    """The next action, and who chose it with what confidence."""

    action_name: str
    confidence: float | None = 1.0
    policy_name: str | None = None
    probabilities: list[float] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # Chosen from the message's text (an end-to-end story or rule), not its intent.
    is_end_to_end_prediction: bool = False
    # A rule's turn that no story has (Rasa's `hide_rule_turn`).
    hide_rule_turn: bool = False


async def fold_states_off_loop(
    tracker: Tracker, model: DialogueModel, kept: CutOffFolds | None = None
) -> None:
    """The first prediction on a long conversation (after a PUT, a restart of the process)
    folds every event into the policies' state cache: 100,000 events held the event loop
    about 0.4 s. That fold runs in a thread, on the cache taken off the tracker
    (`DetachedStates`), put back once it ended. It folds the events stored before the turn
    (its own few fold at the prediction, on the loop), so that a caller cancelled meanwhile
    (a turn cut off), which lets go of the conversation's lock at once while the thread
    runs on, leaves its progress in `kept` (the processor's): the conversation's next fold
    goes on from it when the tracker it sees still starts with the events folded (the
    same hot tracker, or one read again from the store), rather than fold the whole
    session again. Without `kept` what the thread folded is freed once it ends."""
    domain = model.domain
    if states_behind(tracker, domain) <= OFF_LOOP_EVENTS:
        return
    rule_only = getattr(model.policies, "rule_only", None)  # the ensemble's
    upto = _stored_before_turn(tracker)
    states = None
    if kept is not None:
        states = await kept.take(tracker.sender_id)
        if states is not None and not states.continue_on(tracker, domain, upto):
            release_off_loop(states)
            states = None
    if states is None:
        states = DetachedStates(tracker, domain, upto)
    folding = asyncio.ensure_future(asyncio.to_thread(_fold, [states], rule_only))
    try:
        await asyncio.shield(folding)
    except asyncio.CancelledError:
        if kept is not None:
            kept.keep(
                tracker.sender_id, states, folding, len(tracker.events) if upto is None else upto
            )
        else:
            folding.add_done_callback(partial(let_go_of_fold, states))
        raise
    if not states.attach_to(tracker):
        release_off_loop(states)


def _stored_before_turn(tracker: Tracker) -> int | None:
    """How many of the tracker's events came before its turn (`begin_turn`), when the
    turn's own fold on from them at the prediction (a few, no rewind); else None (all)."""
    unsaved = tracker.unsaved
    if unsaved is None:
        return None
    start = unsaved[0]
    turns = tracker.events[start:]
    if not turns or len(turns) > OFF_LOOP_EVENTS or not folds_on(turns):
        return None
    return start


def _fold(taken: list[DetachedStates], rule_only: RuleOnly | None) -> None:
    """The fold of the one item `taken` holds, taken out first: once it ends the thread
    holds no reference to it (see `let_go_of_fold`)."""
    taken.pop().fold(rule_only)


def predict_next_action(tracker: Tracker, model: DialogueModel) -> Prediction:
    """The followup action if one is pending, else what the policies predict."""
    followup = tracker.followup_action
    if followup and model.domain.is_known_action(followup):
        # As Rasa's `for_action_name`: the followup scores 1, every other action 0.
        names = model.domain.action_names_or_texts
        scores = [float(name == followup) for name in names]
        return Prediction(followup, 1.0, FOLLOWUP_POLICY, scores)
    if followup:
        logger.error("followup action '%s' is not in the domain; predicting instead", followup)
    policies = model.policies
    # The ensemble's remembered winner without its copy: the lists are copied here.
    shared = getattr(policies, "predict_shared", None)
    result = (shared or policies.predict)(tracker, model.domain)
    return Prediction(
        result.action_name,
        result.confidence,
        result.policy_name,
        list(result.probabilities),
        list(getattr(result, "events", []) or []),
        bool(getattr(result, "is_end_to_end_prediction", False)),
        bool(getattr(result, "hide_rule_turn", False)),
    )


def featurization_of(
    tracker: Tracker, model: DialogueModel, prediction: Prediction | PolicyPrediction
) -> DefinePrevUserUtteredFeaturization | None:
    """As Rasa logs it before the first action the policies predict after a user message: how
    they read that message, by its text (an end-to-end story or rule: later states read it so
    too) or by its intent. None elsewhere, and for a followup action (no policy chose it)."""
    if tracker.latest_action.get("action_name") != ACTION_LISTEN:  # as the property, no call
        return None
    followup = tracker.followup_action
    if followup and model.domain.is_known_action(followup):
        return None
    # (use_text_for_featurization, by position: see `Processor._executed`)
    return DefinePrevUserUtteredFeaturization(prediction.is_end_to_end_prediction)


def note_text_featurization(
    tracker: Tracker, model: DialogueModel, prediction: Prediction | PolicyPrediction
) -> None:
    """Logs `featurization_of` the prediction, if any."""
    featurization = featurization_of(tracker, model, prediction)
    if featurization is not None:
        tracker.update(featurization)


def predict_for_turn(tracker: Tracker, model: DialogueModel) -> Prediction | PolicyPrediction:
    """`predict_next_action` for a caller that only reads the prediction (a turn, the predict
    API): the ensemble's remembered winner itself, without the two list copies and the
    `Prediction` made of them."""
    policies = model.policies
    shared = getattr(policies, "predict_shared", None)
    if shared is None or tracker.followup_action:
        return predict_next_action(tracker, model)
    return shared(tracker, model.domain)  # type: ignore[no-any-return]


def _as_dicts(events: list[Event]) -> list[dict[str, Any]]:
    return [e.as_dict() for e in events]


def _stored_run(stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`stored_run` of a conversation's stored items, those Rasa leaves out set aside."""
    return stored_run([d for d in stored if not left_out_by_rasa(d)])


async def dicts_of(events: list[Event]) -> list[dict[str, Any]]:
    """`as_dict` of each event; of a bulk of them in a thread, not on the event loop."""
    return await off_loop_if_long(_as_dicts, events)


class Processor:
    """Runs turns for every conversation of one process."""

    def __init__(
        self,
        trackers: TrackerRepository,
        lock_store: Any,
        broker: Any = None,
        action_server: ActionServer | None = None,
        nlg_endpoint: ResponseEndpoint | None = None,
        max_predictions: int = DEFAULT_MAX_PREDICTIONS,
    ) -> None:
        self.trackers = trackers
        self.lock_store = lock_store
        self.broker = broker
        self.action_server = action_server
        self.nlg_endpoint = nlg_endpoint
        self.max_predictions = max_predictions
        self.reminders = ReminderScheduler()
        # The folds of long conversations' states that turns cut off left running.
        self.cut_off_folds = CutOffFolds()
        self.on_turn: Callable[[dict[str, Any]], None] | None = None
        # Turns in `handle_message` now, and who to tell when none is left (a shutdown's drain).
        self.turns_in_flight = 0
        self.on_turns_idle: Callable[[], None] | None = None
        # Set by the agent: where a firing reminder finds the model and the user's channel.
        self.model_provider: Callable[[], DialogueModel | None] | None = None
        # (sender id, the channel named in the turn that set the reminder, the conversation's
        # latest input channel) -> where a reminder's messages go
        self.output_for_reminders: (
            Callable[[str, str | None, str | None], OutputChannel | None] | None
        ) = None
        # `action_for`'s actions by name, for one domain.
        self._actions: dict[str, Action] = {}
        self._actions_domain: Domain | None = None
        # (conversation, loop) pairs already warned about an active loop the domain lacks.
        self._unknown_loops_told: Memo[tuple[str, str], bool] = Memo(_UNKNOWN_LOOPS_TOLD)
        # The domain last warned about slot-mapping actions no action server runs.
        self._unserved_mappings_told: Domain | None = None

    def forget_model(self, model: DialogueModel) -> None:
        """Lets go of what the caches keep of a model just replaced or unloaded (its
        domain), so that it is freed off the loop with the model, not in the next turn."""
        if self._actions_domain is model.domain:
            self._actions = {}
            self._actions_domain = None
        if self._unserved_mappings_told is model.domain:
            self._unserved_mappings_told = None
        self.cut_off_folds.forget_domain(model.domain)

    # -- parsing ----------------------------------------------------------------------------
    @staticmethod
    def parse(
        model: DialogueModel, text: str, message_id: str | None = None, metadata: dict | None = None
    ) -> dict[str, Any]:
        """The NLU result of `text`, all of it the caller's own."""
        remembered = _remembered_parse(model, text)
        if remembered is not None:
            return orjson.loads(orjson.dumps(remembered))  # type: ignore[no-any-return]
        return _parse(model, text, message_id, metadata)

    @staticmethod
    def parse_for_turn(
        model: DialogueModel, text: str, message_id: str | None = None, metadata: dict | None = None
    ) -> dict[str, Any]:
        """As `parse`, but a remembered parse is shared below its top level: a turn's events
        only read their intent, entities and ranking (nothing changes them in place; an
        event that changes a parse, such as `EntitiesAdded`, replaces the dict)."""
        remembered = _remembered_parse(model, text)
        if remembered is not None:
            return dict(remembered)
        return _parse(model, text, message_id, metadata)

    async def parse_off_loop(self, model: DialogueModel, message: UserMessage) -> dict[str, Any]:
        """Parses in a worker thread: for a pipeline that may block (Duckling's HTTP call, a
        sentence encoder; see `_parses_inline`)."""
        args = (model, message.text or "", message.message_id, message.metadata)
        return await asyncio.to_thread(self.parse, *args)

    async def parse_text(
        self, model: DialogueModel, text: str, message_id: str | None = None
    ) -> dict[str, Any]:
        """`parse` where a turn would parse the text: on the loop by a pipeline that never
        blocks, for a text of ordinary length; in a worker thread otherwise."""
        if _parses_inline(model) and len(text) <= INLINE_PARSE_CHARS:
            return self.parse(model, text, message_id)
        return await asyncio.to_thread(self.parse, model, text, message_id)

    # -- trackers ---------------------------------------------------------------------------
    async def tracker_for(self, sender_id: str, model: DialogueModel) -> Tracker:
        """The current session's tracker, or a new empty one."""
        defaults = model.domain.kept_slot_defaults
        tracker = await self.trackers.load(sender_id, defaults)
        return tracker if tracker is not None else Tracker(sender_id, defaults)

    async def save(self, tracker: Tracker, start: int, model: DialogueModel) -> list[Event]:
        new_events = tracker.events[start:]
        bulk = len(new_events) > OFF_LOOP_EVENTS  # a bulk append: not on the event loop
        if bulk:
            await asyncio.to_thread(stamp_model_ids, new_events, model)
        else:
            stamp_model_ids(new_events, model)
        if self.broker is None or not new_events:
            await self.trackers.save(tracker, new_events)
            return new_events
        # The event before links this turn to the last one.
        previous = tracker.events[start - 1].as_dict() if start > 0 else None
        before = await self._run_before(tracker, start, previous)
        # A bulk's dicts are made in a thread before the save: a failed save must hand them
        # over at once, and would have made them on the loop (100,000: 65 ms of it).
        dicts = await asyncio.to_thread(_as_dicts, new_events) if bulk else None
        try:
            await self.trackers.save(tracker, new_events)
        except BaseException:
            # The commit may have happened all the same (a connection cut after it): the
            # broker reads the store back and publishes them if so, before any later event.
            in_doubt = _as_dicts(new_events) if dicts is None else dicts
            self.broker.publish_in_doubt(
                tracker.sender_id, in_doubt, previous, self.trackers.store, before
            )
            raise
        if dicts is None:
            dicts = _as_dicts(new_events)
        await self.broker.publish(tracker.sender_id, dicts, previous, before)  # committed
        return new_events

    async def _run_before(
        self, tracker: Tracker, start: int, previous: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        """`chain_ids`'s `before` for the events from `start` on: mostly the event before
        alone; a client's import with one timestamp may make it long. A run that reaches
        back to the start of the session loaded may go on in the earlier sessions, which a
        publish must count as `botserver export` does (before, a repeat after a session
        start of its second got the id of one before it: a consumer dropped it)."""
        run = same_time_run(tracker.events, start)
        if not run or previous is None:
            return []
        if len(run) < start:
            # Ending with `previous` itself: `chain_ids` hashes it once (before: three times).
            return [*await dicts_of(run[:-1]), previous]
        stored = await self.trackers.store.load_all(tracker.sender_id) or []
        return await off_loop_if_long(_stored_run, stored)

    def session_expired(self, tracker: Tracker, domain: Domain) -> bool:
        events = tracker.events
        # No events applied, as in Rasa: none at all, or a restart or session start last (posted
        # by a client, run by `execute`, a session start that does not listen). Not
        # applied_events(): that walks the whole session.
        if not events or type(events[-1]) in _RESETS:
            return True
        if not domain.session_config.are_sessions_enabled():
            return False
        last_user = tracker.last_user_event()
        if last_user is None:
            return False
        limit = domain.session_config.session_expiration_time * 60
        return time.time() - last_user.timestamp > limit

    async def update_session(
        self,
        tracker: Tracker,
        model: DialogueModel,
        output: OutputChannel | None,
        metadata: dict[str, Any] | None = None,
        only_if_empty: bool = False,
    ) -> None:
        """Runs action_session_start when the conversation is new or its session expired."""
        if only_if_empty:
            needed = not tracker.events
        else:
            needed = self.session_expired(tracker, model.domain)
        if needed:
            await self.start_session(tracker, model, output, metadata)

    async def start_session(
        self,
        tracker: Tracker,
        model: DialogueModel,
        output: OutputChannel | None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Runs action_session_start (after the session's metadata, if any, as a slot)."""
        action = self.action_for(ACTION_SESSION_START, model.domain)
        if metadata:
            tracker.update(SlotSet(key=SESSION_STARTED_METADATA, value=metadata))
            if type(action) is ActionSessionStart:  # (not a project's own)
                action = ActionSessionStart(metadata)
        await self.run_action(action, tracker, model, output, Prediction(ACTION_SESSION_START, 1.0))

    # -- a turn -----------------------------------------------------------------------------
    async def handle_message(
        self, message: UserMessage, model: DialogueModel
    ) -> list[dict[str, Any]]:
        """Runs one user turn; returns the bot messages it produced."""
        # Counted here, not by a coroutine around this one (a frame less per turn): a
        # shutdown waits for the turns in flight (server/api/shutdown.py, TurnsInFlight).
        self.turns_in_flight += 1
        try:
            sender_id = message.sender_id
            if (
                len(sender_id) > NAME_COLUMN_LENGTH
                or "\x00" in sender_id
                or not sender_id.isascii()  # a lone surrogate (a custom channel's JSON)
            ):
                check_conversation_id(sender_id)  # raises, saying why (when it should)
            text = message.text
            if text is not None and len(text) > MAX_TEXT_CHARS:  # (no call for the usual text)
                check_text_length(text)
            held = self.lock_store.lock(
                sender_id, None, None if message.receive is None else message.watch_client
            )
            # `async with held` without its two coroutines when the in-memory lock is free
            # (the usual turn): taken and left by plain calls.
            free = type(self.lock_store) is InMemoryLockStore and held.take_if_free()
            if not free:
                await held.__aenter__()
            exited = False
            try:
                client = message.client  # None unless the message waited
                if client is not None and client.gone:
                    CLIENTS_GONE.log(
                        CLIENT_GONE_KEY,
                        "The client of a message to '%s' went away while it waited for the "
                        "conversation's earlier messages: not handled. More of these within %g s "
                        "are counted in one line.",
                        sender_id,
                        CLIENTS_GONE.window,
                    )
                    return []
                started = time.perf_counter()
                # `tracker_for` inline (a coroutine less per turn)
                defaults = model.domain.kept_slot_defaults
                tracker = await self.trackers.load(sender_id, defaults)
                if tracker is None:
                    tracker = Tracker(sender_id, defaults)
                if message.once and holds_message(tracker, message.message_id):
                    logger.info(
                        "message %s of conversation %s came again (a retry), ignored",
                        message.message_id,
                        sender_id,
                    )
                    return []
                start = tracker.begin_turn(model.model_id, model.assistant_id)
                output = message.output_channel
                # An empty collector (the REST webhook's) is the turn's own output: its list
                # is the turn's messages. Any other channel gets a `_Tee` keeping them.
                if type(output) is CollectingOutputChannel and not output.messages:
                    sent = output.messages
                else:
                    sent = []
                    output = _Tee(output, sent)
                if self.session_expired(tracker, model.domain):
                    await self.start_session(tracker, model, output, message.metadata)
                parse_data = message.parse_data
                if parse_data is None:
                    # A sparse parse of a message of ordinary length costs less than the
                    # thread hop; a long one (0.4 ms per 1,000 characters for moodbot) would
                    # stall the loop.
                    text = message.text
                    if _parses_inline(model) and (text is None or len(text) <= INLINE_PARSE_CHARS):
                        parse_data = self.parse_for_turn(
                            model, message.text or "", message.message_id, message.metadata
                        )
                    else:
                        parse_data = await self.parse_off_loop(model, message)
                # The message's metadata copied (a literal when there is none: the REST body's
                # usual case, without a dict made to be copied).
                metadata = message.metadata
                if "metadata" not in parse_data:
                    parse_data["metadata"] = dict(metadata) if metadata else {}
                # By position, the metadata set after (the parse data holds its own): a class
                # called with a keyword gets a dict of them, some 2,000 instructions.
                user = UserUttered(
                    message.text, parse_data, message.input_channel, message.message_id
                )
                user.metadata = dict(metadata) if metadata else {}
                tracker.update(user)
                # Asked once a turn: the summary line below and the actions' lines too.
                debugging = logger.isEnabledFor(logging.DEBUG)
                if debugging:
                    turn_log.log_message(sender_id, message.text, parse_data)
                if message.text:  # as in Rasa, a message without text kills no reminder
                    self.reminders.user_spoke(tracker.sender_id)
                if model.nlu_only:  # as Rasa's processor: the message is logged, no more
                    model.tell_nlu_only()
                    actions = []
                else:
                    actions = await self.predict_and_run(tracker, model, output, debugging)
                new_events = tracker.events[start:]
                if self.broker is None and len(new_events) <= OFF_LOOP_EVENTS:
                    # `save` inline for the usual turn (no broker, a few events): two
                    # coroutines fewer, and two frames fewer on the chain that the append's
                    # commit resumes.
                    stamp_model_ids(new_events, model)
                    trackers = self.trackers
                    extra = await trackers.store.append(sender_id, _as_dicts(new_events))
                    trackers.saved(tracker, extra)
                else:
                    await self.save(tracker, start, model)
                if debugging:
                    logger.debug(
                        "turn sender=%s intent=%s actions=%s took=%.1fms",
                        message.sender_id,
                        (parse_data.get("intent") or {}).get("name"),
                        actions,
                        (time.perf_counter() - started) * 1000,
                    )
                if self.on_turn is not None:
                    self.on_turn({"seconds": time.perf_counter() - started, "actions": actions})
                return sent
            except BaseException as exc:
                exited = True
                if free:
                    held.leave()
                else:
                    await held.__aexit__(type(exc), exc, exc.__traceback__)
                raise
            finally:
                if not exited:
                    if free:
                        held.leave()
                    else:
                        await held.__aexit__(None, None, None)
        finally:
            self.turns_in_flight -= 1
            if not self.turns_in_flight and self.on_turns_idle is not None:
                self.on_turns_idle()

    async def trigger_intent(
        self,
        sender_id: str,
        intent: str,
        entities: list[dict[str, Any]],
        model: DialogueModel,
        output: OutputChannel | None,
        reminder: ReminderScheduled | None = None,
        output_for: Callable[[Tracker], OutputChannel | None] | None = None,
    ) -> tuple[Tracker, list[dict[str, Any]]]:
        """Appends an external user message with `intent` and runs the turn it starts; for a
        `reminder`, only while the conversation still holds it (see `_reminder_holds`).
        `output_for`, when given, picks the channel from the tracker loaded under the lock.
        NoDialogueModel on an NLU-only model, before anything changes."""
        model.check_predicts()
        async with self.lock_store.lock(sender_id):
            tracker = await self.tracker_for(sender_id, model)
            if output_for is not None:
                output = output_for(tracker)
            # (A long session's walk in a thread: 100,000 events held the loop 60 ms.)
            if reminder is not None and not await off_loop_if_long(
                _reminder_holds, tracker.events, reminder
            ):
                logger.info(
                    "reminder '%s' for %s dropped: the conversation restarted or started a new "
                    "session since, the reminder was cancelled or scheduled again (through "
                    "another process too), or (kill_on_user_msg) the user spoke",
                    reminder.name,
                    sender_id,
                )
                return tracker, []
            start = tracker.begin_turn(model.model_id, model.assistant_id)
            sent: list[dict[str, Any]] = []
            tee = _Tee(output, sent)
            await self.update_session(tracker, model, tee)
            tracker.update(
                UserUttered(
                    text=f"EXTERNAL: {intent}",
                    parse_data={"intent": {"name": intent}, "entities": entities},
                    input_channel=tracker.latest_input_channel(),
                    metadata={"is_external": True},
                )
            )
            await self.predict_and_run(tracker, model, tee)
            await self.save(tracker, start, model)
            return tracker, sent

    async def execute_action(
        self,
        sender_id: str,
        action_name: str,
        model: DialogueModel,
        output: OutputChannel | None,
        policy: str | None = None,
        confidence: float | None = None,
        output_for: Callable[[Tracker], OutputChannel | None] | None = None,
        create: bool = True,
    ) -> tuple[Tracker, list[dict[str, Any]]]:
        """Runs one named action (the fallback too when it fails) and predicts nothing after
        it, as Rasa (a `followup` it returns waits for the next message). `output_for` as in
        `trigger_intent`; UnknownConversation unless `create`, told by the one load under the
        lock."""
        async with self.lock_store.lock(sender_id):
            defaults = model.domain.kept_slot_defaults
            tracker = await self.trackers.load(sender_id, defaults)
            if tracker is None:
                if not create:
                    raise UnknownConversation(sender_id)
                tracker = Tracker(sender_id, defaults)
            if output_for is not None:
                output = output_for(tracker)
            start = tracker.begin_turn(model.model_id, model.assistant_id)
            sent: list[dict[str, Any]] = []
            tee = _Tee(output, sent)
            await self.update_session(tracker, model, tee)
            action = self.action_for(action_name, model.domain)
            prediction = Prediction(action_name, confidence or 0.0, policy)
            await self.run_action(action, tracker, model, tee, prediction)
            await self.save(tracker, start, model)
            return tracker, sent

    # -- prediction loop --------------------------------------------------------------------
    async def predict_and_run(
        self,
        tracker: Tracker,
        model: DialogueModel,
        output: OutputChannel | None,
        debugging: bool | None = None,
    ) -> list[str]:
        """Predicts and runs actions until the bot listens; `debugging`: whether to write
        each action's debug line (None: ask the logger)."""
        if debugging is None:
            debugging = logger.isEnabledFor(logging.DEBUG)
        if self._fill_slots(tracker, model):
            await self._extract_with_actions(tracker, model, output)
        ran: list[str] = []
        # `active_loop_name` without the calls while no loop is active (most turns).
        loop = tracker.active_loop.get("name") if tracker.active_loop else None
        if loop is not None and model.domain.known_loop(loop) is None:
            # The policies read it as no loop (`Domain.known_loop`); the event stays. Said
            # once per conversation: it holds for every turn until the loop ends.
            told = (tracker.sender_id, loop)
            if self._unknown_loops_told.get(told) is None:
                self._unknown_loops_told.put(told, True)
                logger.warning(
                    "conversation %s: the active loop '%s' is not a form of the domain; "
                    "predicting as if no loop were active (said once per conversation)",
                    tracker.sender_id,
                    loop,
                )
        # As Rasa, the limit counts the actions logged since the bot last listened (or a
        # session started), not the predictions: a rejected action logs none. A bound Rasa
        # lacks on the predictions too: actions that keep rejecting would loop forever.
        counted = _actions_since_listen(tracker.events, len(tracker.events), self.max_predictions)
        for _ in range(_MOST_PREDICTIONS_PER_ACTION * self.max_predictions):
            if counted >= self.max_predictions:
                break
            if tracker.paused and not _asks_restart(tracker):
                # As Rasa: a paused conversation (say, handed to a human) logs the user's
                # messages and fills slots, but the bot says nothing until resumed.
                return ran
            if len(tracker.events) > OFF_LOOP_EVENTS:
                # An action that rewound the turn (a fallback) makes the next prediction fold
                # the whole session again: in a thread too.
                await fold_states_off_loop(tracker, model, self.cut_off_folds)
            prediction = self.predict_next(tracker, model)
            featurization = featurization_of(tracker, model, prediction)
            action = self.action_for(prediction.action_name, model.domain)
            before = len(tracker.events)
            keep_going = await self.run_action(
                action, tracker, model, output, prediction, featurization
            )
            if debugging:
                turn_log.log_action(
                    tracker.sender_id,
                    action.name,
                    prediction.policy_name,
                    prediction.confidence,
                    tracker.events[before:],
                )
            ran.append(action.name)
            if not keep_going:
                return ran
            counted = _count_actions(tracker.events, before, counted)
        if counted >= self.max_predictions:
            logger.warning(
                "conversation %s: stopped after %s since the bot listened "
                "(MAX_NUMBER_OF_PREDICTIONS is %s)",
                tracker.sender_id,
                how_many(counted, "action"),
                self.max_predictions,
            )
        else:  # the bound on the predictions: the count did not reach the limit
            logger.warning(
                "conversation %s: stopped after %d predictions in one turn, %d times "
                "MAX_NUMBER_OF_PREDICTIONS (%s): its actions keep being rejected, or log "
                "action_listen themselves",
                tracker.sender_id,
                len(ran),
                _MOST_PREDICTIONS_PER_ACTION,
                self.max_predictions,
            )
        tracker.update(ActionExecuted(action_name=ACTION_LISTEN))
        return ran

    # A function, not a method calling it: one call less per prediction.
    predict_next = staticmethod(predict_for_turn)

    def action_for(self, name: str, domain: Domain) -> Action:
        """The action that runs under `name`; unknown names are custom actions.

        Actions keep nothing but their name, so the domain's are made once and shared (an
        unknown name, say from the execute API, is made each time).
        """
        if domain is not self._actions_domain:
            self._actions = {}
            self._actions_domain = domain
        action = self._actions.get(name)
        if action is None:
            action = self._new_action(name, domain)
            if domain.is_known_action(name):
                self._actions[name] = action
        return action

    @staticmethod
    def _new_action(name: str, domain: Domain) -> Action:
        if name in domain.overridden_defaults:
            return RemoteAction(name)  # the project's own `action_session_start`, say
        action = default_action(name)
        if action is not None:
            return action
        if name == TWO_STAGE_FALLBACK:
            return TwoStageFallbackAction()
        if name in domain.forms and name not in domain.user_actions:
            # A form the domain also lists under `actions` is the project's own action
            # (say, an SDK form), run on the action server, as in Rasa.
            return FormAction(name)
        if name in domain.responses:
            return ResponseAction(name)
        if domain.is_retrieval_action(name):
            return RetrievalAction(name)
        if name in domain.e2e_actions:
            return EndToEndAction(name)
        if name.startswith("utter_"):
            # As in Rasa, a response whoever writes it: the NLG server may hold it.
            return ResponseAction(name)
        return RemoteAction(name)

    async def extract_slots(
        self, tracker: Tracker, model: DialogueModel, output: OutputChannel | None
    ) -> None:
        if self._fill_slots(tracker, model):
            await self._extract_with_actions(tracker, model, output)

    def _fill_slots(self, tracker: Tracker, model: DialogueModel) -> bool:
        """Applies the slots the domain's mappings fill from the latest message, unless the
        action server has a part in it (custom mappings' actions,
        `action_validate_slot_mappings`): then it returns True and `_extract_with_actions`
        does it all, in Rasa's order. As in Rasa, after every user message, in a form or
        not."""
        domain = model.domain
        if self.action_server is not None:
            if VALIDATE_SLOT_MAPPINGS in domain.user_actions or custom_mapping_actions(domain):
                return True
        elif domain is not self._unserved_mappings_told:
            self._unserved_mappings_told = domain
            _warn_unserved_mappings(domain)
        filled = extract_slots(tracker, domain)
        if filled:
            tracker.update_many(filled)
        return False

    async def _extract_with_actions(
        self, tracker: Tracker, model: DialogueModel, output: OutputChannel | None
    ) -> None:
        """Fills the slots of the latest message with the action server's part in it (see
        `slot_extraction_events`), sending the messages its actions say."""
        events = await slot_extraction_events(self._context(tracker, model, output))
        if events:
            await self._apply_action_events(tracker, events, output)

    def _context(
        self, tracker: Tracker, model: DialogueModel, output: OutputChannel | None
    ) -> ActionContext:
        """The actions' context; within a turn (one `_Tee`, or the REST channel's collector),
        one for every action that runs on the same tracker (actions only read it)."""
        if type(output) is _Tee or type(output) is CollectingOutputChannel:
            ctx = output.context
            if (
                ctx is not None
                and ctx.tracker is tracker
                and ctx.domain is model.domain
                and ctx.model_metadata is model.metadata
                and ctx.action_server is self.action_server
                and ctx.nlg_endpoint is self.nlg_endpoint
            ):
                return ctx
            ctx = output.context = ActionContext(
                tracker,
                model.domain,
                output.name,
                self.action_server,
                self.nlg_endpoint,
                model.metadata,
            )
            return ctx
        return ActionContext(
            tracker,
            model.domain,
            getattr(output, "name", None),
            self.action_server,
            self.nlg_endpoint,
            model.metadata,
        )

    async def run_action(
        self,
        action: Action,
        tracker: Tracker,
        model: DialogueModel,
        output: OutputChannel | None,
        prediction: Prediction | PolicyPrediction,
        featurization: DefinePrevUserUtteredFeaturization | None = None,
    ) -> bool:
        """Runs one action and logs it; returns whether to predict another action (it only
        reads `prediction`: it may be the ensemble's remembered winner).

        The prediction's events (say `LoopInterrupted`) are visible to the action while it runs
        and are logged before it only when it does not reject, as in Rasa; so is
        `featurization` (see `featurization_of`), logged after them.
        """
        events: list[Event]
        # The prediction's events and `featurization` are stamped once, before the action
        # runs: the action server and the NLG server get them as they are then logged.
        predicted = _stamped_now(prediction.events) if prediction.events else prediction.events
        if predicted and featurization is not None:
            featurization.timestamp = time.time()  # logged after them
        if type(action) is ActionListen:
            # Listening (every turn's last action) runs nothing: no context to make or check
            # (the exact class: a subclass may run otherwise).
            events = []
        else:
            running = tracker
            if predicted:
                running = tracker.extended(predicted)  # (no fold of the session again)
            ctx = self._context(running, model, output)
            ctx.featurization = featurization
            try:
                # A turn's usual action, a domain response, without a coroutine (the exact
                # class: a subclass may run otherwise).
                if type(action) is ResponseAction and ctx.nlg_endpoint is None:
                    events = action.respond(ctx)
                else:
                    events = await action.run(ctx)
            except ActionRejected as exc:
                logger.info("action '%s' rejected: %s", action.name, exc)
                tracker.update(
                    ActionExecutionRejected(
                        action_name=action.name,
                        policy=prediction.policy_name,
                        confidence=prediction.confidence,
                    )
                )
                return True
            except ActionError as exc:
                logger.error("action '%s' failed, its events are lost: %s", action.name, exc)
                tracker.update_many(predicted)
                if featurization is not None:
                    tracker.update(featurization)
                tracker.update(self._executed(action, prediction))
                return await self._after_failed_action(tracker, model, output, action.name)
            except BotServerError as exc:
                logger.error("action '%s' failed: %s", action.name, exc)
                events = []
            finally:
                ctx.featurization = None  # the context serves the turn's later actions too
        name = action.name
        rejects, said = _effects(events) if events else (False, None)
        if not rejects:
            # As Rasa: the policy's events, then how the policies read the user's message
            # (Rasa's ensemble adds it last to the winning prediction's events).
            if predicted:
                tracker.update_many(predicted)
            if featurization is not None:
                tracker.update(featurization)
            tracker.update(self._executed(action, prediction))
        # else, as Rasa: an action whose events reject its run is not logged as run, and
        # neither are its prediction's events; its own events are, and prediction goes on.
        if not events:
            return name not in (ACTION_LISTEN, ACTION_SESSION_START)
        await self._apply_action_events(tracker, events, output)
        if name in (ACTION_LISTEN, ACTION_SESSION_START):
            return False
        if said is _REVERTED:
            # The turn was taken back (a fallback): wait for the user again.
            tracker.update(ActionExecuted(action_name=ACTION_LISTEN))
            return False
        if said is _UTTERED:
            # As Rasa: a user message an action logs (say, from a button's payload, or a
            # fallback's revert) fills slots as one the user sent, before the next prediction.
            await self.extract_slots(tracker, model, output)
        return True

    async def _after_failed_action(
        self, tracker: Tracker, model: DialogueModel, output: OutputChannel | None, name: str
    ) -> bool:
        """A custom action failed: run the configured fallback once, then listen. Not for
        the domain's own session start: there is no message yet to fall back from."""
        fallback = _fallback_action_name(model)
        if (
            fallback
            and fallback != name
            and name != ACTION_SESSION_START
            and model.domain.is_known_action(fallback)
        ):
            action = self.action_for(fallback, model.domain)
            if not isinstance(action, RemoteAction):
                await self.run_action(action, tracker, model, output, Prediction(fallback, 1.0))
        if tracker.latest_action_name != ACTION_LISTEN:
            tracker.update(ActionExecuted(action_name=ACTION_LISTEN))
        return False

    @staticmethod
    def _executed(action: Action, prediction: Prediction | PolicyPrediction) -> ActionExecuted:
        if isinstance(action, EndToEndAction):
            # An end-to-end bot text is logged by its text, as the story step was read.
            return ActionExecuted(
                action_name=None,
                action_text=action.name,
                policy=prediction.policy_name,
                confidence=prediction.confidence,
                hide_rule_turn=prediction.hide_rule_turn,
            )
        # By position (action_name, policy, confidence, action_text, hide_rule_turn): a call
        # of a class with keywords builds a dict of them, some 2,000 instructions an event.
        return ActionExecuted(
            action.name,
            prediction.policy_name,
            prediction.confidence,
            None,
            prediction.hide_rule_turn,
        )

    async def _apply_action_events(
        self, tracker: Tracker, events: list[Event], output: OutputChannel | None
    ) -> None:
        for event in events:
            # Stamped when logged, after the action's own event, as Rasa does: a conversation
            # read in timestamp order (a dashboard, `?until=`) is then in event order, whatever
            # time an action (or its server's clock) gave its events.
            event.timestamp = time.time()
            if isinstance(event, REVERTS):  # (a long conversation's is folded in a thread)
                await tracker.update_many_off_loop((event,))
            else:
                tracker.update(event)
            if isinstance(event, BotUttered) and output is not None:
                message = event.message()
                # The REST channel's collector takes it without a coroutine.
                kept = (
                    type(output) is _Tee or type(output) is CollectingOutputChannel
                ) and output.collect(tracker.sender_id, message)
                if not kept:
                    await output.send_response(tracker.sender_id, message)
            elif isinstance(event, ReminderScheduled):
                self.reminders.schedule(
                    tracker.sender_id, event, self._fire_reminder, _pushes_to(output)
                )
            elif isinstance(event, ReminderCancelled):
                self.reminders.cancel(tracker.sender_id, event)

    async def execute_side_effects(
        self, tracker: Tracker, events: list[Event], output: OutputChannel | None
    ) -> None:
        """Sends posted bot messages and schedules posted reminders (tracker/events API): those
        marked scheduled when posted (see `reminders.mark_posted`), as they are stored."""
        for event in events:
            if isinstance(event, BotUttered) and output is not None:
                await output.send_response(tracker.sender_id, event.message())
            elif isinstance(event, ReminderScheduled) and was_scheduled(event):
                self.reminders.schedule(
                    tracker.sender_id, event, self._fire_reminder, _pushes_to(output)
                )
            elif isinstance(event, ReminderCancelled):
                self.reminders.cancel(tracker.sender_id, event)

    # -- reminders --------------------------------------------------------------------------
    async def _fire_reminder(
        self, sender_id: str, reminder: ReminderScheduled, output_channel: str | None
    ) -> None:
        model = self.model_provider() if self.model_provider else None
        if model is None or model.nlu_only:
            logger.warning(
                "reminder '%s' for %s dropped: %s",
                reminder.name,
                sender_id,
                "no model" if model is None else "the model is NLU-only, it runs no action",
            )
            return
        output_for = None
        to = self.output_for_reminders
        if to is not None:  # the conversation's channel, from its one load under the lock

            def output_for(tracker: Tracker) -> OutputChannel | None:
                return to(sender_id, output_channel, tracker.latest_input_channel())

        entities = reminder.entities or []
        if isinstance(entities, dict):
            entities = [{"entity": k, "value": v} for k, v in entities.items()]
        await self.trigger_intent(
            sender_id, reminder.intent, entities, model, None, reminder, output_for
        )


def _pushes_to(output: OutputChannel | None) -> str | None:
    """The name of the channel a turn's bot messages went to, where a reminder set in that
    turn sends its own, as in Rasa; None for a turn whose messages were only collected (a
    REST reply): its reminders go to the conversation's channel."""
    name = getattr(output, "name", None)
    return None if name in (None, "collector") else name


def _warn_unserved_mappings(domain: Domain) -> None:
    """Says once per model that slot-mapping actions will not run for want of an action
    server (Rasa says it at each message, as the call fails)."""
    names = custom_mapping_actions(domain)
    if VALIDATE_SLOT_MAPPINGS in domain.user_actions:
        names.append(VALIDATE_SLOT_MAPPINGS)
    if names:
        logger.warning(
            "no action_endpoint is configured: the slot-mapping actions %s do not run, so "
            "their slots are not filled and the slots the domain's mappings fill are not "
            "validated (said once per model)",
            ", ".join(repr(n) for n in names),
        )


def stamp_model_ids(events: list[Event], model: DialogueModel) -> None:
    """The model's `model_id` and `assistant_id` into each event's metadata where it has
    none, as Rasa does; an identifier the model lacks is left out, not written as null."""
    model_id, assistant_id = model.model_id, model.assistant_id
    if model_id and assistant_id:  # a trained model has both: one pass
        for event in events:
            metadata = event.metadata
            metadata.setdefault("model_id", model_id)
            metadata.setdefault("assistant_id", assistant_id)
        return
    if model_id:
        for event in events:
            event.metadata.setdefault("model_id", model_id)
    if assistant_id:
        for event in events:
            event.metadata.setdefault("assistant_id", assistant_id)


_REVERTED = "reverted"
_UTTERED = "uttered"


def _effects(events: list[Event]) -> tuple[bool, str | None]:
    """Whether an action's events reject its run (`action_execution_rejected`), and what
    they do last to the user's side of the turn: take it back (`rewind`), add a user message
    (`user`), or nothing (None). One pass comparing classes (no isinstance call per event):
    it runs for most actions of a turn."""
    rejects = False
    said = None
    for event in events:
        cls = event.__class__
        if cls is UserUttered:
            said = _UTTERED
        elif cls is UserUtteranceReverted:
            said = _REVERTED
        elif cls is ActionExecutionRejected:
            rejects = True
    return rejects, said


def _actions_since_listen(events: Sequence[Event], end: int, most: int) -> int:
    """How many actions were logged before `end` since the bot last listened or a session
    started, as Rasa's limit counts them (`ActionExecuted` events); `most` at most."""
    counted = 0
    for index in range(end - 1, -1, -1):
        event = events[index]
        if isinstance(event, ActionExecuted):
            if event.action_name in (ACTION_LISTEN, ACTION_SESSION_START):
                break
            counted += 1
            if counted >= most:
                break
    return counted


def _count_actions(events: Sequence[Event], start: int, counted: int) -> int:
    """`counted` with the actions logged from `start` on: a listen or session start (an
    action's own events may log one) begins the count again."""
    for index in range(start, len(events)):
        event = events[index]
        if isinstance(event, ActionExecuted):
            if event.action_name in (ACTION_LISTEN, ACTION_SESSION_START):
                counted = 0
            else:
                counted += 1
    return counted


def _asks_restart(tracker: Tracker) -> bool:
    """Whether the latest user message asks to restart: the one message a paused
    conversation still answers, as in Rasa."""
    intent = tracker.latest_message.parse_data.get("intent")
    return isinstance(intent, dict) and intent.get("name") == "restart"


def _stamped_now(events: list[Event]) -> list[Event]:
    """Copies of a prediction's events stamped now (a policy may hand out the same list
    again, and the tracker already holds the first ones)."""
    return [
        replace(event, timestamp=time.time(), metadata=dict(event.metadata)) for event in events
    ]


def _reminder_holds(events: list[Event], reminder: ReminderScheduled) -> bool:
    """Whether `reminder` may fire, as Rasa decides from the conversation's `events`: it is
    among the applied events (no restart or new session since), and, if killed by a user
    message, none with text came after it (a rewound one too). The conversation decides,
    not this process's timers: the user may have spoken to another, or another may have
    scheduled a reminder of the same name since (which replaces this one) or cancelled
    reminders. Reminder events only recorded (posted without their side effects) neither
    replace nor cancel, as in Rasa; those applied carry what they did in their metadata
    (see `reminders.mark_applied`)."""
    applied = applied_events(events)
    for index in range(len(applied) - 1, -1, -1):
        event = applied[index]
        if (
            isinstance(event, ReminderScheduled)
            and event.name == reminder.name
            and was_scheduled(event)
        ):
            if not _same_reminder(event, reminder):
                return False
            later = applied[index + 1 :]
            for e in later:
                if isinstance(e, ReminderCancelled):
                    cancel = applied_cancel(e)
                    if cancel is not None and cancels(cancel, reminder):
                        return False
            return not reminder.kill_on_user_message or not _spoken_after(events, event)
    return False


def _spoken_after(events: list[Event], reminder: ReminderScheduled) -> bool:
    """Whether a user message with text follows `reminder` among `events`: rewound ones too
    (the default fallback takes its message back, yet the user spoke), as Rasa reads them."""
    for index in range(len(events) - 1, -1, -1):
        event = events[index]
        if event is reminder:
            return False
        if isinstance(event, UserUttered) and event.text:
            return True
    return True


def _same_reminder(a: ReminderScheduled, b: ReminderScheduled) -> bool:
    """Whether two reminders of one name are one event: the same one scheduled again (by
    another process, say) is another event, logged at another time, that replaces it."""
    return (
        a.timestamp == b.timestamp
        and a.trigger_date_time == b.trigger_date_time
        and a.intent == b.intent
        and a.entities == b.entities
        and a.kill_on_user_message == b.kill_on_user_message
    )


# The longest message parsed on the event loop's thread (a sparse pipeline only).
INLINE_PARSE_CHARS = 1_000


def _parses_inline(model: DialogueModel) -> bool:
    """Whether the model's pipeline parses without blocking (or there is none)."""
    return model.nlu is None or not getattr(model.nlu, "blocking", True)


def _remembered_parse(model: DialogueModel, text: str) -> dict[str, Any] | None:
    """The remembered parse of `text` (never to be changed), if any."""
    nlu = model.nlu
    if nlu is None or getattr(nlu, "blocking", True):
        return None
    return model.parses.get(text)


# How many of the conversation's latest user messages a retried delivery is looked for in.
RETRY_WINDOW_MESSAGES = 100


def holds_message(tracker: Tracker, message_id: str) -> bool:
    """Whether one of the conversation's last `RETRY_WINDOW_MESSAGES` user messages (of its
    loaded session) has this id; bounded, so a long conversation's turn costs no more."""
    seen = 0
    for event in reversed(tracker.events):
        if isinstance(event, UserUttered):
            if event.message_id == message_id:
                return True
            seen += 1
            if seen >= RETRY_WINDOW_MESSAGES:
                return False
    return False


def _parse(
    model: DialogueModel, text: str, message_id: str | None, metadata: dict | None
) -> dict[str, Any]:
    """Parses `text` (remembering the parse of a text that comes a second time)."""
    if model.nlu is None:
        from server.nlu.regex_message import parse_regex_message

        parsed = parse_regex_message(text, set(model.domain.intents), set(model.domain.entities))
        if parsed is None:
            return {"text": text, "intent": {"name": None, "confidence": 0.0}, "entities": []}
        return parsed
    parsed = model.nlu.parse(text, message_id=message_id, metadata=metadata)
    if getattr(model.nlu, "blocking", True):
        # Only a pipeline that parses inline is memoised: Duckling's dates follow the clock.
        return parsed
    candidates, key = model.parse_candidates, hash(text)
    if key in candidates:
        candidates.discard(key)
        _remember_parse(model.parses, text, parsed)
    else:
        if len(candidates) >= PARSE_CANDIDATES_SIZE:
            candidates.clear()
        candidates.add(key)
    return parsed


def _remember_parse(memo: Memo[str, dict[str, Any]], text: str, parsed: dict[str, Any]) -> None:
    """Keeps a copy of the parse read back from JSON when it equals the parse (not: NaN,
    tuples, numpy scalars), so that it holds nothing of the caller's or the pipeline's."""
    try:
        kept = orjson.loads(orjson.dumps(parsed))
    except TypeError:
        return
    if kept == parsed:
        memo.put(text, kept)


def _fallback_action_name(model: DialogueModel) -> str | None:
    for policy in model.metadata.get("policies", []) or []:
        if policy_name(policy.get("name")) == "RulePolicy":
            return policy.get("core_fallback_action_name", "action_default_fallback")
    return "action_default_fallback"


class _Tee:
    """Forwards bot messages to the channel and keeps the split parts for the caller."""

    def __init__(self, output: OutputChannel | None, sink: list[dict[str, Any]]) -> None:
        self.output = output
        self.sink = sink
        self.name = getattr(output, "name", None) or "collector"
        self.context: ActionContext | None = None  # the turn's, see `Processor._context`

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        if self.collect(recipient_id, message):
            return
        parts = split_message(message, collecting=True)
        self.sink.extend({"recipient_id": recipient_id, **part} for part in parts)
        if self.output is not None:
            await self.output.send_response(recipient_id, message)

    def collect(self, recipient_id: str, message: dict[str, Any]) -> bool:
        """`send_response` when the channel is a `CollectingOutputChannel` (the REST
        channel's): its parts kept, without a coroutine; False for any other channel."""
        output = self.output
        if type(output) is not CollectingOutputChannel:
            return False
        # What its send_response does, without splitting again.
        sink, collected = self.sink, output.messages
        for part in split_message(message, collecting=True):
            kept = {"recipient_id": recipient_id, **part}
            sink.append(kept)
            collected.append(kept.copy())  # (a copy of a small dict costs less than a new one)
        return True
