"""Routes under /conversations/{conversation_id}: tracker, events, story, execute,
trigger_intent, predict and messages.

Every route checks auth first (a `user` JWT reaches only its own conversation), then that a
model is loaded (409), then that the conversation exists where Rasa requires it (404).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.exceptions import HTTPException

from server.api.errors import HELP_EVENTS, ApiError, bad_request
from server.api.openapi import error_responses, json_request, json_response
from server.api.query import FirstValueRoute, bool_arg, event_verbosity, time_arg
from server.api.request_body import read_json_body, read_json_object
from server.api.schemas import (
    EVENT_LIST,
    EVENT_OR_EVENTS,
    ActionRequest,
    ConversationUpdate,
    IntentTriggerRequest,
    MessageRequest,
    PredictResult,
    Tracker,
)
from server.api.services import Services, services_of
from server.api.tracker_response import around_prediction, freed_after_sending, tracker_response
from server.auth import require_auth
from server.auth.dependency import forbid
from server.channels.rocketchat_ids import room_of
from server.dialogue.agent import Agent, OutputChoice
from server.dialogue.story_export import conversation_story
from server.errors import (
    CorruptConversation,
    InvalidConversationId,
    InvalidEvent,
    InvalidNluData,
    UnknownConversation,
    brief,
    clipped,
    told_apart,
)
from server.tasks import said_when_ended, to_its_end
from server.trackers.events import (
    OFF_LOOP_EVENTS,
    BotUttered,
    Event,
    UserUttered,
    events_from_list,
    off_loop_for,
    off_loop_if_long,
)
from server.trackers.incoming import check_entities, check_incoming_events
from server.trackers.incoming import check_parse_data as check_nlu_parse_data
from server.trackers.store import check_conversation_id
from server.trackers.tracker import EventVerbosity


class AnyTextConvertor(PathConvertor):
    """Starlette's `path`, line breaks included: a conversation whose id holds a line feed
    (the REST webhook serves such a sender) was a 404 on every conversation route, since
    `path`'s `.*` stops at a line break."""

    regex = r"[\s\S]*"


register_url_convertor("anytext", AnyTextConvertor())
PREFIX = "/conversations/{conversation_id:anytext}"
_EVENTS_FORMAT_ERROR = (
    "Failed to validate the events format. For more information about the format visit "
    "the docs. Error: "
)


logger = logging.getLogger(__name__)


def _logged_at_end(route: str, conversation_id: str) -> Callable[[asyncio.Future[Any]], None]:
    """Says how a turn ended that the response timeout had cut off (its client got 503)."""

    def failed(error: Exception) -> None:
        logger.error(
            "%s of %s, cut off by the response timeout, failed: %s: %s",
            route,
            conversation_id,
            type(error).__name__,
            error,
            exc_info=error,
        )

    return said_when_ended(logger, failed, "%s of %s", route, conversation_id)


_TRACKER_DOC = json_response(Tracker, "The conversation's tracker.")
_TURN_DOC = json_response(ConversationUpdate, "The tracker after the turn and the bot messages.")


def _turn_answer(
    output: OutputChoice, messages: list[dict[str, Any]]
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The body of an `execute` or `trigger_intent` answer around the tracker's state: with
    the bot's messages when they were collected, as in Rasa; not when the turn's channel only
    pushed them (a client would show them twice)."""
    if output.answers_messages:
        return lambda state: {"tracker": state, "messages": messages}
    return lambda state: {"tracker": state}


def parse_events(body: Any, allow_single: bool = True) -> list[Event]:
    """Events from a request body; raises Rasa's 400 for anything malformed."""
    if body is None or (isinstance(body, dict) and not allow_single):
        what = "an event or a list of events" if allow_single else "a list of events"
        raise ApiError(
            400, "BadRequest", f"{_EVENTS_FORMAT_ERROR}the body must be {what}.", None, HELP_EVENTS
        )
    try:
        events = events_from_list(body)
    except InvalidEvent as exc:
        raise ApiError(
            400, "BadRequest", f"{_EVENTS_FORMAT_ERROR}{exc}", None, HELP_EVENTS
        ) from None
    if not events and allow_single:
        # Rasa's 400 (its catch-all makes it a 500); a PUT of no events empties a conversation.
        raise ApiError(
            400,
            "BadRequest",
            "Couldn't extract a proper event from the request body.",
            {"parameter": "", "in": "body"},
        )
    check_events(events)
    return events


async def read_events(body: Any, allow_single: bool = True) -> list[Event]:
    """`parse_events`, in a thread for a long list."""
    if isinstance(body, list) and len(body) > OFF_LOOP_EVENTS:
        return await asyncio.to_thread(parse_events, body, allow_single)
    return parse_events(body, allow_single)


def check_events(events: list[Event]) -> None:
    """The checks of events sent by a client (server/trackers/incoming.py): a 400."""
    try:
        check_incoming_events(events)
    except InvalidNluData as exc:
        raise bad_request(str(exc), exc.parameter, "body") from None


def check_parse_data(parse_data: Any) -> None:
    """A message's `parse_data` as a client sent it: a 400 when it breaks Rasa's schema."""
    try:
        check_nlu_parse_data(parse_data)
    except InvalidNluData as exc:
        raise bad_request(str(exc), exc.parameter, "body") from None


def _check_conversation_id(conversation_id: str) -> None:
    if not conversation_id:
        # `/conversations//tracker` (an unset variable in a client's URL): no route, as in
        # Rasa, rather than a conversation named "".
        raise HTTPException(404)
    try:
        check_conversation_id(conversation_id)
    except InvalidConversationId as exc:
        raise bad_request(str(exc), "conversation_id", "path") from None


def _conversation_not_found() -> ApiError:
    return ApiError(404, "Not found", "Conversation ID not found.")


async def _ensure_exists(agent: Agent, conversation_id: str) -> None:
    if not await agent.exists(conversation_id):
        raise _conversation_not_found()


def _required_name(body: dict[str, Any], what: str) -> str:
    """The body's `name` of an intent or action: a 400 naming it when absent or empty, as
    in Rasa, and when it is no string (Rasa's spec types it so; Rasa looks it up, and
    answers trigger_intent's 404 or execute's 500)."""
    name = body.get("name")
    if not name:
        raise bad_request(f"Name of the {what} not provided in request body.", "name", "body")
    if not isinstance(name, str):
        raise bad_request(f"'name' must be the name of an {what} (a string).", "name", "body")
    return name


def _prediction_of(body: dict[str, Any]) -> tuple[str | None, float | None]:
    """`execute`'s `policy` and `confidence`, which the action's event records: a 400 for
    what it cannot hold (Rasa stores any value, and every later tracker breaks its schema;
    a confidence beyond a double was our 500)."""
    policy = body.get("policy")
    if policy is not None and not isinstance(policy, str):
        raise bad_request("'policy' must be the name of a policy.", "policy", "body")
    confidence = body.get("confidence")
    if confidence is None:
        return policy, None
    try:
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
            raise TypeError
        number = float(confidence)
    except (TypeError, OverflowError):
        raise bad_request("'confidence' must be a number.", "confidence", "body") from None
    return policy, number


# The keys by which a custom bot message names where a channel sends it, when not to its
# conversation: socket.io's `room`, Rocket.Chat's `channel`, `room_id` and `roomId`.
RECIPIENT_KEYS = ("room", "channel", "room_id", "roomId")
ROCKETCHAT_KEYS = frozenset(("channel", "room_id", "roomId"))


async def _check_own_recipients(
    request: Request, conversation_id: str, events: list[Event]
) -> None:
    """Refuses (403) the bot messages posted with their side effects by a `user` JWT that
    name another recipient than its own conversation: the role reaches that one only. Rasa
    sends such a custom payload where it names (another visitor's socket.io session, any
    Rocket.Chat channel the bot may post in); an admin's still goes there."""
    principal = getattr(request.state, "principal", None)
    if principal is not None and principal.is_admin:
        return
    # A bulk POST is read in a thread, as it is folded.
    named = await off_loop_if_long(_other_recipient, events, conversation_id)
    if named is not None:
        key, value = named
        who = getattr(principal, "username", None)
        why = (
            f"role 'user' of {brief(who)} may not send a bot message to {key} {brief(value)} "
            f"(its conversation is {brief(conversation_id)}"
        )
        if isinstance(value, str) and brief(value) == brief(conversation_id):
            why += f"; they differ: {told_apart(value, conversation_id)}"  # cut alike
        raise forbid(request, why + ")")


def _other_recipient(events: list[Event], conversation_id: str) -> tuple[str, Any] | None:
    """The first (key, value) by which a bot event's custom payload names a recipient other
    than `conversation_id`, else None."""
    # A Rocket.Chat conversation (`<room id>:<user id>`) is sent to in its room, as its
    own_room = room_of(conversation_id)
    for event in events:
        if not isinstance(event, BotUttered):
            continue
        custom = event.message().get("custom")
        if not isinstance(custom, dict):
            continue
        for key in RECIPIENT_KEYS:
            value = custom.get(key)
            if not value or value == conversation_id:
                continue
            if key in ROCKETCHAT_KEYS and value == own_room:
                continue
            return key, value
    return None


ROCKETCHAT = "rocketchat"


def _output_of(
    request: Request, agent: Agent, conversation_id: str, output_channel: str | None
) -> OutputChoice:
    """The request's `output_channel`. Rocket.Chat sends a conversation's messages to the
    room its id names (`<room id>:<user id>`), and Rocket.Chat takes a room's name there too
    (`support`, `#support`), or a user (`@bob`, a user id: a direct message): a `user` JWT
    whose conversation id has not that form would make the bot post in any room or to any
    user, so `output_channel=rocketchat` is refused (403) for it, and `latest` naming
    Rocket.Chat (an event it posted may say so) collects the replies instead."""
    principal = getattr(request.state, "principal", None)
    if (principal is not None and principal.is_admin) or _is_rocketchat_id(conversation_id):
        return agent.output_choice(output_channel)
    if output_channel == ROCKETCHAT:
        who = getattr(principal, "username", None)
        raise forbid(
            request,
            f"role 'user' of {brief(who)} may not send to Rocket.Chat from conversation "
            f"{brief(conversation_id)} (not a Rocket.Chat conversation id, "
            "<room id>:<user id>)",
        )
    return agent.output_choice(output_channel, refused=(ROCKETCHAT,))


async def _check_channel_claims(
    request: Request, conversation_id: str, events: list[Event]
) -> None:
    """Refuses (403) a `user` event naming Rocket.Chat as its `input_channel` posted by a
    `user` JWT whose conversation id is no Rocket.Chat id: the conversation's channel is
    where its reminders and `output_channel=latest` go, and Rocket.Chat would post them in
    the room or to the user that id names (see `_output_of`)."""
    principal = getattr(request.state, "principal", None)
    if (principal is not None and principal.is_admin) or _is_rocketchat_id(conversation_id):
        return
    if await off_loop_if_long(_claims_rocketchat, events):
        who = getattr(principal, "username", None)
        raise forbid(
            request,
            f"role 'user' of {brief(who)} may not store a user message from Rocket.Chat in "
            f"conversation {brief(conversation_id)} (not a Rocket.Chat conversation id, "
            "<room id>:<user id>)",
        )


def _claims_rocketchat(events: list[Event]) -> bool:
    return any(isinstance(e, UserUttered) and e.input_channel == ROCKETCHAT for e in events)


def _is_rocketchat_id(conversation_id: str) -> bool:
    """Whether a conversation id has the form the Rocket.Chat channel gives its
    conversations: `<room id>:<user id>`, neither empty, the room no `#name` or `@user`."""
    room, colon, user = conversation_id.partition(":")
    return bool(room and colon and user) and not room.startswith(("#", "@"))


async def _checked_id(conversation_id: str, request: Request) -> None:
    _check_conversation_id(conversation_id)
    if "\ufffd" in conversation_id and not _sent_as_utf8(request.scope.get("raw_path")):
        # The server decoded bytes that are no UTF-8 (`%FF`) to U+FFFD: `%FF` and `%FE`
        # would be one conversation, named neither way.
        raise bad_request(
            "The conversation id is not UTF-8 text once its %-escapes are decoded.",
            "conversation_id",
            "path",
        )


def _sent_as_utf8(raw_path: bytes | None) -> bool:
    """Whether the request's path, %-escapes decoded, is UTF-8 (the conversation id is its
    only part that varies); True when the server gave no raw path."""
    if raw_path is None:
        return True
    try:
        unquote_to_bytes(raw_path.split(b"?", 1)[0]).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def conversations_router() -> APIRouter:
    """The conversation routes; services come from `app.state.services` per request."""
    router = APIRouter(
        route_class=FirstValueRoute,
        prefix=PREFIX,
        tags=["Tracker"],
        dependencies=[Depends(require_auth("conversation_id")), Depends(_checked_id)],
    )

    @router.get(
        "/tracker",
        operation_id="getConversationTracker",
        summary="Retrieve a conversations tracker",
        responses={200: _TRACKER_DOC, **error_responses(400, 409)},
    )
    async def retrieve_tracker(
        conversation_id: str,
        include_events: str | None = None,
        until: str | None = None,
        services: Services = Depends(services_of),
    ) -> JSONResponse:
        services.agent.model()
        verbosity = event_verbosity(include_events)
        until_time = time_arg("until", until)
        # The state and the NONE/APPLIED events depend only on the current session; reading
        # the whole history is needed only for older events or time travel.
        needs_history = until_time is not None or verbosity in (
            EventVerbosity.ALL,
            EventVerbosity.AFTER_RESTART,
        )
        tracker = await services.agent.tracker(conversation_id, all_sessions=needs_history)
        own = [tracker] if needs_history else []  # (all sessions: a tracker of its own)
        if until_time is not None:
            tracker = await off_loop_for(tracker.events, tracker.until, until_time)
            own.append(tracker)
        return freed_after_sending(await tracker_response(tracker, verbosity), own)

    @router.post(
        "/tracker/events",
        operation_id="addConversationTrackerEvents",
        summary="Append events to a tracker",
        openapi_extra=json_request(EVENT_OR_EVENTS, "One event or a list of events."),
        responses={200: _TRACKER_DOC, **error_responses(400, 409)},
    )
    async def append_events(
        conversation_id: str,
        request: Request,
        include_events: str | None = None,
        output_channel: str | None = None,
        execute_side_effects: str | None = None,
        services: Services = Depends(services_of),
    ) -> JSONResponse:
        services.agent.model()
        body = await read_json_body(request)
        events = await read_events(body)
        verbosity = event_verbosity(include_events)
        side_effects = bool_arg("execute_side_effects", execute_side_effects)
        await _check_channel_claims(request, conversation_id, events)
        if side_effects:
            await _check_own_recipients(request, conversation_id, events)
        output: str | OutputChoice | None = output_channel  # sent to only with side effects
        if side_effects:
            output = _output_of(request, services.agent, conversation_id, output_channel)
        tracker = await services.agent.append_events(
            conversation_id,
            events,
            execute_side_effects=side_effects,
            output_channel=output,
        )
        # The tracker is the hot one: only the parsed body is this request's own.
        own = [body] if isinstance(body, list) else []
        return freed_after_sending(await tracker_response(tracker, verbosity), lists=own)

    @router.put(
        "/tracker/events",
        operation_id="replaceConversationTrackerEvents",
        summary="Replace a trackers events",
        openapi_extra=json_request(EVENT_LIST, "The conversation's new events."),
        responses={200: _TRACKER_DOC, **error_responses(400, 409)},
    )
    async def replace_events(
        conversation_id: str,
        request: Request,
        include_events: str | None = None,
        services: Services = Depends(services_of),
    ) -> JSONResponse:
        services.agent.model()
        body = await read_json_body(request)
        events = await read_events(body, allow_single=False)
        verbosity = event_verbosity(include_events)
        await _check_channel_claims(request, conversation_id, events)
        tracker = await services.agent.replace_events(conversation_id, events)
        response = await tracker_response(tracker, verbosity)
        return freed_after_sending(response, [tracker], [body, events])

    @router.get(
        "/story",
        operation_id="getConversationStory",
        summary="Retrieve an end-to-end story corresponding to a conversation",
        response_class=PlainTextResponse,
        responses={
            200: {
                "description": "The conversation as a YAML story.",
                "content": {"text/yml": {"schema": {"type": "string"}}},
            },
            **error_responses(400, 404, 409),
        },
    )
    async def retrieve_story(
        conversation_id: str,
        until: str | None = None,
        all_sessions: str | None = None,
        services: Services = Depends(services_of),
    ) -> PlainTextResponse:
        agent = services.agent
        agent.model()
        try:
            every_session = bool_arg("all_sessions", all_sessions)
            until_time = time_arg("until", until)
        except ApiError:
            await _ensure_exists(agent, conversation_id)  # an unknown conversation's 404 first
            raise
        # One load, not under the conversation's lock (a read, as in Rasa): it tells an
        # unknown conversation too.
        tracker = await agent.stored_tracker(conversation_id, all_sessions=True)
        if tracker is None:
            raise _conversation_not_found()
        # Written in a thread when long: 100,000 events held the loop 2.5 s. The tracker
        # (all sessions) is this request's own.
        try:
            story = await off_loop_for(
                tracker.events, conversation_story, tracker, every_session, until_time
            )
        except RecursionError:  # another process's event (before: a traceback)
            raise CorruptConversation(
                f"Conversation '{conversation_id}' holds an event nested too deeply to write "
                "as a story"
            ) from None
        return freed_after_sending(PlainTextResponse(story), [tracker])

    @router.post(
        "/execute",
        operation_id="executeConversationAction",
        summary="Run an action in a conversation",
        deprecated=True,
        openapi_extra=json_request(ActionRequest),
        responses={200: _TURN_DOC, **error_responses(400, 404, 409)},
    )
    async def execute_action(
        conversation_id: str,
        request: Request,
        include_events: str | None = None,
        output_channel: str | None = None,
        services: Services = Depends(services_of),
    ) -> JSONResponse:
        agent = services.agent
        model = agent.model()
        try:
            body = await read_json_object(request, "No action name given in the request body.")
            name = _required_name(body, "action")
            verbosity = event_verbosity(include_events)
            if not model.domain.is_known_action(name):
                message = f"The action '{clipped(name)}' does not exist in the domain."
                raise ApiError(404, "NotFound", message)
            policy, confidence = _prediction_of(body)
        except ApiError:
            await _ensure_exists(agent, conversation_id)  # an unknown conversation's 404 first
            raise
        try:
            # The one load, under the conversation's lock, tells an unknown conversation.
            output = _output_of(request, agent, conversation_id, output_channel)
            # Cut off by the response timeout, the action runs on and is stored whole.
            tracker, messages = await to_its_end(
                agent.execute_action(
                    conversation_id,
                    name,
                    policy=policy,
                    confidence=confidence,
                    output_channel=output,
                    create=False,
                ),
                _logged_at_end("execute", conversation_id),
            )
        except UnknownConversation:
            raise _conversation_not_found() from None
        return await tracker_response(tracker, verbosity, _turn_answer(output, messages))

    @router.post(
        "/trigger_intent",
        operation_id="triggerConversationIntent",
        summary="Inject an intent into a conversation",
        openapi_extra=json_request(IntentTriggerRequest),
        responses={200: _TURN_DOC, **error_responses(400, 404, 409)},
    )
    async def trigger_intent(
        conversation_id: str,
        request: Request,
        include_events: str | None = None,
        output_channel: str | None = None,
        services: Services = Depends(services_of),
    ) -> JSONResponse:
        agent = services.agent
        model = agent.model()
        body = await read_json_object(request, "No intent name given in the request body.")
        name = _required_name(body, "intent")
        verbosity = event_verbosity(include_events)
        if name not in model.domain.intents:
            raise ApiError(
                404, "NotFound", f"The intent {clipped(name)} does not exist in the domain."
            )
        entities = body.get("entities") or None  # `""`, `0`, `false`: none, as in Rasa
        if entities is not None and not isinstance(entities, (dict, list)):
            raise bad_request(
                "'entities' must be an object of entity values or a list of entities.",
                "entities",
                "body",
            )
        if isinstance(entities, list):
            # They become the user message's entities: Rasa's schema, or every later answer
            # about the conversation breaks it (and slot filling fails on them).
            try:
                check_entities(entities, "entities", "entities")
            except InvalidNluData as exc:
                raise bad_request(str(exc), "entities", "body") from None
        output = _output_of(request, agent, conversation_id, output_channel)
        # Cut off by the response timeout, the turn runs on and is stored whole.
        tracker, messages = await to_its_end(
            agent.trigger_intent(conversation_id, name, entities, output_channel=output),
            _logged_at_end("trigger_intent", conversation_id),
        )
        return await tracker_response(tracker, verbosity, _turn_answer(output, messages))

    @router.post(
        "/predict",
        operation_id="predictConversationAction",
        summary="Predict the next action",
        responses={
            200: json_response(PredictResult, "The scores of the next action."),
            **error_responses(400, 404, 409),
        },
    )
    async def predict(
        conversation_id: str, services: Services = Depends(services_of)
    ) -> JSONResponse:
        agent = services.agent
        agent.model()
        async with agent.scored(conversation_id) as scored:
            if scored is None:
                raise _conversation_not_found()
            body, tracker = scored
            # Written under the lock, as Rasa does: no turn changes the tracker meanwhile.
            return await tracker_response(
                tracker, EventVerbosity.AFTER_RESTART, around_prediction(body, tracker)
            )

    @router.post(
        "/messages",
        operation_id="addConversationMessage",
        summary="Add a message to a tracker",
        openapi_extra=json_request(MessageRequest),
        responses={200: _TRACKER_DOC, **error_responses(400, 409)},
    )
    async def add_message(
        conversation_id: str,
        request: Request,
        include_events: str | None = None,
        services: Services = Depends(services_of),
    ) -> JSONResponse:
        agent = services.agent
        agent.model()
        body = await read_json_object(
            request,
            "No message defined in request body. Add a message to the request body in order "
            "to add it to the tracker.",
        )
        verbosity = event_verbosity(include_events)
        sender = body.get("sender")
        if sender != "user":
            raise bad_request(
                "Currently, only user messages can be passed to this endpoint. Messages of "
                f"sender '{clipped(sender)}' cannot be handled.",
                "sender",
                "body",
            )
        text = body.get("text")
        if not isinstance(text, str):
            raise bad_request("The message needs a 'text' string.", "text", "body")
        parse_data = body.get("parse_data")
        check_parse_data(parse_data)
        message_id = body.get("message_id")
        tracker = await agent.add_message(
            conversation_id,
            text.strip(),  # as Rasa's UserMessage, and our channels
            parse_data,
            message_id=message_id if isinstance(message_id, str) else None,
        )
        return await tracker_response(tracker, verbosity)

    return router
