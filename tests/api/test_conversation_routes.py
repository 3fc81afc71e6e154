"""The /conversations/{conversation_id}/... routes, each status with its spec-checked body."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from server.dialogue.domain import Domain
from server.dialogue.processor import DialogueModel, stamp_model_ids
from server.trackers.events import BotUttered, Event
from tests.api.rasa_spec import RasaSpec
from tests.api.recorded_examples import recorded_examples
from tests.serving import serving

TRACKER = "/conversations/{conversation_id}/tracker"
EVENTS = "/conversations/{conversation_id}/tracker/events"
EXECUTE = "/conversations/{conversation_id}/execute"
TRIGGER = "/conversations/{conversation_id}/trigger_intent"
PREDICT = "/conversations/{conversation_id}/predict"
MESSAGES = "/conversations/{conversation_id}/messages"
WEBHOOK = "/webhooks/rest/webhook"

GOODBYE_EVENTS = [
    {
        "event": "user",
        "timestamp": 4102444800.0,
        "text": "/goodbye",
        "parse_data": {"intent": {"name": "goodbye", "confidence": 1.0}, "entities": []},
    },
    {"event": "action", "name": "utter_goodbye", "timestamp": 4102444801.0},
]
NEW_SESSION = [
    {"event": "action", "name": "action_session_start", "timestamp": 4102444900.0},
    {"event": "session_started", "timestamp": 4102444900.0},
]


async def _two_sessions(client: httpx.AsyncClient, conversation_id: str) -> None:
    """A conversation of two sessions: Rasa numbers its stories only when there are two."""
    await client.post(f"/conversations/{conversation_id}/tracker/events", json=GOODBYE_EVENTS)
    await client.post(f"/conversations/{conversation_id}/tracker/events", json=NEW_SESSION)


TRACKER_KEYS = [
    "sender_id",
    "slots",
    "latest_message",
    "latest_event_time",
    "followup_action",
    "paused",
    "events",
    "latest_input_channel",
    "active_loop",
    "latest_action",
    "latest_action_name",
]


def check(spec: RasaSpec, response: httpx.Response, path: str, method: str, status: int) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    spec.validate(body, path, method, status)
    return body


async def test_tracker_of_a_new_conversation_starts_a_session(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    body = check(rasa_spec, await client.get("/conversations/nobody/tracker"), TRACKER, "get", 200)
    assert list(body) == TRACKER_KEYS
    assert body["sender_id"] == "nobody"
    assert [e["event"] for e in body["events"]] == ["action", "session_started", "action"]
    assert body["latest_action_name"] == "action_listen"


async def test_tracker_include_events_and_until(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    await client.post("/conversations/u1/tracker/events", json=GOODBYE_EVENTS)
    full = check(
        rasa_spec,
        await client.get("/conversations/u1/tracker?include_events=ALL"),
        TRACKER,
        "get",
        200,
    )
    none = check(
        rasa_spec,
        await client.get("/conversations/u1/tracker?include_events=none"),
        TRACKER,
        "get",
        200,
    )
    assert none["events"] is None and none["latest_action_name"] == "utter_goodbye"
    applied = (await client.get("/conversations/u1/tracker?include_events=APPLIED")).json()
    assert [e["event"] for e in applied["events"]] == ["action", "user", "action"]
    user_time = full["events"][-2]["timestamp"]
    early = (await client.get(f"/conversations/u1/tracker?until={user_time}")).json()
    assert early["events"][-1]["event"] == "user"
    assert len(early["events"]) == len(full["events"]) - 1
    empty = (await client.get("/conversations/u1/tracker?until=")).json()
    assert len(empty["events"]) == len(full["events"])


@pytest.mark.parametrize("until", ["soon", "2026-12-05T01:00:00", "NaN"])
async def test_an_until_that_is_no_timestamp_is_a_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, until: str
) -> None:
    # Before (and in Rasa, with a warning in its log): today's whole tracker, as if the
    # client had not asked for an earlier one; NaN gave an empty conversation.
    await client.post("/conversations/u6/tracker/events", json=GOODBYE_EVENTS)
    tracker = await client.get(f"/conversations/u6/tracker?until={until}")
    story = await client.get(f"/conversations/u6/story?until={until}")
    body = check(rasa_spec, tracker, TRACKER, "get", 400)
    assert body["details"] == {"parameter": "until", "in": "query"}
    assert "Should be a Unix timestamp" in body["message"]
    assert story.status_code == 400


async def test_tracker_bad_include_events_is_rasas_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    body = check(
        rasa_spec,
        await client.get("/conversations/u1/tracker?include_events=BAD"),
        TRACKER,
        "get",
        400,
    )
    assert body["message"] == (
        "Invalid parameter value for 'include_events'. Should be one of NONE, APPLIED, "
        "AFTER_RESTART, ALL"
    )
    assert body["details"] == {"parameter": "include_events", "in": "query"}


async def test_conversation_id_may_contain_slashes_and_is_url_decoded(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/conversations/team/a%20b/tracker/events", json=GOODBYE_EVENTS)
    body = (await client.get("/conversations/team/a b/tracker?include_events=NONE")).json()
    assert body["sender_id"] == "team/a b"
    assert body["latest_action_name"] == "utter_goodbye"


async def test_a_conversation_id_with_a_line_break_reaches_its_routes(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """Before, 404 "Requested URL ... not found" on every conversation route, while the REST
    webhook served such a sender (found by schemathesis)."""
    await client.post("/webhooks/rest/webhook", json={"sender": "line\nbreak", "message": "hi"})
    tracker = check(
        rasa_spec, await client.get("/conversations/line%0Abreak/tracker"), TRACKER, "get", 200
    )
    assert tracker["sender_id"] == "line\nbreak"
    assert tracker["latest_message"]["intent"]["name"] == "greet"
    events = await client.put("/conversations/%0A/tracker/events", json=GOODBYE_EVENTS)
    assert check(rasa_spec, events, EVENTS, "put", 200)["sender_id"] == "\n"


@pytest.mark.parametrize("encoded", ["%FF", "%C3%28", "%ED%A0%80", "ab%E2%82"])
async def test_a_conversation_id_that_is_not_utf8_once_decoded_is_a_400(
    client: httpx.AsyncClient, encoded: str
) -> None:
    """Before, the bytes that are no UTF-8 became U+FFFD: `/conversations/%FF/...` and
    `/conversations/%FE/...` were one conversation, named neither way (found by probing)."""
    for method, route in [("get", "tracker"), ("post", "tracker/events"), ("get", "story")]:
        response = await client.request(method, f"/conversations/{encoded}/{route}", json=[])
        assert response.status_code == 400, (route, response.text)
        body = response.json()
        assert body["reason"] == "BadRequest"
        assert "UTF-8" in body["message"]
        assert body["details"] == {"parameter": "conversation_id", "in": "path"}
    # U+FFFD itself, sent as its UTF-8 bytes, is an id like any other.
    tracker = await client.get("/conversations/%EF%BF%BD/tracker")
    assert tracker.status_code == 200
    assert tracker.json()["sender_id"] == "\ufffd"


async def test_append_one_event_or_a_list(client: httpx.AsyncClient, rasa_spec: RasaSpec) -> None:
    one = await client.post(
        "/conversations/u2/tracker/events",
        json={"event": "bot", "text": "injected bot utterance"},
    )
    body = check(rasa_spec, one, EVENTS, "post", 200)
    assert body["events"][-1]["event"] == "bot"
    assert body["events"][0]["name"] == "action_session_start"
    listed = await client.post(
        "/conversations/u2/tracker/events?include_events=NONE", json=GOODBYE_EVENTS
    )
    body = check(rasa_spec, listed, EVENTS, "post", 200)
    assert body["events"] is None
    assert body["latest_message"]["intent"]["name"] == "goodbye"


@pytest.mark.parametrize(
    "content",
    [
        b'{"event": "no_such_event"}',
        b"[1, 2]",
        b"{not json",
        b"",
        b'{"event": "slot"}',
        b"[]",
        # Rasa's schema: a boolean. Before, stored as `bool("false")`, true: the action
        # hidden from the rules' history.
        b'{"event": "action", "name": "utter_greet", "hide_rule_turn": "false"}',
        # Before, stored as `"confidence": true`: every later tracker broke the schema.
        b'{"event": "action", "name": "utter_greet", "confidence": true}',
    ],
    ids=[
        "unknown-event",
        "not-objects",
        "malformed-json",
        "empty",
        "slot-without-name",
        "no-events",
        "hide-rule-turn-a-string",
        "confidence-a-boolean",
    ],
)
async def test_append_bad_events_is_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, content: bytes
) -> None:
    response = await client.post(
        "/conversations/u1/tracker/events",
        content=content,
        headers={"Content-Type": "application/json"},
    )
    body = check(rasa_spec, response, EVENTS, "post", 400)
    assert body["reason"] == "BadRequest"


@pytest.mark.parametrize(
    ("event", "flag"),
    [
        ({"event": "loop_interrupted", "is_interrupted": "false"}, "is_interrupted"),
        ({"event": "form_validation", "validate": "false"}, "validate"),
        (
            {"event": "user_featurization", "use_text_for_featurization": "false"},
            "use_text_for_featurization",
        ),
        (
            {
                "event": "reminder",
                "intent": "greet",
                "date_time": "2030-01-01",
                "kill_on_user_msg": "false",
            },
            "kill_on_user_msg",
        ),
    ],
)
async def test_a_flag_that_is_no_boolean_is_refused_as_hide_rule_turn_is(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, event: dict[str, Any], flag: str
) -> None:
    """Before, read as its truth value: `"false"` as true (a `GET .../tracker` showed `true`,
    an interrupted form, a reminder killed by the next message). Rasa's schema leaves these
    out and keeps the string, which then acts as true all the same."""
    conversation = f"flag-{flag}"
    response = await client.post(EVENTS.format(conversation_id=conversation), json=[event])

    body = check(rasa_spec, response, EVENTS, "post", 400)
    assert f"'{flag}' of a '{event['event']}' event must be true or false" in body["message"]
    tracker = await client.get(f"/conversations/{conversation}/tracker")
    stored = [e["event"] for e in tracker.json()["events"]]
    assert stored == ["action", "session_started", "action"]  # its start, by this GET


BAD_NLU_EVENTS = {
    "entity-without-value": {"event": "entities", "entities": [{"entity": "city", "start": 0}]},
    "entity-offset-not-integer": {
        "event": "entities",
        "entities": [{"entity": "city", "value": "Paris", "start": "0", "end": 5}],
    },
    "parse-text-not-string": {
        "event": "user",
        "text": "hi",
        "parse_data": {"intent": {"name": "greet", "confidence": 1.0}, "text": {}},
    },
    "entity-group-not-string": {
        "event": "entities",
        "entities": [{"entity": "city", "value": "Paris", "group": {}}],
    },
    "ranked-intent-name-not-string": {
        "event": "user",
        "text": "hi",
        "parse_data": {"intent": {"name": "greet"}, "intent_ranking": [{"name": 3}]},
    },
    "ranked-intent-confidence-null": {
        "event": "user",
        "text": "hi",
        "parse_data": {"intent_ranking": [{"name": "greet", "confidence": None}]},
    },
    "message-id-not-string": {"event": "user", "text": "hi", "message_id": {}},
    "reminder-date-not-a-date": {"event": "reminder", "intent": "greet", "date_time": "soon"},
    "ranking-null": {"event": "user", "text": "hi", "parse_data": {"intent_ranking": None}},
    "ranking-not-intents": {
        "event": "user",
        "text": "hi",
        "parse_data": {"intent": {"name": "greet"}, "intent_ranking": ["greet"]},
    },
    "user-entity-without-name": {
        "event": "user",
        "text": "hi",
        "parse_data": {"intent": {"name": "greet"}, "entities": [{"value": "x"}]},
    },
    "parse-message-id-not-string": {
        "event": "user",
        "text": "hi",
        "message_id": "m1",
        "parse_data": {"message_id": 3},
    },
    "parse-metadata-not-object": {"event": "user", "text": "hi", "parse_data": {"metadata": "m"}},
    "text-tokens-not-offsets": {
        "event": "user",
        "text": "hi",
        "parse_data": {"text_tokens": ["x"]},
    },
    "response-selector-not-object": {
        "event": "user",
        "text": "hi",
        "parse_data": {"response_selector": [None, None]},
    },
}


@pytest.mark.parametrize("event", BAD_NLU_EVENTS.values(), ids=BAD_NLU_EVENTS.keys())
async def test_events_with_malformed_nlu_data_are_400_and_not_stored(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, event: dict[str, Any]
) -> None:
    """Before, these were stored, and every later answer about the conversation broke the
    API's schema (found by schemathesis with more examples)."""
    listen = {"event": "action", "name": "action_listen"}
    await client.post("/conversations/nlu-bad/tracker/events", json=[listen])
    before = (await client.get("/conversations/nlu-bad/tracker")).json()["events"]
    for method in ("post", "put"):
        response = await client.request(
            method, "/conversations/nlu-bad/tracker/events", json=[event]
        )
        check(rasa_spec, response, EVENTS, method, 400)
    after = await client.get("/conversations/nlu-bad/tracker")
    assert after.json()["events"] == before
    predicted = await client.post("/model/predict", json=[event])
    assert predicted.status_code == 400


async def test_a_rejection_without_the_actions_name_is_accepted_as_rasa_does(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """Rasa's spec gives the event no 'name', and Rasa stores it with a null one."""
    rejected = {"event": "action_execution_rejected", "timestamp": 1.0}
    response = await client.post("/conversations/rejected/tracker/events", json=[rejected])
    body = check(rasa_spec, response, EVENTS, "post", 200)
    stored = body["events"][-1]
    assert stored["event"] == "action_execution_rejected"
    assert (stored["name"], stored["policy"], stored["confidence"]) == (None, None, None)
    assert (await client.post("/conversations/rejected/predict")).status_code == 200


async def test_entities_as_rasa_writes_them_are_accepted(client: httpx.AsyncClient) -> None:
    entities = [
        {"entity": "city", "value": "Paris", "start": 0, "end": 5, "confidence_entity": 0.9},
        {"entity": "city", "value": {"any": "json"}, "role": None, "group": None},
    ]
    response = await client.post(
        "/conversations/nlu-good/tracker/events",
        json=[{"event": "entities", "entities": entities}],
    )
    assert response.status_code == 200
    assert response.json()["events"][-1]["entities"] == entities


async def test_added_entities_join_the_latest_message_once(client: httpx.AsyncClient) -> None:
    # Rasa adds an entity the message does not hold already; before, a repeat was added again.
    paris = {"entity": "city", "value": "Paris"}
    rome = {"entity": "city", "value": "Rome"}
    user = {"event": "user", "text": "Paris", "parse_data": {"entities": [paris]}}
    response = await client.post(
        EVENTS.format(conversation_id="ents"),
        json=[user, {"event": "entities", "entities": [paris, rome, rome]}],
    )
    assert response.json()["latest_message"]["entities"] == [paris, rome]


async def test_entities_with_no_action_before_them_are_ignored_as_in_rasa(
    client: httpx.AsyncClient,
) -> None:
    # Rasa adds entities only when the latest action is action_listen; none at all is not.
    rome = {"entity": "city", "value": "Rome"}
    user = {"event": "user", "text": "Paris", "parse_data": {"entities": []}}
    response = await client.put(
        EVENTS.format(conversation_id="ents-first"),
        json=[user, {"event": "entities", "entities": [rome]}],
    )
    assert response.status_code == 200
    assert response.json()["latest_message"]["entities"] == []


@pytest.mark.parametrize("name", [["call"], {"who": "Ada"}], ids=["list", "object"])
async def test_a_reminder_named_by_a_list_or_an_object_is_a_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, name: Any
) -> None:
    # Before, posted with its side effects it was a 500 (the scheduler keys reminders by name)
    # after the event was appended; Rasa fails there too (it hashes the name).
    reminder = {"event": "reminder", "intent": "greet", "date_time": "2030-01-01", "name": name}
    for query in ("?execute_side_effects=true", ""):
        url = EVENTS.format(conversation_id="named") + query
        response = await client.post(url, json=[reminder])
        body = check(rasa_spec, response, EVENTS, "post", 400)
        assert body["message"] == "a reminder's 'name' must be a string, not a list or an object"
    events = (await client.get("/conversations/named/tracker")).json()["events"]
    assert [e for e in events if e["event"] == "reminder"] == []


async def test_a_reminders_date_time_is_written_as_rasa_writes_it(
    client: httpx.AsyncClient,
) -> None:
    # Rasa parses `date_time` and writes it back with isoformat(); before, a consumer got the
    # text as posted ("2030-01-01 10:00", a "Z" suffix).
    sent = ["2030-01-01 10:00", "2030-01-01T10:00:00Z", "2030-01-01"]
    reminders = [{"event": "reminder", "intent": "greet", "date_time": d} for d in sent]
    response = await client.post(EVENTS.format(conversation_id="when"), json=reminders)
    written = [e["date_time"] for e in response.json()["events"] if e["event"] == "reminder"]
    assert written == ["2030-01-01T10:00:00", "2030-01-01T10:00:00+00:00", "2030-01-01T00:00:00"]


async def test_replace_events(client: httpx.AsyncClient, rasa_spec: RasaSpec) -> None:
    await client.post("/conversations/u3/tracker/events", json=GOODBYE_EVENTS)
    replaced = await client.put("/conversations/u3/tracker/events", json=GOODBYE_EVENTS[:1])
    body = check(rasa_spec, replaced, EVENTS, "put", 200)
    assert [e["event"] for e in body["events"]] == ["user"]
    single = await client.put("/conversations/u3/tracker/events", json=GOODBYE_EVENTS[0])
    check(rasa_spec, single, EVENTS, "put", 400)


async def test_story_is_a_yaml_test_story(client: httpx.AsyncClient) -> None:
    await client.post("/conversations/u4/tracker/events", json=GOODBYE_EVENTS)
    response = await client.get("/conversations/u4/story")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == (
        'version: "3.1"\n'
        "stories:\n"
        "- story: u4\n"
        "  steps:\n"
        "  - intent: goodbye\n"
        "    user: |-\n"
        "      /goodbye\n"
        "  - action: utter_goodbye\n"
    )
    sessions = (await client.get("/conversations/u4/story?all_sessions=true")).text
    assert sessions == response.text  # one session: not numbered, as in Rasa
    await client.post("/conversations/u4/tracker/events", json=NEW_SESSION)
    sessions = (await client.get("/conversations/u4/story?all_sessions=true")).text
    assert "- story: u4, story 1\n" in sessions and "- story: u4, story 2\n" in sessions


async def test_boolean_query_parameters_are_true_false_or_a_400(
    client: httpx.AsyncClient,
) -> None:
    await _two_sessions(client, "u5")
    sessions = await client.get("/conversations/u5/story?all_sessions=True")
    one = await client.get("/conversations/u5/story?all_sessions=0")
    # Before: 1 and yes were read as false, as Rasa reads them: one session, no side effects.
    wrong = await client.get("/conversations/u5/story?all_sessions=1")
    side_effects = await client.post(
        "/conversations/u5/tracker/events?execute_side_effects=yes", json=GOODBYE_EVENTS
    )
    after = (await client.get("/conversations/u5/tracker")).json()
    assert "- story: u5, story 1\n" in sessions.text
    assert "story 1" not in one.text
    for refused, name in ((wrong, "all_sessions"), (side_effects, "execute_side_effects")):
        assert refused.status_code == 400
        assert refused.json()["message"] == (
            f"Invalid parameter value for '{name}'. Should be true or false."
        )
        assert refused.json()["details"] == {"parameter": name, "in": "query"}
    assert len(after["events"]) == len(GOODBYE_EVENTS) + 3 + len(NEW_SESSION)  # none appended


async def test_a_repeated_query_parameter_is_read_by_its_first_value(
    client: httpx.AsyncClient,
) -> None:
    """As Rasa (Sanic's `request.args.get`) reads it; before, the last value was read."""
    await _two_sessions(client, "u8")
    story = await client.get("/conversations/u8/story?all_sessions=true&all_sessions=false")
    assert "- story: u8, story 1\n" in story.text
    tracker = await client.get("/conversations/u8/tracker?include_events=ALL&include_events=NONE")
    assert len(tracker.json()["events"]) == len(GOODBYE_EVENTS) + 3 + len(NEW_SESSION)
    bad_first = await client.get("/conversations/u8/tracker?include_events=x&include_events=ALL")
    assert bad_first.status_code == 400


async def test_an_empty_query_parameter_is_absent_as_in_rasa(client: httpx.AsyncClient) -> None:
    """Sanic drops blank query values (a client's unset variable, `?include_events=$V`):
    Rasa reads the default, or the first value given. Before: a 400."""
    await client.post("/conversations/u8/tracker/events", json=GOODBYE_EVENTS)
    default = (await client.get("/conversations/u8/tracker")).json()
    blank = await client.get("/conversations/u8/tracker?include_events=")
    assert blank.status_code == 200, blank.text
    assert blank.json() == default
    none = (await client.get("/conversations/u8/tracker?include_events=NONE")).json()
    blank_first = await client.get("/conversations/u8/tracker?include_events=&include_events=NONE")
    assert blank_first.json() == none
    appended = await client.post(
        "/conversations/u8/tracker/events?include_events=&output_channel=",
        json={"event": "action", "name": "action_listen"},
    )
    assert appended.status_code == 200, appended.text


async def test_story_of_unknown_conversation_is_404(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    response = await client.get("/conversations/nobody-at-all/story")
    assert response.status_code == 404
    body = response.json()
    rasa_spec.validate(body, TRACKER, "get", 400)  # Rasa's spec has no 404: same Error schema
    assert (body["reason"], body["message"]) == ("Not found", "Conversation ID not found.")


async def test_execute_runs_the_action(client: httpx.AsyncClient, rasa_spec: RasaSpec) -> None:
    await client.post("/conversations/u5/tracker/events", json=GOODBYE_EVENTS)
    response = await client.post("/conversations/u5/execute", json={"name": "utter_greet"})
    body = check(rasa_spec, response, EXECUTE, "post", 200)
    assert body["messages"][0]["recipient_id"] == "u5"
    assert body["messages"][0]["text"] == "Hey! How are you?"
    assert body["tracker"]["latest_action_name"] in ("utter_greet", "action_listen")


async def test_execute_errors(client: httpx.AsyncClient, rasa_spec: RasaSpec) -> None:
    await client.post("/conversations/u6/tracker/events", json=GOODBYE_EVENTS)
    missing = check(
        rasa_spec, await client.post("/conversations/u6/execute", json={}), EXECUTE, "post", 400
    )
    assert missing["message"] == "Name of the action not provided in request body."
    assert missing["details"] == {"parameter": "name", "in": "body"}
    unknown = await client.post("/conversations/u6/execute", json={"name": "action_nope"})
    assert unknown.status_code == 404
    assert "action_nope" in unknown.json()["message"]
    nobody = await client.post("/conversations/ghost/execute", json={"name": "utter_greet"})
    assert nobody.status_code == 404


async def test_execute_stamps_the_policy_and_confidence_given(client: httpx.AsyncClient) -> None:
    await client.post("/conversations/u6b/tracker/events", json=GOODBYE_EVENTS)
    response = await client.post(
        "/conversations/u6b/execute",
        json={"name": "utter_greet", "policy": "MyPolicy", "confidence": 0.7},
    )
    assert response.status_code == 200, response.text
    action = [e for e in response.json()["tracker"]["events"] if e["event"] == "action"][-1]
    assert (action["name"], action["policy"], action["confidence"]) == (
        "utter_greet",
        "MyPolicy",
        0.7,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("confidence", 10**400),  # JSON's integers have no bound; a double's have
        ("confidence", "high"),
        ("confidence", True),
        ("policy", {"name": "MyPolicy"}),
        ("policy", 5),
    ],
)
async def test_execute_refuses_a_policy_or_confidence_an_action_event_cannot_hold(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, field: str, value: Any
) -> None:
    """Before, a confidence of 400 digits was a 500 (OverflowError), and any other value of
    the wrong kind was silently dropped (Rasa stores it, and every later tracker breaks its
    schema); found by probing."""
    await client.post("/conversations/u6c/tracker/events", json=GOODBYE_EVENTS)
    response = await client.post(
        "/conversations/u6c/execute", json={"name": "utter_greet", field: value}
    )
    body = check(rasa_spec, response, EXECUTE, "post", 400)
    assert body["details"] == {"parameter": field, "in": "body"}
    events = (await client.get("/conversations/u6c/tracker")).json()["events"]
    assert "utter_greet" not in [e.get("name") for e in events]


async def test_trigger_intent(client: httpx.AsyncClient, rasa_spec: RasaSpec) -> None:
    response = await client.post(
        "/conversations/u7/trigger_intent", json={"name": "greet", "entities": {"mood": "ok"}}
    )
    body = check(rasa_spec, response, TRIGGER, "post", 200)
    user = [e for e in body["tracker"]["events"] if e["event"] == "user"][-1]
    assert user["text"] == "EXTERNAL: greet"
    assert user["metadata"]["is_external"] is True
    assert body["messages"][0]["text"] == "Hey! How are you?"


async def test_the_nlu_metadata_of_a_user_event_is_the_messages_not_the_models(
    client: httpx.AsyncClient,
) -> None:
    # Rasa adds model_id and assistant_id to the event's metadata only: `parse_data.metadata`
    # and `latest_message.metadata` stay what the message carried (recorded: trigger_intent's
    # `{"is_external": true}`).
    triggered = await client.post(TRIGGER.format(conversation_id="nm1"), json={"name": "greet"})
    tracker = triggered.json()["tracker"]
    user = [e for e in tracker["events"] if e["event"] == "user"][-1]
    assert "model_id" in user["metadata"]
    assert user["parse_data"]["metadata"] == {"is_external": True}
    assert tracker["latest_message"]["metadata"] == {"is_external": True}

    posted = {"event": "user", "text": "hi", "metadata": {"page": "home"}, "parse_data": {}}
    response = await client.post(EVENTS.format(conversation_id="nm2"), json=posted)
    assert response.json()["latest_message"]["metadata"] == {"page": "home"}
    user = response.json()["events"][-1]
    assert user["metadata"]["page"] == "home" and "model_id" in user["metadata"]
    assert user["parse_data"]["metadata"] == {"page": "home"}


async def test_a_model_trained_without_assistant_id_stamps_the_random_one_it_got(
    client: httpx.AsyncClient,
) -> None:
    # Moodbot's config.yml has no assistant_id: as Rasa 3.5+, training made one up, and every
    # event carries it beside the model_id (before: no assistant_id at all).
    await client.post("/webhooks/rest/webhook", json={"sender": "noid", "message": "hi"})
    events = (await client.get(TRACKER.format(conversation_id="noid"))).json()["events"]
    assert events and all("model_id" in e["metadata"] for e in events)
    assistant_ids = {e["metadata"]["assistant_id"] for e in events}
    assert len(assistant_ids) == 1 and re.fullmatch(r"[a-z]+-[a-z]+", assistant_ids.pop())


def test_a_model_archive_without_assistant_id_stamps_none_rather_than_null() -> None:
    # An archive from before (or a model without the key) stamps what it has, as Rasa's
    # "dialogue events without identifier metadata"; not `"assistant_id": null`.
    events: list[Event] = [BotUttered(text="hi")]
    model = DialogueModel(Domain.from_dict({}), policies=None, model_id="m1")  # type: ignore[arg-type]
    stamp_model_ids(events, model)
    assert events[0].as_dict()["metadata"] == {"model_id": "m1"}


async def test_trigger_intent_errors(client: httpx.AsyncClient, rasa_spec: RasaSpec) -> None:
    unknown = await client.post("/conversations/u7/trigger_intent", json={"name": "no_such"})
    assert unknown.status_code == 404
    assert unknown.json()["message"] == "The intent no_such does not exist in the domain."
    empty = await client.post("/conversations/u7/trigger_intent")
    check(rasa_spec, empty, TRIGGER, "post", 400)
    unnamed = await client.post("/conversations/u7/trigger_intent", json={"entities": {}})
    assert check(rasa_spec, unnamed, TRIGGER, "post", 400)["details"]["parameter"] == "name"


@pytest.mark.parametrize("name", [5, True, ["greet"], {"name": "greet"}])
@pytest.mark.parametrize(
    ("route", "what"), [("trigger_intent", "an intent"), ("execute", "an action")]
)
async def test_a_name_that_is_no_string_is_a_bad_request_naming_it(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, name: Any, route: str, what: str
) -> None:
    """Rasa's spec types `name` as a string and gives trigger_intent no 404: a 400 naming
    `name`, as a malformed body. Rasa answers a 404 (trigger_intent; execute: a 500); before,
    our 400 said no name was given."""
    await client.post(WEBHOOK, json={"sender": "u7s", "message": "hi"})
    response = await client.post(f"/conversations/u7s/{route}", json={"name": name})
    path = TRIGGER if route == "trigger_intent" else EXECUTE
    body = check(rasa_spec, response, path, "post", 400)
    assert body["message"] == f"'name' must be the name of {what} (a string)."
    assert body["details"] == {"parameter": "name", "in": "body"}


@pytest.mark.parametrize(
    "entities",
    [
        [{"value": "ok"}],  # no entity name
        [{"entity": "mood"}],  # no value
        [{"entity": 5, "value": "ok"}],  # a name that is no string: it was a 500
        [{"entity": "mood", "value": "ok", "start": "0"}],
    ],
)
async def test_trigger_intent_refuses_entities_that_break_rasas_schema(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, entities: list[dict[str, Any]]
) -> None:
    """Before, they became the user message's entities as sent: stored, and every later
    answer about the conversation broke Rasa's schema (an entity name that is a number was
    a 500 and the turn was lost)."""
    response = await client.post(
        "/conversations/u7e/trigger_intent", json={"name": "greet", "entities": entities}
    )
    body = check(rasa_spec, response, TRIGGER, "post", 400)
    assert body["details"] == {"parameter": "entities", "in": "body"}
    assert "'entities' must be a list of objects" in body["message"]
    tracker = (await client.get("/conversations/u7e/tracker")).json()
    assert [e for e in tracker["events"] if e["event"] == "user"] == []


@pytest.mark.parametrize("entities", ["", 0, False])
async def test_trigger_intent_reads_an_empty_value_as_no_entities(
    client: httpx.AsyncClient, entities: Any
) -> None:
    """As Rasa does (a form's empty field, a client's `false`). Before, a 400 "'entities' must
    be an object ..." where Rasa triggers the intent."""
    response = await client.post(
        "/conversations/u7n/trigger_intent", json={"name": "greet", "entities": entities}
    )
    assert response.status_code == 200, response.text
    assert response.json()["tracker"]["latest_message"]["entities"] == []
    # A value that names something is still a 400 (Rasa drops it with a warning).
    named = await client.post(
        "/conversations/u7n/trigger_intent", json={"name": "greet", "entities": "mood=ok"}
    )
    assert named.json()["details"] == {"parameter": "entities", "in": "body"}


async def test_a_number_too_large_for_a_double_is_a_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """`1e400` is valid JSON that reads as infinity. Before, `execute` stored it as the
    action's confidence and every later GET of the tracker was a 500."""
    await client.post("/conversations/u6i/tracker/events", json=GOODBYE_EVENTS)
    response = await client.post(
        "/conversations/u6i/execute",
        content=b'{"name": "utter_greet", "confidence": 1e400}',
        headers={"Content-Type": "application/json"},
    )
    body = check(rasa_spec, response, EXECUTE, "post", 400)
    assert "the number 1e400 is too large for a double" in body["message"]
    assert (await client.get("/conversations/u6i/tracker")).status_code == 200


async def test_predict(client: httpx.AsyncClient, rasa_spec: RasaSpec) -> None:
    await client.post("/conversations/u8/messages", json={"text": "I am sad", "sender": "user"})
    body = check(rasa_spec, await client.post("/conversations/u8/predict"), PREDICT, "post", 200)
    scores = [(-s["score"], s["action"]) for s in body["scores"]]
    assert scores == sorted(scores)
    assert body["tracker"]["sender_id"] == "u8"
    missing = await client.post("/conversations/ghost/predict")
    assert missing.status_code == 404
    assert missing.json()["message"] == "Conversation ID not found."


async def test_messages_adds_a_user_message_without_predicting(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    response = await client.post(
        "/conversations/u9/messages", json={"text": "I am sad", "sender": "user"}
    )
    body = check(rasa_spec, response, MESSAGES, "post", 200)
    assert body["events"][-1]["event"] in ("user", "slot")
    assert body["latest_message"]["intent"]["name"] == "mood_unhappy"
    assert not [e for e in body["events"] if e["event"] == "bot"]


async def test_messages_stores_the_stripped_text_as_rasa_does(client: httpx.AsyncClient) -> None:
    """Before, " I am sad\n" was stored and parsed as sent (token offsets into the padding);
    Rasa's UserMessage strips it, as every channel does."""
    body = (
        await client.post(
            "/conversations/u10/messages", json={"text": " I am sad\n", "sender": "user"}
        )
    ).json()
    user = [e for e in body["events"] if e["event"] == "user"][-1]
    assert user["text"] == user["parse_data"]["text"] == "I am sad"
    assert user["parse_data"]["text_tokens"][0] == [0, 1]


@pytest.mark.parametrize(
    ("payload", "parameter"),
    [
        ({"text": "hi", "sender": "bot"}, "sender"),
        ({"sender": "user"}, "text"),
        (None, None),
        ({"text": "hi", "sender": "user", "parse_data": {"text": {}}}, "parse_data"),
        # Before, stored: every later tracker broke GET /openapi.json's schema.
        ({"text": "hi", "sender": "user", "parse_data": {"response_selector": []}}, "parse_data"),
        ({"text": "hi", "sender": "user", "parse_data": {"metadata": "m"}}, "parse_data"),
        ({"text": "hi", "sender": "user", "parse_data": {"message_id": 3}}, "parse_data"),
    ],
    ids=[
        "not-user",
        "no-text",
        "empty",
        "parse-text-not-string",
        "selector-list",
        "meta-str",
        "message-id-int",
    ],
)
async def test_messages_errors(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, payload: Any, parameter: str | None
) -> None:
    response = await client.post("/conversations/u9/messages", json=payload)
    body = check(rasa_spec, response, MESSAGES, "post", 400)
    if parameter:
        assert body["details"] == {"parameter": parameter, "in": "body"}


async def test_a_message_over_100_000_characters_is_refused_and_nothing_stored(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """Before, the REST webhook and POST .../messages parsed and stored a 1.2 MB text (while
    POST /model/parse refused it); now all three refuse a text over 100,000 characters."""
    long_text = ("hello " * 200_000).strip()
    refused = [
        await client.post("/webhooks/rest/webhook", json={"sender": "big", "message": long_text}),
        await client.post(
            "/webhooks/rest/webhook?stream=true", json={"sender": "big", "message": long_text}
        ),
    ]
    messages = await client.post(
        "/conversations/big/messages", json={"text": long_text, "sender": "user"}
    )
    check(rasa_spec, messages, MESSAGES, "post", 400)
    for response in [*refused, messages]:
        assert response.status_code == 400
        assert response.json()["reason"] == "BadRequest"
        assert "1,199,999 characters long; at most 100,000" in response.json()["message"]
    tracker = (await client.get("/conversations/big/tracker")).json()
    assert [e["event"] for e in tracker["events"]] == ["action", "session_started", "action"]
    # At the limit, a message is a turn as before.
    at_limit = await client.post(
        "/webhooks/rest/webhook", json={"sender": "big", "message": long_text[:100_000]}
    )
    assert at_limit.status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/conversations/u1/tracker"),
        ("post", "/conversations/u1/tracker/events"),
        ("put", "/conversations/u1/tracker/events"),
        ("get", "/conversations/u1/story"),
        ("post", "/conversations/u1/execute"),
        ("post", "/conversations/u1/trigger_intent"),
        ("post", "/conversations/u1/predict"),
        ("post", "/conversations/u1/messages"),
    ],
)
async def test_every_conversation_route_is_409_without_a_model(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, method: str, path: str
) -> None:
    assert (await client.delete("/model")).status_code == 204
    response = await client.request(method, path, json=GOODBYE_EVENTS)
    assert response.status_code == 409
    body = response.json()
    rasa_spec.validate(body, TRACKER, "get", 409)
    assert body["reason"] == "Conflict"


@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("get", "tracker"),
        ("post", "tracker/events"),
        ("put", "tracker/events"),
        ("get", "story"),
        ("post", "execute"),
        ("post", "trigger_intent"),
        ("post", "messages"),
    ],
)
async def test_no_model_is_told_before_a_bad_query_parameter(
    client: httpx.AsyncClient, method: str, route: str
) -> None:
    """As in Rasa, whose routes check for a model first. Before, a client asking with a
    mistyped `include_events` while no model was loaded got the 400, not the 409."""
    assert (await client.delete("/model")).status_code == 204
    query = "include_events=bad&until=soon&all_sessions=maybe"
    response = await client.request(method, f"/conversations/u1/{route}?{query}", json={})
    assert response.status_code == 409, response.text
    assert response.json()["reason"] == "Conflict"


async def test_checks_run_in_rasas_order(client: httpx.AsyncClient) -> None:
    """Of two mistakes in one request, the one Rasa names comes back: an unknown
    conversation before `include_events` on `execute`, and the body before `include_events`
    elsewhere. Before, `include_events` was always named first."""
    bad = "include_events=bad"
    unknown = await client.post(f"/conversations/nobody/execute?{bad}", json={"name": "x"})
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["message"] == "Conversation ID not found."
    await client.post(WEBHOOK, json={"sender": "u1", "message": "hi"})
    cases = [
        ("execute", {}, "Name of the action not provided in request body."),
        ("trigger_intent", {}, "Name of the intent not provided in request body."),
        ("messages", None, "No message defined in request body."),
        ("tracker/events", {"event": "nope"}, "Failed to validate the events format."),
    ]
    for route, body, message in cases:
        sent = {"content": b""} if body is None else {"json": body}
        response = await client.post(f"/conversations/u1/{route}?{bad}", **sent)
        assert response.status_code == 400, (route, response.text)
        assert response.json()["message"].startswith(message), (route, response.text)
    put = await client.put(f"/conversations/u1/tracker/events?{bad}", json={"event": "bot"})
    assert put.json()["message"].startswith("Failed to validate the events format.")
    # A good body: the bad parameter is still a 400, as in Rasa.
    named = await client.post(f"/conversations/u1/execute?{bad}", json={"name": "utter_greet"})
    assert named.json()["details"] == {"parameter": "include_events", "in": "query"}


async def test_appending_no_events_is_a_400_and_stores_nothing(
    client: httpx.AsyncClient,
) -> None:
    """Rasa means a 400 here ("Couldn't extract a proper event from the request body.") and
    answers 500, its catch-all around the route. Before, a 200 that started the conversation
    (a session and `action_listen` stored) for a body that appended nothing."""
    response = await client.post("/conversations/empty/tracker/events", json=[])
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["message"] == "Couldn't extract a proper event from the request body."
    assert body["details"] == {"parameter": "", "in": "body"}
    assert (await client.get("/conversations/empty/story")).status_code == 404
    # Replacing with no events still empties a conversation, as in Rasa.
    assert (await client.put("/conversations/empty/tracker/events", json=[])).status_code == 200


class _CallbackReceiver:
    """The user's callback endpoint: keeps what the bot POSTs."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.app = FastAPI()
        self.app.add_api_route("/bot", self.receive, methods=["POST"])

    async def receive(self, request: Request) -> Response:
        self.received.append(await request.json())
        return Response(status_code=200)


@pytest.mark.parametrize(
    ("route", "body"),
    [("trigger_intent", {"name": "greet"}), ("execute", {"name": "utter_greet"})],
)
async def test_output_channel_latest_reaches_the_users_channel(
    make_client: Callable[..., Any], route: str, body: dict[str, Any]
) -> None:
    """`?output_channel=latest` is the channel of the conversation's last user message, as in
    Rasa. Before, execute and trigger_intent never resolved it: the bot's message came back
    in the answer and the user, on the callback channel, never saw it. Then the message went
    to both."""
    receiver = _CallbackReceiver()
    async with serving(receiver.app) as url:
        client = await make_client(credentials={"callback": {"url": f"{url}/bot"}, "rest": None})
        spoken = await client.post(
            "/webhooks/callback/webhook", json={"sender": "cb1", "message": "hello"}
        )
        assert spoken.status_code == 200
        before = len(receiver.received)

        response = await client.post(f"/conversations/cb1/{route}?output_channel=latest", json=body)

    assert response.status_code == 200
    assert [m["text"] for m in receiver.received[before:]] == ["Hey! How are you?"]
    assert receiver.received[before]["recipient_id"] == "cb1"
    # As in Rasa, whose callback output collects what it sends: the answer has them too.
    assert [m["text"] for m in response.json()["messages"]] == ["Hey! How are you?"]


@pytest.mark.parametrize(
    ("output_channel", "answered"),
    [("socketio", False), ("callback", True), ("rest", True), ("nowhere", True)],
)
@pytest.mark.parametrize(
    ("route", "body"),
    [("trigger_intent", {"name": "greet"}), ("execute", {"name": "utter_greet"})],
)
async def test_the_answer_has_the_messages_unless_a_channel_pushed_them_alone(
    make_client: Callable[..., Any],
    route: str,
    body: dict[str, Any],
    output_channel: str,
    answered: bool,
) -> None:
    """Rasa answers `messages` when its output channel collects them: with no channel (or
    one that cannot push, such as `rest`), and with `callback`, whose output POSTs each
    message and collects it too. Socket.io only emits them: the answer has the tracker
    alone (a client showing both showed them twice). Before, callback's were left out."""
    receiver = _CallbackReceiver()
    async with serving(receiver.app) as url:
        credentials = {"callback": {"url": f"{url}/bot"}, "rest": None, "socketio": None}
        client = await make_client(credentials=credentials)
        listen = {"event": "action", "name": "action_listen"}
        assert (await client.post("/conversations/pushed/tracker/events", json=listen)).is_success
        response = await client.post(
            f"/conversations/pushed/{route}?output_channel={output_channel}", json=body
        )

    assert response.status_code == 200, response.text
    if answered:
        assert [m["text"] for m in response.json()["messages"]] == ["Hey! How are you?"]
    else:
        assert list(response.json()) == ["tracker"]


@pytest.mark.parametrize(
    ("route", "body"),
    [("tracker/events", {"event": "restart"}), ("execute", {"name": "action_restart"})],
)
async def test_after_a_restart_from_the_api_the_next_message_starts_a_session(
    client: httpx.AsyncClient, route: str, body: dict[str, Any]
) -> None:
    """As in Rasa, a tracker with no events applied starts a new session before the next
    message. Before, a restart posted by a client (or executed) left the conversation without
    one, and the next "hello" got no answer (or the fallback) instead of the greeting."""
    said = {"sender": "restarted", "message": "hello"}
    assert (await client.post("/webhooks/rest/webhook", json=said)).json()[0]["text"] == (
        "Hey! How are you?"
    )
    assert (await client.post(f"/conversations/restarted/{route}", json=body)).status_code == 200

    answer = await client.post("/webhooks/rest/webhook", json=said)

    assert [m["text"] for m in answer.json()] == ["Hey! How are you?"]
    events = (await client.get("/conversations/restarted/tracker")).json()["events"]
    assert [e["event"] for e in events][:3] == ["action", "session_started", "action"]


@pytest.mark.parametrize("route", ["webhook", "predict"])
async def test_a_conversation_ending_at_session_started_starts_a_session_first(
    client: httpx.AsyncClient, route: str
) -> None:
    """As in Rasa, whose tracker has no events applied after a `session_started`: the next
    message (or predict) runs `action_session_start` first, and the policies answer. Before,
    a conversation put or posted as `action_session_start`, `session_started` (a custom
    session start that does not listen, a client's import) got no answer to "hello", and
    its predict answered the listen pending since the reset."""
    session = [{"event": "action", "name": "action_session_start"}, {"event": "session_started"}]
    assert (await client.put("/conversations/ss/tracker/events", json=session)).status_code == 200
    if route == "webhook":
        answer = await client.post(WEBHOOK, json={"sender": "ss", "message": "hello"})
        assert [m.get("text") for m in answer.json()] == ["Hey! How are you?"]
    else:
        predicted = (await client.post("/conversations/ss/predict")).json()
        assert predicted["policy"] != "followup_action", predicted
    events = (await client.get("/conversations/ss/tracker")).json()["events"]
    assert [e["event"] for e in events][2:5] == ["action", "session_started", "action"]
    assert events[4]["name"] == "action_listen"


async def test_predict_scores_a_pending_followup_action_first(client: httpx.AsyncClient) -> None:
    """As Rasa's `for_action_name`: the followup scores 1. Before, every action scored 0
    (with confidence 1 and no policy): the first score was `...`, not the next action."""
    await client.post("/conversations/follow/messages", json={"text": "hi", "sender": "user"})
    followup = {"event": "followup", "name": "utter_cheer_up"}
    assert (await client.post("/conversations/follow/tracker/events", json=followup)).is_success

    body = (await client.post("/conversations/follow/predict")).json()

    assert body["scores"][0] == {"action": "utter_cheer_up", "score": 1.0}
    assert all(s["score"] == 0.0 for s in body["scores"][1:])
    assert body["confidence"] == 1.0
    assert body["policy"] == "followup_action"


@pytest.mark.parametrize(
    "set_by",
    [
        [{"event": "followup", "name": "utter_cheer_up"}],
        # An action that returned a FollowupAction, as /execute leaves it (nothing runs after).
        [
            {"event": "action", "name": "utter_greet"},
            {"event": "followup", "name": "utter_cheer_up"},
        ],
    ],
)
async def test_predict_takes_up_the_followup_action_and_leaves_it_pending(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, set_by: list[dict[str, Any]]
) -> None:
    """As Rasa 3.6: the prediction consumes the followup, so the tracker in the answer has
    none; the stored conversation keeps it, and the next turn runs it. Before, the answer's
    tracker still showed it pending."""
    await client.post("/conversations/fu/messages", json={"text": "hi", "sender": "user"})
    assert (await client.post("/conversations/fu/tracker/events", json=set_by)).is_success

    body = check(rasa_spec, await client.post("/conversations/fu/predict"), PREDICT, "post", 200)

    assert (body["scores"][0]["action"], body["policy"]) == ("utter_cheer_up", "followup_action")
    assert body["tracker"]["followup_action"] is None
    stored = (await client.get("/conversations/fu/tracker")).json()
    assert stored["followup_action"] == "utter_cheer_up"
    assert stored["events"] == body["tracker"]["events"]


async def test_a_tracker_with_nothing_since_its_reset_has_action_listen_pending(
    client: httpx.AsyncClient,
) -> None:
    """As Rasa's tracker: a reset (a tracker of no events, a session start) leaves
    `action_listen` as the followup action until an action or a message. Before, null."""
    emptied = await client.put("/conversations/fr/tracker/events", json=[])
    assert emptied.json()["followup_action"] == "action_listen"
    started = await client.post("/conversations/fr/tracker/events", json=NEW_SESSION)
    assert started.json()["followup_action"] == "action_listen"
    stored = (await client.get("/conversations/fr/tracker")).json()
    assert stored["followup_action"] == "action_listen"
    before_it = await client.get("/conversations/fr/tracker?until=0")
    assert before_it.json()["followup_action"] == "action_listen"
    spoken = await client.post("/conversations/fr/messages", json={"text": "hi", "sender": "user"})
    assert spoken.json()["followup_action"] is None
    # Rasa's `/model/predict` of such events predicts the pending listen.
    predicted = (await client.post("/model/predict", json=NEW_SESSION)).json()
    assert (predicted["scores"][0]["action"], predicted["policy"]) == (
        "action_listen",
        "followup_action",
    )


async def test_model_predict_takes_up_the_followup_action(client: httpx.AsyncClient) -> None:
    """POST /model/predict as the conversation's predict (Rasa's is the same call)."""
    events = [*GOODBYE_EVENTS, {"event": "followup", "name": "utter_cheer_up"}]

    body = (await client.post("/model/predict", json=events)).json()

    assert (body["scores"][0]["action"], body["policy"]) == ("utter_cheer_up", "followup_action")
    assert body["tracker"]["followup_action"] is None


async def test_predict_ignores_a_followup_action_not_in_the_domain(
    client: httpx.AsyncClient,
) -> None:
    """As Rasa: logged, and the policies predict; the answer's tracker has no followup."""
    await client.post("/conversations/fx/messages", json={"text": "hi", "sender": "user"})
    followup = {"event": "followup", "name": "action_nowhere"}
    assert (await client.post("/conversations/fx/tracker/events", json=followup)).is_success

    body = (await client.post("/conversations/fx/predict")).json()

    assert body["policy"] != "followup_action"
    assert body["tracker"]["followup_action"] is None


async def test_the_webhook_and_conversation_routes_take_a_trailing_slash(
    client: httpx.AsyncClient,
) -> None:
    """Before, a 307 redirect, which `curl -XPOST` and many webhook clients do not follow."""
    reply = await client.post("/webhooks/rest/webhook/", json={"sender": "sl", "message": "hi"})
    assert reply.status_code == 200
    assert reply.json()[0]["text"] == "Hey! How are you?"
    tracker = await client.get("/conversations/sl/tracker/")
    assert tracker.status_code == 200
    assert tracker.json()["latest_message"]["intent"]["name"] == "greet"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/conversations//tracker"),
        ("post", "/conversations//messages"),
        ("post", "/conversations//tracker/events"),
    ],
)
async def test_an_empty_conversation_id_is_404_as_an_unknown_route(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    """Before, a conversation named "" was read or written (an unset variable in a client's
    URL); in Rasa no route matches."""
    body = {"text": "hi", "sender": "user"} if path.endswith("messages") else GOODBYE_EVENTS
    response = await client.request(method, path, json=body)
    assert response.status_code == 404
    assert response.json()["message"] == f"Requested URL {path} not found"
    tracker = await client.get("/conversations/%20/tracker")  # " " is an id like any other
    assert tracker.status_code == 200


async def test_the_callback_channel_refuses_a_message_over_100_000_characters(
    make_client: Callable[..., Any],
) -> None:
    """Before, it answered "success" (the turn failed in the log) like a handled message."""
    client = await make_client(credentials={"callback": {"url": "http://127.0.0.1:9/bot"}})
    response = await client.post(
        "/webhooks/callback/webhook", json={"sender": "cb-long", "message": "hi " * 40_000}
    )
    assert response.status_code == 400
    assert "at most 100,000 are read" in response.json()["message"]
    tracker = (await client.get("/conversations/cb-long/tracker")).json()
    assert not [e for e in tracker["events"] if e["event"] == "user"]


async def test_allow_names_every_method_of_a_path(client: httpx.AsyncClient) -> None:
    """Before, only the first route's: `PUT` for /model (which answers `DELETE` too)."""
    model = await client.patch("/model")
    events = await client.options("/conversations/u1/tracker/events")
    assert model.status_code == 405
    assert model.headers["allow"] == "PUT, DELETE, OPTIONS"
    assert events.status_code == 200
    assert events.headers["allow"] == "POST, PUT, OPTIONS"


def _event_steps(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What a client reading events in order sees: type, action name, featurization flag."""
    return [
        (e["event"], e.get("name"), e.get("use_text_for_featurization"), e.get("hide_rule_turn"))
        for e in events
    ]


async def test_the_recorded_rasa_conversation_logs_the_same_events_in_the_same_order(
    client: httpx.AsyncClient,
) -> None:
    # Rasa logs `user_featurization` (false: read by intent) after each user message whose
    # next action the policies predicted; before, it was logged only for end-to-end answers,
    # so the recorded moodbot conversation had one event less per turn.
    recorded = {e.title: e.body for e in recorded_examples()}
    await client.post("/webhooks/rest/webhook", json={"sender": "u1", "message": "hi"})
    tracker = (await client.get(TRACKER.format(conversation_id="u1"))).json()
    expected = recorded["GET /conversations/u1/tracker"]["events"]
    assert _event_steps(tracker["events"]) == _event_steps(expected)

    # /messages adds no prediction (so no featurization); /execute then runs an action the
    # policies did not predict, and the intent triggered after it follows no action_listen.
    await client.post(
        MESSAGES.format(conversation_id="u1"), json={"text": "I am sad", "sender": "user"}
    )
    await client.post(EXECUTE.format(conversation_id="u1"), json={"name": "utter_cheer_up"})
    await client.post(TRIGGER.format(conversation_id="u1"), json={"name": "affirm"})
    await client.post(EVENTS.format(conversation_id="u1"), json={"event": "bot", "text": "hello"})
    tracker = (await client.get(TRACKER.format(conversation_id="u1"))).json()
    expected = recorded["POST /conversations/u1/tracker/events (append one event)"]["events"]
    assert _event_steps(tracker["events"]) == _event_steps(expected)


async def test_a_rules_own_turn_is_logged_with_hide_rule_turn(client: httpx.AsyncClient) -> None:
    # Moodbot's bot_challenge rule is in no story: Rasa logs its action (and the listen the
    # rule adds) with hide_rule_turn true; the story turns keep false. Before, always false.
    for message in ("/greet", "/bot_challenge"):
        await client.post("/webhooks/rest/webhook", json={"sender": "hide", "message": message})
    events = (await client.get(TRACKER.format(conversation_id="hide"))).json()["events"]
    actions = [(e["name"], e["hide_rule_turn"]) for e in events if e["event"] == "action"]
    assert actions[-4:] == [
        ("utter_greet", False),
        ("action_listen", False),
        ("utter_iamabot", True),
        ("action_listen", True),
    ]


async def test_an_active_loop_the_domain_lacks_is_ignored_with_one_warning(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: accepted, then every answer was [] with nothing in the log (Rasa fails at the
    # next prediction). A form dropped from the domain leaves the same event in a tracker.
    ghost = [{"event": "active_loop", "name": "no_such_form", "timestamp": 4102444800.0}]
    assert (await client.post(EVENTS.format(conversation_id="g1"), json=ghost)).is_success

    with caplog.at_level(logging.WARNING, logger="server"):
        hello = await client.post(WEBHOOK, json={"sender": "g1", "message": "hello"})

    assert [m["text"] for m in hello.json()] == ["Hey! How are you?"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "conversation g1: the active loop 'no_such_form' is not a form of the domain; "
        "predicting as if no loop were active (said once per conversation)"
    ]
    # The policies predict as in a conversation without the event (memoization: before, its
    # states named the loop and only the ML policy answered); the event stays in the history.
    # The next turns say nothing more (before: the same warning at every turn).
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="server"):
        await client.post(WEBHOOK, json={"sender": "g1", "message": "great"})
    assert [r for r in caplog.records if r.levelno == logging.WARNING] == []
    for text in ("hello", "great"):
        await client.post(WEBHOOK, json={"sender": "plain", "message": text})
    ghost_tracker = (await client.get(TRACKER.format(conversation_id="g1"))).json()
    plain_tracker = (await client.get(TRACKER.format(conversation_id="plain"))).json()
    assert _predictions(ghost_tracker) == _predictions(plain_tracker)
    assert ("utter_happy", "MemoizationPolicy", 1.0) in _predictions(ghost_tracker)
    assert ghost_tracker["active_loop"]["name"] == "no_such_form"
    assert {"event": "active_loop", "name": "no_such_form"}.items() <= ghost_tracker["events"][
        3
    ].items()


def _predictions(tracker: dict[str, Any]) -> list[tuple[str, str | None, float | None]]:
    """Each predicted action of a tracker: its name, policy and confidence."""
    return [
        (e["name"], e.get("policy"), e.get("confidence"))
        for e in tracker["events"]
        if e["event"] == "action" and e.get("policy")
    ]


async def test_a_slot_event_for_a_slot_the_domain_lacks_stays_an_event_not_a_slot(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, caplog: pytest.LogCaptureFixture
) -> None:
    # As in Rasa: the tracker's slots are the domain's (moodbot declares none but the built-in
    # session_started_metadata); the event is stored and served. Before, `no_such_slot`
    # appeared in `slots`, for dashboards and action servers to read.
    events = [
        {"event": "slot", "name": "no_such_slot", "value": "x", "timestamp": 4102444800.0},
        {"event": "slot", "name": "session_started_metadata", "value": {"a": 1}},
    ]
    with caplog.at_level(logging.ERROR, logger="server"):
        posted = await client.post(EVENTS.format(conversation_id="s1"), json=events)
    body = check(rasa_spec, posted, EVENTS, "post", 200)
    assert body["slots"] == {"session_started_metadata": {"a": 1}}
    assert [e.get("name") for e in body["events"] if e["event"] == "slot"] == [
        "no_such_slot",
        "session_started_metadata",
    ]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "Tried to set non existent slot 'no_such_slot' in conversation 's1'. Make sure you "
        "added all your slots to your domain file."
    ]
    fetched = (await client.get(TRACKER.format(conversation_id="s1"))).json()
    assert fetched["slots"] == {"session_started_metadata": {"a": 1}}
    replaced = await client.put(EVENTS.format(conversation_id="s1"), json=events[:1])
    assert check(rasa_spec, replaced, EVENTS, "put", 200)["slots"] == {
        "session_started_metadata": None
    }


async def test_replaced_events_are_stored_as_given_and_appended_ones_get_the_models_ids(
    client: httpx.AsyncClient,
) -> None:
    """As Rasa 3.6: a PUT builds a tracker from the body alone (no model's ids: its events
    are kept as sent, an export restored as it was exported); a POST appends to the served
    conversation, whose events carry the model's `model_id` and `assistant_id`."""
    sent = [{**event, "metadata": {"page": "home"}} for event in GOODBYE_EVENTS]
    response = await client.put(EVENTS.format(conversation_id="ids1"), json=sent)
    assert response.status_code == 200, response.text
    stored = (await client.get(TRACKER.format(conversation_id="ids1"))).json()["events"]
    assert [event["metadata"] for event in stored] == [{"page": "home"}] * 2

    await client.post(EVENTS.format(conversation_id="ids1"), json=sent[1])
    stored = (await client.get(TRACKER.format(conversation_id="ids1"))).json()["events"]
    assert stored[-1]["metadata"]["page"] == "home"
    assert {"model_id", "assistant_id"} <= set(stored[-1]["metadata"])


_OWN_OUTPUTS = """
from fastapi import APIRouter
from server.channels import InputChannel
from server.dialogue.messages import CollectingOutputChannel


class Pusher:
    name = "pusher"
    sent = []

    async def send_response(self, recipient_id, message):
        self.sent.append(message)


class Collector(CollectingOutputChannel):
    name = "collector_too"


class PushingChannel(InputChannel):
    name = "pusher"

    def router(self, on_new_message):
        return APIRouter(prefix=self.url_prefix())

    def get_output_channel(self):
        return Pusher()


class CollectingChannel(PushingChannel):
    name = "collector_too"

    def get_output_channel(self):
        return Collector()
"""


@pytest.mark.parametrize(
    ("output_channel", "answered"), [("pusher", False), ("collector_too", True)]
)
async def test_a_custom_channels_output_answers_the_messages_when_it_collects_them(
    make_client: Callable[..., Any],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    output_channel: str,
    answered: bool,
) -> None:
    """As in Rasa: a channel's output built on `CollectingOutputChannel` collects what it
    sends, so `trigger_intent` answers the messages too; one that only pushes them, not."""
    (tmp_path / "review121_outputs.py").write_text(_OWN_OUTPUTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    credentials = {
        "review121_outputs.PushingChannel": None,
        "review121_outputs.CollectingChannel": None,
    }
    client = await make_client(credentials=credentials)
    listen = {"event": "action", "name": "action_listen"}
    assert (await client.post("/conversations/own/tracker/events", json=listen)).is_success

    response = await client.post(
        f"/conversations/own/trigger_intent?output_channel={output_channel}",
        json={"name": "greet"},
    )

    assert response.status_code == 200, response.text
    messages = response.json().get("messages")
    assert (messages is not None) is answered, response.text
