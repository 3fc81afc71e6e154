"""Loop actions: forms (ask, validate, fill slots) and the two-stage fallback."""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from server.dialogue.actions import (
    Action,
    ActionContext,
    ActionDefaultAskAffirmation,
    RemoteAction,
    activation_slots,
    events_from_action_result,
)
from server.dialogue.slots import REQUESTED_SLOT
from server.errors import ActionRejected
from server.trackers.events import (
    ACTION_LISTEN,
    ActionExecuted,
    ActionExecutionRejected,
    ActiveLoop,
    BotUttered,
    Event,
    SlotSet,
    UserUtteranceReverted,
    UserUttered,
)
from server.trackers.tracker import Tracker, applied_events

if TYPE_CHECKING:
    from server.dialogue.domain import Domain

logger = logging.getLogger(__name__)

TWO_STAGE_FALLBACK = "action_two_stage_fallback"
NLU_FALLBACK = "nlu_fallback"
OUT_OF_SCOPE = "out_of_scope"
ASK_AFFIRMATION = "action_default_ask_affirmation"
ASK_REPHRASE = "action_default_ask_rephrase"
DEFAULT_FALLBACK = "action_default_fallback"


def _slot_candidates(tracker: Tracker, wanted: set[str]) -> list[SlotSet]:
    """The `wanted` slots set since the last user message, each once with its last value,
    in the order first set: Rasa's form so gives them to its validation action (older
    rasa-sdk releases read the first of two events for one slot)."""
    start = len(tracker.events)
    while start and not isinstance(tracker.events[start - 1], UserUttered):
        start -= 1
    values: dict[str, Any] = {}
    for event in tracker.events[start:]:
        if isinstance(event, SlotSet) and event.key in wanted:
            values[event.key] = event.value
    return [SlotSet(key=key, value=value) for key, value in values.items()]


def _sub_context(ctx: ActionContext, events: list[Event]) -> ActionContext:
    """The context of an action a loop runs (its validation, its question): the loop's
    tracker, with how the policies read the message when they predicted the loop after it
    (as Rasa's form passes its own tracker on), then `events`. `extended`, not a `copy`
    folded again: a form's turn does not replay the whole session."""
    more = events if ctx.featurization is None else [ctx.featurization, *events]
    probe = ctx.tracker.extended(more)
    return ActionContext(probe, ctx.domain, ctx.output_channel, ctx.action_server, ctx.nlg_endpoint)


class FormAction(Action):
    """A form: activates, validates the slots the user gave, asks for the next one."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def run(self, ctx: ActionContext) -> list[Event]:
        tracker, domain = ctx.tracker, ctx.domain
        required = domain.required_slots_for_form(self.name)
        events: list[Event] = []
        if tracker.active_loop_name != self.name:
            events.append(ActiveLoop(name=self.name))
            # As in Rasa, the slots are extracted again once the form is active (so
            # `from_trigger_intent` mappings and those conditioned on the form fill); a
            # validation action then gets the required slots filled so far, and the
            # extracted slots it did not set are logged after its events.
            activating = _sub_context(ctx, events)
            extracted = await activation_slots(activating)
            activated = activating.tracker
            activated.update_many(extracted)
            prefilled = [
                SlotSet(key=s, value=activated.get_slot(s))
                for s in required
                if activated.get_slot(s) is not None
            ]
            if f"validate_{self.name}" not in domain.user_actions:
                events += extracted
            else:
                validated = await self._validate(ctx, prefilled, [*events, *extracted])
                checked = {e.key for e in validated if isinstance(e, SlotSet)}
                events += [*validated, *(e for e in extracted if e.key not in checked)]
                if _ends_the_form(validated):
                    # As Rasa: a form its validation action ends as it activates does not
                    # run its turn (no `requested_slot` null of its own), only the loop ends.
                    return [*events, ActiveLoop(name=None)]
        elif tracker.latest_action_name == ACTION_LISTEN and not tracker.is_active_loop_interrupted:
            requested = tracker.get_slot(REQUESTED_SLOT)
            # A slot the validation action asks for beyond the domain's list (rasa-sdk's
            # `required_slots`) is answered like the domain's own.
            wanted = {*required, requested} if isinstance(requested, str) else set(required)
            candidates = _slot_candidates(tracker, wanted)
            validated = await self._validate(ctx, candidates, events)
            filled_any = any(isinstance(e, SlotSet) and e.key != REQUESTED_SLOT for e in validated)
            # As Rasa: an answer is awaited only when a slot was asked for (not "").
            if requested and not candidates and not filled_any:
                if not _rejected(validated):
                    raise ActionRejected(
                        self.name, f"Failed to extract slot {requested} with action {self.name}"
                    )
            events += validated
        else:
            # Back from an unhappy path (or run again in the same turn): nothing to validate,
            # but the validation action may still choose the slot to ask for, as in Rasa.
            events += await self._validate(ctx, [], events)
        if _rejected(events):
            # The validation action rejected the form's turn: other policies choose.
            return events
        return events + await self._next_step(ctx, required, events)

    async def _validate(
        self, ctx: ActionContext, candidates: list[SlotSet], so_far: list[Event]
    ) -> list[Event]:
        validator = f"validate_{self.name}"
        if validator not in ctx.domain.user_actions:
            # As Rasa 3: the message's extraction logged the slots already; the form's run
            # does not log them again.
            return []
        # Without an action server the call fails (an ActionError, as Rasa's "no endpoint is
        # configured"): the form does not take answers its validation action never saw.
        # As Rasa's form, the action sees the slot the form asked for and the form's own
        # execution before the candidates: rasa-sdk validates only the slots set after the
        # last other event, so a slot a custom action set on an unhappy path is not one.
        tracker = ctx.tracker
        asked = tracker.get_slot(REQUESTED_SLOT) if tracker.active_loop_name == self.name else None
        sub = _sub_context(
            ctx,
            [
                *so_far,
                SlotSet(key=REQUESTED_SLOT, value=asked),
                ActionExecuted(action_name=self.name),
                *candidates,
            ],
        )
        result = await RemoteAction(validator).call(sub)
        return await events_from_action_result(sub, result)

    async def _next_step(
        self, ctx: ActionContext, required: list[str], events: list[Event]
    ) -> list[Event]:
        """Asks for the next slot, or ends the form.

        As in Rasa, the validation action decides first: `requested_slot` set to a slot name
        asks for that slot, set to null (or `ActiveLoop(null)`) ends the form; otherwise the
        form asks for the first empty slot of the domain's list."""
        # As Rasa's form, the question sees the form's execution before the events so far.
        sub = _sub_context(ctx, [ActionExecuted(action_name=self.name), *events])
        probe = sub.tracker
        chosen = _last_requested(events)
        if chosen is _UNSET:
            chosen = next((s for s in required if probe.get_slot(s) is None), None)
            if chosen is not None:
                return [
                    SlotSet(key=REQUESTED_SLOT, value=chosen),
                    *await self._ask(sub, chosen),
                ]
        elif isinstance(chosen, str) and probe.active_loop_name == self.name:
            return await self._ask(sub, chosen)
        # As Rasa, the form's own end, even after a validation action's `active_loop: null`.
        return [SlotSet(key=REQUESTED_SLOT, value=None), ActiveLoop(name=None)]

    async def _ask(self, sub: ActionContext, slot: str) -> list[Event]:
        # Rasa's search order: the form's own question before the slot's, each an action
        # before a response. A response the domain lists only as an action (its text on the
        # NLG server) is asked for too, as in Rasa.
        for form_or_slot in (f"{self.name}_{slot}", slot):
            if f"action_ask_{form_or_slot}" in sub.domain.user_actions:
                return await RemoteAction(f"action_ask_{form_or_slot}").run(sub)
            if sub.domain.is_known_action(f"utter_ask_{form_or_slot}"):
                return await sub.utter(f"utter_ask_{form_or_slot}")
        return []


_UNSET = object()


def _last_requested(events: list[Event]) -> Any:
    """The slot the validation action asked for: the value of its last `requested_slot`, None
    when it ended the form (so does `ActiveLoop(null)`), `_UNSET` when it chose nothing. A
    value that is no slot name (an object, a list, `""`, as Rasa reads an empty name)
    chooses nothing."""
    for event in reversed(events):
        if isinstance(event, ActiveLoop) and event.name is None:
            return None
        if isinstance(event, SlotSet) and event.key == REQUESTED_SLOT:
            if event.value is None or (isinstance(event.value, str) and event.value):
                return event.value
            return _UNSET
    return _UNSET


def _ends_the_form(events: list[Event]) -> bool:
    """Whether a validation action's `events` end the form, as Rasa's `is_done` reads them:
    not when they reject the turn; else when their last `requested_slot` is null or their last
    `ActiveLoop` is the loop's end."""
    if _rejected(events):
        return False
    requested = [e for e in events if isinstance(e, SlotSet) and e.key == REQUESTED_SLOT]
    loops = [e for e in events if isinstance(e, ActiveLoop)]
    return bool(requested and requested[-1].value is None) or bool(loops and loops[-1].name is None)


def _rejected(events: list[Event]) -> bool:
    return any(isinstance(e, ActionExecutionRejected) for e in events)


# What each model's domain has had said once (weak: a model swapped out takes its share).
_SAID: weakref.WeakKeyDictionary[Domain, set[str]] = weakref.WeakKeyDictionary()


def _say_once_per_model(domain: Domain, warning: str) -> None:
    """`warning` logged the first time for this model, at debug level after: a mistake of the
    domain is the same at every turn (before, a busy bot logged it at each)."""
    said = _SAID.setdefault(domain, set())
    if warning in said:
        logger.debug("%s", warning)
        return
    said.add(warning)
    logger.warning("%s", warning)


class TwoStageFallbackAction(Action):
    """Ask to affirm the likely intent, then to rephrase, then give up with the default fallback."""

    name = TWO_STAGE_FALLBACK

    async def run(self, ctx: ActionContext) -> list[Event]:
        tracker = ctx.tracker
        if tracker.active_loop_name != self.name:
            return [ActiveLoop(name=self.name), *await _ask_affirmation(ctx)]
        intent = tracker.latest_message.intent_name
        if intent not in (NLU_FALLBACK, OUT_OF_SCOPE):
            return self._clarified(tracker)
        recent = self._recent_intents(tracker)
        # Rasa gives up after two unclear messages in a row, or when the affirmation that
        # followed a rephrase is denied too.
        if recent[:2] == [NLU_FALLBACK, NLU_FALLBACK] or recent[:3] == [
            OUT_OF_SCOPE,
            NLU_FALLBACK,
            OUT_OF_SCOPE,
        ]:
            return await self._give_up(ctx)
        if intent == NLU_FALLBACK:
            return await _ask_affirmation(ctx)
        if ASK_REPHRASE in ctx.domain.overridden_defaults:
            return await RemoteAction(ASK_REPHRASE).run(ctx)
        asked = await ctx.utter("utter_ask_rephrase")
        if not asked:
            # As Rasa: no text of ours, in a language the bot may not speak; the loop waits.
            if ctx.nlg_endpoint is not None:
                why = "the NLG server gave no message for it"
            elif "utter_ask_rephrase" in ctx.domain.responses:
                why = (
                    "the domain's 'utter_ask_rephrase' has no variation that fits this conversation"
                )
            else:
                why = "the domain has no response 'utter_ask_rephrase'"
            _say_once_per_model(
                ctx.domain,
                "the two-stage fallback asks the user to rephrase with 'utter_ask_rephrase': "
                f"{why}, so nothing is said (said once per model)",
            )
        return asked

    def _recent_intents(self, tracker: Tracker) -> list[str | None]:
        """Intents of the user messages of this fallback, latest first, the original last."""
        loop = self._loop_events(tracker)
        intents = [e.intent_name for e in reversed(loop) if isinstance(e, UserUttered)]
        original = self._original_message(tracker)
        if original is not None:
            intents.append(original.intent_name)
        return intents

    @staticmethod
    def _loop_events(tracker: Tracker) -> list[Event]:
        for i in range(len(tracker.events) - 1, -1, -1):
            event = tracker.events[i]
            if isinstance(event, ActiveLoop) and event.name == TWO_STAGE_FALLBACK:
                return tracker.events[i:]
        return []

    def _users_in_loop(self, tracker: Tracker) -> int:
        """How many rewinds take back the fallback: the message that triggered it plus the
        answers since that the applied events still hold once this run is logged. Its
        later runs collapse there (as Rasa's), so that is one, as Rasa logs, unless a run
        was off its happy path (another action answered inside it). Once per fallback,
        walking the tracker's events."""
        applied = applied_events([*tracker.events, ActionExecuted(action_name=self.name)])
        for index in range(len(applied) - 1, -1, -1):
            event = applied[index]
            if isinstance(event, ActiveLoop) and event.name == TWO_STAGE_FALLBACK:
                return 1 + sum(isinstance(e, UserUttered) for e in applied[index:])
        return 1 + sum(isinstance(e, UserUttered) for e in self._loop_events(tracker))

    def _clarified(self, tracker: Tracker) -> list[Event]:
        """Undoes the fallback turns and replays the clarified message.

        When the user affirmed the suggested intent, the message the suggestion was about comes
        back with that intent (and its own text and entities); otherwise the user's latest,
        confidently understood message replaces the unclear one.
        """
        last = tracker.latest_message
        suggested, asked_about = self._last_suggestion(tracker)
        if asked_about is not None and suggested == last.intent_name:
            source = asked_about
            parse_data: dict[str, Any] = dict(asked_about.parse_data)
            parse_data["intent"] = {"name": suggested, "confidence": 1.0}
        else:
            source = last
            parse_data = dict(last.parse_data)
        # As Rasa, the loop is deactivated first (an event-stream reader sees it end), then
        # the fallback's turns are taken back.
        events: list[Event] = [ActiveLoop(name=None)]
        events += [UserUtteranceReverted() for _ in range(self._users_in_loop(tracker))]
        events += [
            ActionExecuted(action_name=ACTION_LISTEN),
            UserUttered(
                text=source.text,
                parse_data=parse_data,
                message_id=source.message_id,
                input_channel=last.input_channel,
                metadata=dict(source.metadata),
            ),
        ]
        return events

    def _last_suggestion(self, tracker: Tracker) -> tuple[str | None, UserUttered | None]:
        """The intent offered by "Did you mean ...?" when that is the question the user answers,
        and the message it was about."""
        loop_start = len(tracker.events) - len(self._loop_events(tracker))
        for i in range(len(tracker.events) - 1, loop_start - 1, -1):
            event = tracker.events[i]
            if not isinstance(event, BotUttered):
                continue
            if not _asks_affirmation(event):
                return None, None  # the user answers a request to rephrase
            buttons = event.data.get("buttons") or []
            payload = str(buttons[0].get("payload") or "") if buttons else ""
            suggested = payload[1:].split("{", 1)[0] if payload.startswith("/") else None
            for earlier in reversed(tracker.events[:i]):
                if isinstance(earlier, UserUttered):
                    return suggested, earlier
            return suggested, None
        return None, None

    def _original_message(self, tracker: Tracker) -> UserUttered | None:
        loop = self._loop_events(tracker)
        start = len(tracker.events) - len(loop)
        for event in reversed(tracker.events[:start]):
            if isinstance(event, UserUttered):
                return event
        return None

    async def _give_up(self, ctx: ActionContext) -> list[Event]:
        if DEFAULT_FALLBACK in ctx.domain.overridden_defaults:
            # The project's own fallback (a handover, say), as in Rasa: the loop ends, then
            # its events, which take back what it chooses to.
            return [ActiveLoop(name=None), *await RemoteAction(DEFAULT_FALLBACK).run(ctx)]
        # As Rasa logs it: the loop ends, then the default fallback's message and rewind.
        events: list[Event] = [ActiveLoop(name=None), *await ctx.utter("utter_default")]
        events += [UserUtteranceReverted() for _ in range(self._users_in_loop(ctx.tracker))]
        return events


async def _ask_affirmation(ctx: ActionContext) -> list[Event]:
    """The fallback's question: the domain's own `action_default_ask_affirmation` when it
    lists one (run on the action server, as in Rasa), else ours."""
    if ASK_AFFIRMATION in ctx.domain.overridden_defaults:
        return await RemoteAction(ASK_AFFIRMATION).run(ctx)
    return await ActionDefaultAskAffirmation().run(ctx)


def _asks_affirmation(bot: BotUttered) -> bool:
    name = str(bot.metadata.get("utter_action") or "")
    return name == ASK_AFFIRMATION or name.startswith("utter_ask_affirm")
