"""The agent: one facade over the current model and the processor, for the API and channels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from server.brokers.ordering import same_time_run
from server.dialogue.messages import (
    CollectingOutputChannel,
    OutputChannel,
    UserMessage,
    check_text_length,
    new_message_id,
)
from server.dialogue.processor import (
    DialogueModel,
    Processor,
    dicts_of,
    fold_states_off_loop,
    stamp_model_ids,
)
from server.dialogue.reminders import Admission, mark_posted
from server.errors import InvalidEvent, NoModelLoaded, clipped
from server.trackers.events import (
    ACTION_SESSION_START,
    OFF_LOOP_EVENTS,
    ActionExecuted,
    Event,
    SessionStarted,
    UserUttered,
    left_out_by_rasa,
    off_loop_for,
)
from server.trackers.tracker import Tracker

OutputFactory = Callable[[], OutputChannel | None]


class OutputChoice:
    """Rasa's `output_channel` query (a channel name, `latest`, or none: collect the replies)
    resolved once, from the tracker loaded under the lock before the turn, as Rasa resolves
    it: the channel the turn's messages go to, and whether the API's answer has them too."""

    def __init__(
        self,
        pushing_channel: Callable[[str | None, Tracker | None], OutputChannel | None],
        name: str | None,
        refused: Collection[str] = (),
    ) -> None:
        self._pushing_channel = pushing_channel
        self._name = name
        # Channels not pushed to (`latest` resolving to one collects the replies instead).
        self._refused = refused
        self.answers_messages = True

    def __call__(self, tracker: Tracker) -> OutputChannel:
        """The channel for the turn on `tracker`. The answer has its messages, as in Rasa,
        unless the channel only pushes them: collected ones (no channel, one that cannot push
        such as `rest`) come, and so do the callback channel's, whose output in Rasa collects
        what it POSTs."""
        name = self._name
        if name == "latest":
            name = tracker.latest_input_channel()
        channel = None if name in self._refused else self._pushing_channel(name, tracker)
        self.answers_messages = channel is None or getattr(channel, "collects", False)
        return channel if channel is not None else CollectingOutputChannel()


class Agent:
    """Runs conversations on whatever model is current when a request starts."""

    def __init__(
        self,
        processor: Processor,
        model_provider: Callable[[], DialogueModel | None],
        output_channels: dict[str, OutputFactory] | None = None,
    ) -> None:
        self.processor = processor
        self.model_provider = model_provider
        self.output_channels: dict[str, OutputFactory] = dict(output_channels or {})
        processor.model_provider = model_provider
        processor.output_for_reminders = self._reminder_output

    # -- model ------------------------------------------------------------------------------
    def model(self) -> DialogueModel:
        """The current model, taken once per request so a swap never splits a turn."""
        model = self.model_provider()
        if model is None:
            raise NoModelLoaded(
                "No model loaded. Train a model with `botserver train`, "
                "then load it with PUT /model or `botserver run -m`."
            )
        return model

    @property
    def is_ready(self) -> bool:
        return self.model_provider() is not None

    # -- channels ---------------------------------------------------------------------------
    def handle_message(self, message: UserMessage) -> Coroutine[Any, Any, list[dict[str, Any]]]:
        """Runs one user turn; bot messages go to message.output_channel and are returned.

        The processor's coroutine itself, not one awaiting it (a layer less per turn); a
        missing model raises when this is called, before anything is awaited.
        """
        return self.processor.handle_message(message, self.model())

    def output_channel(self, name: str | OutputChoice | None, tracker: Tracker) -> OutputChannel:
        """Rasa's `output_channel` query: a channel name, `latest`, or collect the replies."""
        return self._choice(name)(tracker)

    def output_choice(self, name: str | None, refused: Collection[str] = ()) -> OutputChoice:
        """Rasa's `output_channel` query `name`, to resolve once for a turn (see OutputChoice);
        `latest` naming one of `refused` collects the replies."""
        return OutputChoice(self._pushing_channel, name, refused)

    def _choice(self, output_channel: str | OutputChoice | None) -> OutputChoice:
        if isinstance(output_channel, OutputChoice):
            return output_channel
        return self.output_choice(output_channel)

    def _pushing_channel(self, name: str | None, tracker: Tracker | None) -> OutputChannel | None:
        if name == "latest" and tracker is not None:
            name = tracker.latest_input_channel()
        factory = self.output_channels.get(name or "")
        return factory() if factory is not None else None

    def _reminder_output(
        self, sender_id: str, named: str | None, channel: str | None
    ) -> OutputChannel | None:
        """The channel `named` in the turn that set the reminder, as Rasa sends a reminder to
        the channel of that turn; else (a turn whose messages were only returned, or a channel
        that cannot push) the conversation's own `channel`. A conversation on a channel that
        cannot push (REST) falls back to the callback or socket.io channel; never to
        Rocket.Chat, whose room is read from the conversation id, which a REST client
        chooses."""
        for name in (named or "", channel or "", "callback", "socketio"):
            factory = self.output_channels.get(name)
            output = factory() if factory is not None else None
            if output is not None:
                return output
        return None

    # -- NLU --------------------------------------------------------------------------------
    def parse(self, text: str, message_id: str | None = None) -> dict[str, Any]:
        model = self.model()
        result = self.processor.parse(model, text, message_id)
        return result

    # -- trackers ---------------------------------------------------------------------------
    async def tracker(self, sender_id: str, all_sessions: bool = True) -> Tracker:
        """A conversation's tracker; a new one gets session-start events that are not saved."""
        tracker = await self._tracker(sender_id, all_sessions, create=True)
        assert tracker is not None
        return tracker

    async def stored_tracker(self, sender_id: str, all_sessions: bool = True) -> Tracker | None:
        """`tracker`, or None for a conversation the store does not hold (its one load, not
        under the conversation's lock, tells: for read-only routes)."""
        return await self._tracker(sender_id, all_sessions, create=False)

    async def _tracker(self, sender_id: str, all_sessions: bool, create: bool) -> Tracker | None:
        model = self.model()
        defaults = model.domain.slot_defaults()
        repo = self.processor.trackers
        tracker = await (repo.load_all if all_sessions else repo.load)(sender_id, defaults)
        if tracker is None:
            if not create:
                return None
            tracker = Tracker(sender_id, defaults)
        if not tracker.events:
            await self.processor.update_session(tracker, model, None, only_if_empty=True)
            stamp_model_ids(tracker.events, model)
        return tracker

    async def exists(self, sender_id: str) -> bool:
        return await self.processor.trackers.store.load(sender_id) is not None

    async def append_events(
        self,
        sender_id: str,
        events: list[Event],
        execute_side_effects: bool = False,
        output_channel: str | OutputChoice | None = None,
    ) -> Tracker:
        model = self.model()
        processor = self.processor
        async with processor.lock_store.lock(sender_id):
            tracker = await processor.tracker_for(sender_id, model)
            start = tracker.begin_turn(model.model_id, model.assistant_id)
            starts_session = (
                len(events) >= 2
                and isinstance(events[0], ActionExecuted)
                and events[0].action_name == ACTION_SESSION_START
                and isinstance(events[1], SessionStarted)
            )
            if not starts_session:
                await processor.update_session(tracker, model, None, only_if_empty=True)
            # Reminder events stored as applied (see `mark_applied`): the timers of every
            # process obey them. Those only recorded neither schedule nor cancel, as in Rasa:
            # without the marks they may come with (copied from stored events).
            # A reminder the cap refuses is stored as only recorded (see `Admission`).
            admission = processor.reminders.admission(sender_id)
            if len(events) > OFF_LOOP_EVENTS:
                # A bulk POST: marked (10-20 ms of CPU for 100,000 events) and folded onto a
                # copy in a thread (100,000 events held the loop 30-40 ms), as the tracker may
                # be the hot one other requests read meanwhile; the copy becomes the hot
                # tracker when saved.
                tracker = await asyncio.to_thread(
                    _marked_and_folded, tracker, events, execute_side_effects, admission
                )
            else:
                mark_posted(events, execute_side_effects, admission)
                await tracker.update_many_off_loop(events)  # (a long one's rewind: a thread)
            processor.reminders.log_refused(sender_id, admission.refused)
            await processor.save(tracker, start, model)
            if execute_side_effects:
                output = self.output_channel(output_channel, tracker)
                await processor.execute_side_effects(tracker, events, output)
            return tracker

    async def replace_events(self, sender_id: str, events: list[Event]) -> Tracker:
        model = self.model()
        async with self.processor.lock_store.lock(sender_id):
            defaults = model.domain.slot_defaults()
            # A bulk PUT: folded off the event loop.
            tracker = await off_loop_for(events, Tracker, sender_id, defaults, events)
            broker = self.processor.broker
            offset, previous = 0, None
            if broker is not None:
                # Rasa's save publishes the events past the stored session's length: all of a
                # new conversation's, the tail of a longer list, none of a shorter one. They
                # are chained after the last one published before (the stored session's).
                # Items Rasa leaves out of trackers (`topic`) are not in its stored session.
                stored = [
                    d
                    for d in await self.processor.trackers.store.load(sender_id) or ()
                    if not left_out_by_rasa(d)
                ]
                if stored:
                    offset, previous = len(stored), dict(stored[-1])
            await self.processor.trackers.replace(tracker)
            if broker is not None and len(tracker.events) > offset:
                dicts = await dicts_of(tracker.events[offset:])  # a bulk PUT: off the loop
                before = await dicts_of(same_time_run(tracker.events, offset))
                await broker.publish(sender_id, dicts, previous, before)
            return tracker

    async def add_message(
        self,
        sender_id: str,
        text: str,
        parse_data: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> Tracker:
        """Appends a user message with its NLU parse, without predicting (POST .../messages)."""
        model = self.model()
        check_text_length(text)
        processor = self.processor
        async with processor.lock_store.lock(sender_id):
            tracker = await processor.tracker_for(sender_id, model)
            start = tracker.begin_turn(model.model_id, model.assistant_id)
            await processor.update_session(tracker, model, None)
            message_id = message_id or new_message_id()
            parsed = dict(parse_data or await processor.parse_text(model, text, message_id))
            parsed.setdefault("metadata", {})
            tracker.update(UserUttered(text=text, parse_data=parsed, message_id=message_id))
            await processor.extract_slots(tracker, model, None)
            await processor.save(tracker, start, model)
            return tracker

    async def predict(self, sender_id: str) -> dict[str, Any]:
        """Scores of every action for the next step, without running any (POST .../predict)."""
        async with self.scored(sender_id, create=True) as scored:
            assert scored is not None  # an unknown conversation is created
            body, tracker = scored
            body["tracker"] = tracker.current_state()
            return body

    @asynccontextmanager
    async def scored(
        self, sender_id: str, create: bool = False
    ) -> AsyncIterator[tuple[dict[str, Any], Tracker] | None]:
        """`predict`'s body without its tracker, and the tracker, under the conversation's
        lock until the block ends: the caller writes the tracker out (off the loop when it
        is long) before another turn can change it. None for an unknown conversation unless
        `create` (its one load, under the lock, tells). The prediction runs on the loop, as
        a turn's do (tens of microseconds); a long conversation's states are folded in a
        thread first, as for a turn. NoDialogueModel on an NLU-only model."""
        model = self.model()
        model.check_predicts()
        processor = self.processor
        async with processor.lock_store.lock(sender_id):
            defaults = model.domain.kept_slot_defaults
            tracker = await processor.trackers.load(sender_id, defaults)
            if tracker is None:
                if not create:
                    yield None
                    return
                tracker = Tracker(sender_id, defaults)
            start = tracker.begin_turn(model.model_id, model.assistant_id)
            await processor.update_session(tracker, model, None)
            await processor.save(tracker, start, model)
            if len(tracker.events) > OFF_LOOP_EVENTS:
                await fold_states_off_loop(tracker, model, processor.cut_off_folds)
            yield _scores(model, processor.predict_next(tracker, model)), tracker

    async def execute_action(
        self,
        sender_id: str,
        name: str,
        policy: str | None = None,
        confidence: float | None = None,
        output_channel: str | OutputChoice | None = None,
        create: bool = True,
    ) -> tuple[Tracker, list[dict[str, Any]]]:
        """Runs the action; UnknownConversation unless `create` (told under the lock)."""
        model = self.model()
        if not model.domain.is_known_action(name):
            raise InvalidEvent(f"The action '{clipped(name)}' does not exist in the domain.")
        return await self.processor.execute_action(
            sender_id,
            name,
            model,
            None,
            policy,
            confidence,
            output_for=self._choice(output_channel),
            create=create,
        )

    async def trigger_intent(
        self,
        sender_id: str,
        intent: str,
        entities: Any = None,
        output_channel: str | OutputChoice | None = None,
    ) -> tuple[Tracker, list[dict[str, Any]]]:
        model = self.model()
        if entities is None:
            entities = []
        if isinstance(entities, dict):
            entities = [{"entity": k, "value": v} for k, v in entities.items()]
        return await self.processor.trigger_intent(
            sender_id,
            intent,
            entities,
            model,
            None,
            output_for=self._choice(output_channel),
        )

    def scores_for(self, tracker: Tracker) -> dict[str, Any]:
        """`predict`'s body without its tracker, for a conversation stored nowhere (POST
        /model/predict)."""
        model = self.model()
        model.check_predicts()
        return _scores(model, self.processor.predict_next(tracker, model))


def _scores(model: DialogueModel, prediction: Any) -> dict[str, Any]:
    """Rasa's predict response without its tracker."""
    names = model.domain.action_names_or_texts
    probabilities = prediction.probabilities or [0.0] * len(names)
    pairs = sorted(
        ((name, float(p)) for name, p in zip(names, probabilities, strict=False)),
        key=lambda pair: (-pair[1], pair[0]),
    )
    scores = [{"action": name, "score": score} for name, score in pairs]
    return {
        "scores": scores,
        "policy": prediction.policy_name,
        "confidence": prediction.confidence,
    }


def _marked_and_folded(
    tracker: Tracker, events: list[Event], applied: bool, admission: Admission
) -> Tracker:
    """A copy of `tracker` with `events` posted to it, their reminder events marked (see
    `mark_posted`): a bulk POST's, in a thread."""
    mark_posted(events, applied, admission)
    return tracker.extended(events)
