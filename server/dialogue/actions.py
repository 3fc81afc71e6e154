"""Actions: Rasa's default actions, response actions, retrieval actions and remote actions.

Each action turns the current tracker into a list of events; bot messages are BotUttered
events, which the processor delivers to the output channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from server.dialogue.domain import Domain
from server.dialogue.nlg import bot_data, message_problem, response_id, uttered
from server.dialogue.slot_extraction import (
    VALIDATE_SLOT_MAPPINGS,
    extract_slots,
    extraction_steps,
)
from server.dialogue.slots import REQUESTED_SLOT, SESSION_STARTED_METADATA
from server.errors import ActionError
from server.trackers.events import (
    ACTION_LISTEN,
    ACTION_SESSION_START,
    OFF_LOOP_EVENTS,
    ActionExecuted,
    ActiveLoop,
    BotUttered,
    Event,
    Restarted,
    SessionStarted,
    SlotSet,
    UserUtteranceReverted,
    UserUttered,
    event_from_dict,
    off_loop_for,
    off_loop_if_long,
)
from server.trackers.freeing import release_off_loop
from server.trackers.tracker import EventVerbosity, Tracker, applied_events

logger = logging.getLogger(__name__)


class ActionServer(Protocol):
    """What the actions need from an action server client."""

    async def run(
        self,
        action_name: str,
        sender_id: str,
        tracker_state: dict,
        domain: dict | None,
        action_properties: dict | None = None,
    ) -> dict: ...


class ResponseEndpoint(Protocol):
    """An external NLG server."""

    async def generate(
        self, response: str, tracker_state: dict, output_channel: str, /, **kwargs: Any
    ) -> dict | None: ...


@dataclass
class ActionContext:
    """Everything an action may use while it runs."""

    tracker: Tracker
    domain: Domain
    output_channel: str | None = None
    action_server: ActionServer | None = None
    nlg_endpoint: ResponseEndpoint | None = None
    model_metadata: dict[str, Any] = field(default_factory=dict)
    # How the policies read the user's message, while the first action they predicted after
    # it runs: logged before that action's own event, and in the tracker the action server
    # gets, as Rasa sends it (its policy events are in that tracker).
    featurization: Event | None = None

    # Positional-only: an action server's template arguments may have any name ("self" too).
    async def generate(self, response: str, /, **kwargs: Any) -> BotUttered | None:
        """A BotUttered for a domain response (or from the NLG endpoint), or None."""
        if self.nlg_endpoint is None:
            return self.render(response, **kwargs)
        channel = self.output_channel or "collector"
        kwargs["response_id"] = response_id(self.domain, response, self.tracker.slots, channel)
        state = await self.sent_state(_full_state)
        try:
            message = await self.nlg_endpoint.generate(response, state, channel, **kwargs)
        finally:
            let_go_of_events(state)
        return _uttered(response, message)

    def render(self, response: str, /, **kwargs: Any) -> BotUttered | None:
        """`generate` from the domain's responses (no NLG endpoint): without a coroutine."""
        if kwargs:
            said = uttered(self.domain, response, self.tracker.slots, self.output_channel, **kwargs)
        else:  # (a turn's response: a plain call, not one unpacking an empty dict)
            said = uttered(self.domain, response, self.tracker.slots, self.output_channel)
        if said is None:
            return None
        text, data, metadata = said
        # By position, the metadata set after: a class called with a keyword gets a dict.
        bot = BotUttered(text, data)
        bot.metadata = metadata
        return bot

    async def sent_state(self, write: Callable[[Tracker], dict[str, Any]]) -> dict[str, Any]:
        """`write(tracker)` (the tracker's JSON) with `featurization` at its end, as Rasa sends
        the tracker an action runs on to the action server and the NLG server: the turn's
        events already with the model's ids in their metadata, as they are then stored."""
        tracker = self.tracker
        featurization = self.featurization
        if featurization is None:
            tracker.stamp_unsaved()
        else:
            tracker.stamp_unsaved(featurization)
        state = await written_out(tracker, write)
        if featurization is not None:
            state["events"].append(featurization.as_dict())
            state["latest_event_time"] = featurization.timestamp
        return state

    async def utter(self, response: str, /, **kwargs: Any) -> list[Event]:
        bot = await self.generate(response, **kwargs)
        return [bot] if bot is not None else []


async def written_out(
    tracker: Tracker, write: Callable[[Tracker], dict[str, Any]]
) -> dict[str, Any]:
    """`write(tracker)`, in a thread for a long conversation. The turn holds the conversation's
    lock, so nothing changes the tracker meanwhile."""
    return await off_loop_for(tracker.events, write, tracker)


def let_go_of_events(state: dict[str, Any]) -> None:
    """Drops the events of a tracker's JSON sent out (`sent_state`), which nothing else
    holds once the call is over: a long list is freed in a thread, a piece at a time. The
    dicts of 100,000 events freed at once held the event loop 17 ms after each call."""
    events = state.pop("events", None)
    if isinstance(events, list) and len(events) > OFF_LOOP_EVENTS:
        release_off_loop(events)


def _full_state(tracker: Tracker) -> dict[str, Any]:
    """The tracker an NLG server gets, as Rasa sends it: every event held."""
    return tracker.current_state(EventVerbosity.ALL)


def _action_state(tracker: Tracker) -> dict[str, Any]:
    """The tracker an action server gets: the current session's events, not the lifetime's."""
    state = tracker.current_state(EventVerbosity.NONE)
    state["events"] = [e.as_dict() for e in tracker.current_session_events()]
    return state


def _uttered(response: str, message: dict[str, Any] | None) -> BotUttered | None:
    if message is None:
        return None
    text, data, metadata = bot_data(message)
    # The response said, whatever `utter_action` the answer holds, set as Rasa sets it: in
    # the place of the answer's own, else after the answer's keys (the same JSON).
    metadata["utter_action"] = response
    return BotUttered(text=text, data=data, metadata=metadata)


class Action:
    """Base of every action."""

    name: str = ""

    async def run(self, ctx: ActionContext) -> list[Event]:
        raise NotImplementedError


class ActionListen(Action):
    name = ACTION_LISTEN

    async def run(self, ctx: ActionContext) -> list[Event]:
        return []


class ActionRestart(Action):
    name = "action_restart"

    async def run(self, ctx: ActionContext) -> list[Event]:
        return [*await ctx.utter("utter_restart"), Restarted()]


class ActionSessionStart(Action):
    """Starts a session: SessionStarted, carried-over slots, then listen."""

    name = ACTION_SESSION_START

    def __init__(self, message_metadata: dict[str, Any] | None = None) -> None:
        # The metadata of the message that starts this session (the processor's start of
        # an expired or new session); None when run otherwise (the execute API, say).
        self.message_metadata = message_metadata

    async def run(self, ctx: ActionContext) -> list[Event]:
        events: list[Event] = [SessionStarted()]
        carried = ctx.domain.session_config.carry_over_slots_to_new_session
        if carried:
            # A long session's walk in a thread (100,000 events held the event loop 0.1 s).
            events += await off_loop_if_long(_carried_slots, ctx.tracker.events)
        # The metadata of the message starting this session (unlike Rasa, kept when the
        # slots are not carried over); an earlier session's, or one a client set through
        # the events API, only with the other slots.
        started = ctx.tracker.get_slot(SESSION_STARTED_METADATA) if carried else None
        if self.message_metadata:
            started = self.message_metadata
        if started is not None:
            events.append(SlotSet(key=SESSION_STARTED_METADATA, value=started))
        events.append(ActionExecuted(action_name=ACTION_LISTEN))
        return events


def _carried_slots(events: list[Event]) -> list[SlotSet]:
    """The slot events of the applied `events` a new session starts with, as copies."""
    return [
        # A metadata of its own: the model's ids stamped on this copy must not reach the
        # earlier session's event (stored without them).
        SlotSet(key=event.key, value=event.value, metadata=dict(event.metadata))
        for event in applied_events(events)
        if isinstance(event, SlotSet) and event.key != SESSION_STARTED_METADATA
    ]


class ActionDefaultFallback(Action):
    name = "action_default_fallback"

    async def run(self, ctx: ActionContext) -> list[Event]:
        return [*await ctx.utter("utter_default"), UserUtteranceReverted()]


class ActionDeactivateLoop(Action):
    name = "action_deactivate_loop"

    async def run(self, ctx: ActionContext) -> list[Event]:
        return [ActiveLoop(name=None), SlotSet(key=REQUESTED_SLOT, value=None)]


class ActionBack(Action):
    name = "action_back"

    async def run(self, ctx: ActionContext) -> list[Event]:
        return [*await ctx.utter("utter_back"), UserUtteranceReverted(), UserUtteranceReverted()]


class ActionRevertFallbackEvents(Action):
    """Removes the fallback turn(s) so the conversation goes on as if they never happened."""

    name = "action_revert_fallback_events"

    async def run(self, ctx: ActionContext) -> list[Event]:
        return revert_fallback_events(ctx.tracker)


def revert_fallback_events(tracker: Tracker) -> list[Event]:
    """Events that undo a two-stage fallback and re-apply the clarified user message."""
    last_user = tracker.last_user_event()
    if last_user is None:
        return []
    # Undo the clarification and the original unclear message, then replay the clarified one.
    return [
        UserUtteranceReverted(),
        UserUtteranceReverted(),
        ActionExecuted(action_name=ACTION_LISTEN),
        UserUttered(
            text=last_user.text,
            parse_data=dict(last_user.parse_data),
            input_channel=last_user.input_channel,
            message_id=last_user.message_id,
            metadata=dict(last_user.metadata),
        ),
    ]


class ActionDefaultAskAffirmation(Action):
    """Asks whether the user meant the most likely intent (the first fallback stage)."""

    name = "action_default_ask_affirmation"

    async def run(self, ctx: ActionContext) -> list[Event]:
        intent = _intent_to_affirm(ctx.tracker.latest_message.parse_data) or "out_of_scope"
        bot = None
        # Only a question the domain words (a response, or an `utter_` action it lists for the
        # NLG server): an NLG server is not asked for names the project never gave, as Rasa
        # asks it for none here.
        for name in (f"utter_ask_affirm_{intent}", "utter_ask_affirmation"):
            if name in ctx.domain.responses or name in ctx.domain.user_actions:
                bot = await ctx.generate(name, intent=intent)
                if bot is not None:
                    break
        if bot is None:
            bot = BotUttered(
                text=f"Did you mean '{intent}'?",
                data={
                    "buttons": [
                        {"title": "Yes", "payload": f"/{intent}"},
                        {"title": "No", "payload": "/out_of_scope"},
                    ]
                },
                metadata={"utter_action": "action_default_ask_affirmation"},
            )
        return [bot]


def _intent_to_affirm(parse_data: dict[str, Any]) -> str | None:
    """The message's intent, as in Rasa, or after `nlu_fallback` the second of its ranking
    (Rasa's `intent_ranking[1]`, the first being the fallback). Clients' rankings are
    checked where they arrive; a stored one (from before those checks, or another tool) may
    be anything, and a second entry that is no intent leaves the message's own intent
    (where Rasa fails with a traceback)."""
    intent = parse_data.get("intent")
    name = intent.get("name") if isinstance(intent, dict) else None
    if name != "nlu_fallback":
        return name if isinstance(name, str) else None
    ranking = parse_data.get("intent_ranking")
    second = ranking[1] if isinstance(ranking, list) and len(ranking) > 1 else None
    ranked = second.get("name") if isinstance(second, dict) else None
    return ranked if isinstance(ranked, str) else name


class ActionDefaultAskRephrase(Action):
    name = "action_default_ask_rephrase"

    async def run(self, ctx: ActionContext) -> list[Event]:
        return await ctx.utter("utter_ask_rephrase")


class ActionUnlikelyIntent(Action):
    name = "action_unlikely_intent"

    async def run(self, ctx: ActionContext) -> list[Event]:
        return []


class ActionExtractSlots(Action):
    """Fills slots from the latest user message by the domain's mappings, the custom
    mappings' actions and `action_validate_slot_mappings` (see `slot_extraction_events`).
    Each turn does this in the processor; run by name (the execute API), it returns the same
    events, as in Rasa."""

    name = "action_extract_slots"

    async def run(self, ctx: ActionContext) -> list[Event]:
        if ctx.action_server is None:
            return list(extract_slots(ctx.tracker, ctx.domain))
        return await slot_extraction_events(ctx)


async def slot_extraction_events(ctx: ActionContext) -> list[Event]:
    """The events that fill slots from the latest user message, as Rasa's
    `action_extract_slots` makes them: the domain's mappings and the custom mappings'
    actions in slot order (`extraction_steps`), each action run on `ctx.tracker` as it was
    before the message's slots were extracted; then, when the domain lists it,
    `action_validate_slot_mappings` on that tracker with the slots so filled at its end.
    Its events come first, then the slots it did not set. Only `slot` and `bot` events of
    these actions count; a failure is logged and changes nothing. Unlike Rasa, which drops
    them, the custom mappings' messages are kept (said first when there is a validation)."""
    extracted: list[Event] = []
    for step in extraction_steps(ctx.tracker, ctx.domain):
        if isinstance(step, str):
            extracted += await _mapping_action_events(step, ctx)
        else:
            extracted.append(step)
    if VALIDATE_SLOT_MAPPINGS not in ctx.domain.user_actions:
        return extracted
    candidates = [e for e in extracted if isinstance(e, SlotSet)]
    # rasa-sdk validates the trailing `slot` events. `extended`, not `copy`: no fold of the
    # whole session again at every message.
    probe = ctx.tracker.extended(candidates)
    validated = await _mapping_action_events(VALIDATE_SLOT_MAPPINGS, replace(ctx, tracker=probe))
    checked = {e.key for e in validated if isinstance(e, SlotSet)}
    said = [e for e in extracted if isinstance(e, BotUttered)]
    return [*said, *validated, *(e for e in candidates if e.key not in checked)]


async def activation_slots(ctx: ActionContext) -> list[SlotSet]:
    """The slot events of `action_extract_slots` run again as a form activates (`ctx.tracker`
    ends with its ActiveLoop), as Rasa's form does: mappings conditioned on the form fill
    from the message that activates it, and custom mappings' actions and
    `action_validate_slot_mappings` run again, seeing the form active. As in Rasa, only
    their slot events count: what they say was said at the message's own extraction."""
    if ctx.action_server is None:
        return extract_slots(ctx.tracker, ctx.domain)
    events = await slot_extraction_events(ctx)
    return [e for e in events if isinstance(e, SlotSet)]


async def _mapping_action_events(name: str, ctx: ActionContext) -> list[Event]:
    """The `slot` and `bot` events of one slot-mapping action; none when it fails."""
    try:
        result_events = await RemoteAction(name).run(ctx)
    except ActionError as exc:
        logger.error("%s failed, no slot filled by it: %s", name, exc)
        return []
    kept: list[Event] = [e for e in result_events if isinstance(e, SlotSet | BotUttered)]
    if len(kept) < len(result_events):
        logger.warning("%s returned events other than slot and bot events; they are ignored", name)
    return kept


class ResponseAction(Action):
    """Utters a domain response (`utter_*`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def run(self, ctx: ActionContext) -> list[Event]:
        if ctx.nlg_endpoint is None and type(ctx) is ActionContext:  # no coroutine to await
            return self.respond(ctx)
        bot = await ctx.generate(self.name)
        if bot is not None:
            return [bot]
        if ctx.nlg_endpoint is not None:
            return _no_message_from_nlg(self.name)
        return self._no_variation(ctx.domain)

    def respond(self, ctx: ActionContext) -> list[Event]:
        """`run` from the domain's responses (no NLG endpoint), without a coroutine: a turn
        runs its response actions so."""
        bot = ctx.render(self.name)
        return [bot] if bot is not None else self._no_variation(ctx.domain)

    def _no_variation(self, domain: Domain) -> list[Event]:
        """Nothing said, and why, when the domain's responses gave no message."""
        if self.name in domain.responses:
            logger.warning("response '%s' has no variation that fits this conversation", self.name)
        else:
            logger.warning(
                "the domain has no response '%s' and no NLG server is configured to write it",
                self.name,
            )
        return []


class RetrievalAction(Action):
    """Utters the response the ResponseSelector chose for a retrieval intent (`utter_faq`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def run(self, ctx: ActionContext) -> list[Event]:
        parse_data = ctx.tracker.latest_message.parse_data
        response = _selected_response(parse_data, self.name)
        name = full_retrieval_name(parse_data, self.name)
        if name is not None:
            bot = await ctx.generate(name)
            if bot is not None:
                return [bot]
            if ctx.nlg_endpoint is not None:  # its answer is the message, none is none
                return _no_message_from_nlg(name)
        variations = response.get("responses")
        if isinstance(variations, list) and variations and message_problem(variations[0]) is None:
            text, data, metadata = bot_data(dict(variations[0]))
            return [BotUttered(text=text, data=data, metadata={"utter_action": self.name})]
        return []


def _no_message_from_nlg(response: str) -> list[Event]:
    """Nothing said, and why, when the NLG server answered no message for `response`."""
    logger.warning(
        "the NLG server gave no message for response '%s' (an empty answer, or null): "
        "nothing is said",
        response,
    )
    return []


def full_retrieval_name(parse_data: dict[str, Any], action_name: str) -> str | None:
    """The response a retrieval action (`utter_faq`) utters after this parse, as Rasa names
    it: `utter_faq/ask_name`, from the response selector's choice; None without one."""
    response = _selected_response(parse_data, action_name)
    key = response.get("intent_response_key") or response.get("template_name")
    if not isinstance(key, str):
        return None
    return key if key.startswith("utter_") else f"utter_{key}"


def _selected_response(parse_data: dict[str, Any], action_name: str) -> dict[str, Any]:
    """What the response selector chose for the action's retrieval intent, or {}: also when
    the parse data (a client's, given to /messages or /tracker/events) is not in Rasa's shape,
    which used to make `execute` a 500."""
    selector = parse_data.get("response_selector")
    if not isinstance(selector, dict):
        return {}
    chosen = selector.get(action_name[len("utter_") :]) or selector.get("default")
    response = chosen.get("response") if isinstance(chosen, dict) else None
    return response if isinstance(response, dict) else {}


class EndToEndAction(Action):
    """An e2e bot text used as an action: it is said as it is."""

    def __init__(self, text: str) -> None:
        self.name = text

    async def run(self, ctx: ActionContext) -> list[Event]:
        return [BotUttered(text=self.name, data={})]


class RemoteAction(Action):
    """A custom action run by the action server (rasa-sdk protocol)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def call(self, ctx: ActionContext) -> dict[str, Any]:
        if ctx.action_server is None:
            raise ActionError(
                f"Failed to execute custom action '{self.name}': no action_endpoint is configured"
            )
        # The client drops the domain itself when selective domain is on and the action
        # does not need it (`send_domain: true`, a `validate_...` action).
        props = {"send_domain": self.name in ctx.domain.actions_needing_domain}
        state = await ctx.sent_state(_action_state)
        try:
            return await ctx.action_server.run(
                self.name,
                ctx.tracker.sender_id,
                state,
                ctx.domain.as_dict(),
                action_properties=props,
            )
        finally:
            let_go_of_events(state)

    async def run(self, ctx: ActionContext) -> list[Event]:
        result = await self.call(ctx)
        return await events_from_action_result(ctx, result)


async def events_from_action_result(ctx: ActionContext, result: dict[str, Any]) -> list[Event]:
    """Bot messages first (rendered when they name a response), then the action's events."""
    messages: list[tuple[str | None, dict[str, Any], dict[str, Any]]] = []
    for response in result.get("responses") or []:
        response = dict(response)
        template = response.pop("response", None) or response.pop("template", None)
        # Only the parts with a value, as Rasa: rasa-sdk sends `buttons: []`, `custom: {}`...
        # with every message, and a bot event reads `null` for a part it does not have.
        messages.append((template or None, response, {k: v for k, v in response.items() if v}))
    generated = iter(
        await _generate_all(ctx, [(t, response) for t, response, _ in messages if t is not None])
    )
    events: list[Event] = []
    for template, _, parts in messages:
        if template is None:
            text, data, metadata = bot_data(parts)
            events.append(BotUttered(text=text, data=data, metadata=metadata))
            continue
        bot = next(generated)
        if bot is not None:
            events.append(_with_parts(bot, parts) if parts else bot)
        elif ctx.nlg_endpoint is not None:
            _no_message_from_nlg(template)
        else:
            # As in Rasa, nothing is said; unlike Rasa, the log says why.
            logger.warning(
                "an action server named the response '%s', which %s: nothing is said",
                template,
                "has no variation that fits this conversation"
                if template in ctx.domain.responses
                else "the domain does not have",
            )
    for d in result.get("events") or []:
        events.append(event_from_dict(d))
    return events


async def _generate_all(
    ctx: ActionContext, requests: list[tuple[str, dict[str, Any]]]
) -> list[BotUttered | None]:
    """The messages for an action's named responses, in order. An NLG server is asked for all
    of them at once (Rasa asks one after the other: a round trip each, the conversation
    waiting); the first failure in order is raised, as one after the other would."""
    if ctx.nlg_endpoint is None or len(requests) < 2:
        return [await ctx.generate(template, **kwargs) for template, kwargs in requests]
    results = await asyncio.gather(
        *(ctx.generate(template, **kwargs) for template, kwargs in requests),
        return_exceptions=True,
    )
    messages: list[BotUttered | None] = []
    for outcome in results:
        if isinstance(outcome, BaseException):
            raise outcome
        messages.append(outcome)
    return messages


def _with_parts(bot: BotUttered, parts: dict[str, Any]) -> BotUttered:
    """A rendered response with the action's own parts, as Rasa merges them: its buttons
    after the response's, every other part in place of the response's."""
    message = {k: v for k, v in bot.data.items() if v is not None}
    if "image" in parts and "attachment" in message and message["attachment"] == bot.data["image"]:
        del message["attachment"]  # bot_data's copy of the response's image, not its own
    message["text"] = bot.text
    message.update(bot.metadata)
    buttons = parts.pop("buttons", None)
    if buttons:
        message["buttons"] = [*(message.get("buttons") or []), *buttons]
    message.update(parts)
    text, data, metadata = bot_data(message)
    return BotUttered(text=text, data=data, metadata=metadata)


_DEFAULTS: dict[str, type[Action]] = {
    cls.name: cls
    for cls in (
        ActionListen,
        ActionRestart,
        ActionSessionStart,
        ActionDefaultFallback,
        ActionDeactivateLoop,
        ActionBack,
        ActionRevertFallbackEvents,
        ActionDefaultAskAffirmation,
        ActionDefaultAskRephrase,
        ActionUnlikelyIntent,
        ActionExtractSlots,
    )
}


def default_action(name: str) -> Action | None:
    cls = _DEFAULTS.get(name)
    return cls() if cls else None
