"""Loop actions: forms (ask, validate, fill slots) and the two-stage fallback."""

from __future__ import annotations

from typing import Any

from server.dialogue.actions import (
    Action,
    ActionContext,
    ActionDefaultAskAffirmation,
    RemoteAction,
    events_from_action_result,
)
from server.dialogue.slots import REQUESTED_SLOT
from server.errors import ActionRejected
from server.trackers.events import (
    ACTION_LISTEN,
    ActionExecuted,
    ActiveLoop,
    BotUttered,
    Event,
    SlotSet,
    UserUttered,
    UserUtteranceReverted,
)
from server.trackers.tracker import Tracker

TWO_STAGE_FALLBACK = "action_two_stage_fallback"


def _slot_sets_since_last_user(tracker: Tracker) -> list[SlotSet]:
    found: list[SlotSet] = []
    for event in reversed(tracker.events):
        if isinstance(event, UserUttered):
            break
        if isinstance(event, SlotSet):
            found.append(event)
    return list(reversed(found))


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
            prefilled = [
                SlotSet(key=s, value=tracker.get_slot(s))
                for s in required
                if tracker.get_slot(s) is not None
            ]
            events += await self._validate(ctx, prefilled, events)
        elif tracker.latest_action_name == ACTION_LISTEN:
            candidates = [e for e in _slot_sets_since_last_user(tracker) if e.key in required]
            validated = await self._validate(ctx, candidates, events)
            requested = tracker.get_slot(REQUESTED_SLOT)
            if not candidates and not any(
                isinstance(e, SlotSet) and e.key in required for e in validated
            ):
                if requested is not None:
                    raise ActionRejected(
                        self.name, f"Failed to extract slot {requested} with action {self.name}"
                    )
            events += validated
        return events + await self._next_step(ctx, required, events)

    async def _validate(
        self, ctx: ActionContext, candidates: list[SlotSet], so_far: list[Event]
    ) -> list[Event]:
        validator = f"validate_{self.name}"
        if validator not in ctx.domain.user_actions or ctx.action_server is None:
            return list(candidates) if so_far else []
        probe = ctx.tracker.copy()
        probe.update_many([*so_far, *candidates])
        sub = ActionContext(
            probe, ctx.domain, ctx.output_channel, ctx.action_server, ctx.nlg_endpoint
        )
        result = await RemoteAction(validator).call(sub)
        return await events_from_action_result(sub, result)

    async def _next_step(
        self, ctx: ActionContext, required: list[str], events: list[Event]
    ) -> list[Event]:
        probe = ctx.tracker.copy()
        probe.update_many(events)
        if probe.active_loop_name is None and any(
            isinstance(e, ActiveLoop) and e.name is None for e in events
        ):
            return []  # the validation action deactivated the form
        dynamic = probe.get_slot(REQUESTED_SLOT)
        for slot in required:
            if probe.get_slot(slot) is None:
                return [SlotSet(key=REQUESTED_SLOT, value=slot), *await self._ask(ctx, probe, slot)]
        if dynamic is not None and dynamic not in required and probe.get_slot(dynamic) is None:
            return await self._ask(ctx, probe, dynamic)
        return [ActiveLoop(name=None), SlotSet(key=REQUESTED_SLOT, value=None)]

    async def _ask(self, ctx: ActionContext, probe: Tracker, slot: str) -> list[Event]:
        sub = ActionContext(
            probe, ctx.domain, ctx.output_channel, ctx.action_server, ctx.nlg_endpoint
        )
        for name in (f"action_ask_{self.name}_{slot}", f"action_ask_{slot}"):
            if name in ctx.domain.user_actions:
                return await RemoteAction(name).run(sub)
        for name in (f"utter_ask_{self.name}_{slot}", f"utter_ask_{slot}"):
            if name in ctx.domain.responses:
                return await sub.utter(name)
        return []


class TwoStageFallbackAction(Action):
    """Ask to affirm the likely intent, then to rephrase, then give up with the default fallback."""

    name = TWO_STAGE_FALLBACK

    async def run(self, ctx: ActionContext) -> list[Event]:
        tracker = ctx.tracker
        if tracker.active_loop_name != self.name:
            return [ActiveLoop(name=self.name), *await ActionDefaultAskAffirmation().run(ctx)]
        intent = tracker.latest_message.intent_name
        asked_rephrase = self._asked_rephrase(tracker)
        if intent == "out_of_scope":
            if asked_rephrase:
                return await self._give_up(ctx)
            return await ctx.utter("utter_ask_rephrase") or [
                BotUttered(text="Sorry, could you rephrase that?", data={})
            ]
        if intent == "nlu_fallback":
            if asked_rephrase:
                return await ActionDefaultAskAffirmation().run(ctx)
            return await ctx.utter("utter_ask_rephrase")
        return self._clarified(tracker, affirmed=not asked_rephrase)

    @staticmethod
    def _loop_events(tracker: Tracker) -> list[Event]:
        for i in range(len(tracker.events) - 1, -1, -1):
            event = tracker.events[i]
            if isinstance(event, ActiveLoop) and event.name == TWO_STAGE_FALLBACK:
                return tracker.events[i:]
        return []

    def _asked_rephrase(self, tracker: Tracker) -> bool:
        return any(
            isinstance(e, BotUttered) and e.metadata.get("utter_action") == "utter_ask_rephrase"
            for e in self._loop_events(tracker)
        )

    def _users_in_loop(self, tracker: Tracker) -> int:
        # The message that triggered the fallback plus every answer since.
        return 1 + sum(isinstance(e, UserUttered) for e in self._loop_events(tracker))

    def _clarified(self, tracker: Tracker, affirmed: bool) -> list[Event]:
        last = tracker.latest_message
        original = self._original_message(tracker)
        if affirmed and original is not None:
            text, message_id, metadata = original.text, original.message_id, original.metadata
        else:
            text, message_id, metadata = last.text, last.message_id, last.metadata
        parse_data: dict[str, Any] = dict(last.parse_data)
        if affirmed:
            parse_data["intent"] = {"name": last.intent_name, "confidence": 1.0}
        events: list[Event] = [UserUtteranceReverted() for _ in range(self._users_in_loop(tracker))]
        events += [
            ActionExecuted(action_name=ACTION_LISTEN),
            UserUttered(text=text, parse_data=parse_data, message_id=message_id,
                        input_channel=last.input_channel, metadata=dict(metadata)),
        ]
        return events

    def _original_message(self, tracker: Tracker) -> UserUttered | None:
        loop = self._loop_events(tracker)
        start = len(tracker.events) - len(loop)
        for event in reversed(tracker.events[:start]):
            if isinstance(event, UserUttered):
                return event
        return None

    async def _give_up(self, ctx: ActionContext) -> list[Event]:
        events: list[Event] = [*await ctx.utter("utter_default"), ActiveLoop(name=None)]
        events += [UserUtteranceReverted() for _ in range(self._users_in_loop(ctx.tracker))]
        return events
