"""The action server client against real rasa-sdk servers and against broken ones."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import struct
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from server.dialogue.action_client import (
    DEFAULT_ACTION_TIMEOUT,
    ActionServerClient,
    domain_digest,
    validate_action_result,
)
from server.dialogue.domain import Domain
from server.dialogue.nlg_client import NLGClient
from server.errors import ActionError, ActionRejected, InvalidConfig
from server.trackers import freeing
from server.trackers.events import (
    ActionExecuted,
    ActiveLoop,
    SlotSet,
    UserUttered,
)
from server.trackers.tracker import EventVerbosity, Tracker
from tests.action_servers.fixtures import (  # noqa: F401
    ENCODED_ANSWERS,
    BrokenActionServer,
    action_servers,
    broken_action_server,
    free_port,
    gzip_bomb,
    twice_gzipped_bomb,
)
from tests.loop_lag import loop_hold, paced
from tests.serving import serving_from_the_first_retry
from tests.shared_data import BOTS


def _parse(intent: str, entities: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"intent": {"name": intent, "confidence": 1.0}, "entities": entities or []}


def formbot_domain() -> dict[str, Any]:
    with (BOTS / "formbot" / "domain.yml").open() as f:
        return Domain.from_dict(yaml.safe_load(f)).as_dict()


def form_tracker(slot: str, value: Any, intent: str = "inform") -> dict[str, Any]:
    """A formbot conversation where the user just answered `slot` while the form asks it."""
    tracker = Tracker(
        "u1",
        events=[
            ActionExecuted("action_listen"),
            UserUttered("I want a table", _parse("request_restaurant")),
            ActionExecuted("restaurant_form"),
            ActiveLoop("restaurant_form"),
            SlotSet("requested_slot", slot),
            ActionExecuted("action_listen"),
            UserUttered(str(value), _parse(intent)),
            SlotSet(slot, value),
        ],
    )
    return tracker.current_state(EventVerbosity.ALL)


@pytest.fixture
async def formbot(action_servers) -> Any:  # noqa: F811
    client = ActionServerClient({"url": action_servers["formbot"].url})
    yield client
    await client.aclose()


async def test_form_validation_accepts_a_known_cuisine(formbot: ActionServerClient) -> None:
    result = await formbot.run(
        "validate_restaurant_form", "u1", form_tracker("cuisine", "chinese"), formbot_domain()
    )
    slots = [(e["name"], e["value"]) for e in result["events"] if e["event"] == "slot"]
    assert ("cuisine", "chinese") in slots
    assert result["responses"] == []


async def test_form_validation_rejects_an_unknown_cuisine(formbot: ActionServerClient) -> None:
    result = await formbot.run(
        "validate_restaurant_form", "u1", form_tracker("cuisine", "klingon"), formbot_domain()
    )
    slots = [(e["name"], e["value"]) for e in result["events"] if e["event"] == "slot"]
    assert ("cuisine", None) in slots
    assert [r.get("response") for r in result["responses"]] == ["utter_wrong_cuisine"]


async def test_form_validation_turns_seating_text_into_a_bool(
    formbot: ActionServerClient,
) -> None:
    state = form_tracker("outdoor_seating", "outside please")
    result = await formbot.run("validate_restaurant_form", "u1", state, formbot_domain())
    slots = [(e["name"], e["value"]) for e in result["events"] if e["event"] == "slot"]
    assert ("outdoor_seating", True) in slots


async def test_concertbot_action_sets_a_list_slot_and_utters(action_servers) -> None:  # noqa: F811
    client = ActionServerClient({"url": action_servers["concertbot"].url})
    try:
        state = Tracker("c1").current_state(EventVerbosity.ALL)
        result = await client.run("action_search_venues", "c1", state, {})
    finally:
        await client.aclose()
    assert [r["text"] for r in result["responses"]] == [
        "here are some venues I found",
        "Big Arena, Rock Cellar",
    ]
    (event,) = result["events"]
    assert event["event"] == "slot" and event["name"] == "venues"
    assert [v["name"] for v in event["value"]] == ["Big Arena", "Rock Cellar"]


async def test_reminderbot_schedules_a_reminder(action_servers) -> None:  # noqa: F811
    client = ActionServerClient({"url": action_servers["reminderbot"].url})
    try:
        tracker = Tracker(
            "r1",
            events=[
                UserUttered(
                    "remind me to call John",
                    _parse(
                        "ask_remind_call",
                        [{"entity": "PERSON", "value": "John", "start": 18, "end": 22}],
                    ),
                )
            ],
        )
        state = tracker.current_state(EventVerbosity.ALL)
        result = await client.run("action_set_reminder", "r1", state, {})
    finally:
        await client.aclose()
    assert result["responses"][0]["text"] == "I will remind you in 5 seconds."
    (reminder,) = result["events"]
    assert reminder["event"] == "reminder"
    assert reminder["intent"] == "EXTERNAL_reminder"
    assert reminder["kill_on_user_msg"] is False
    assert reminder["entities"][0]["value"] == "John"


async def test_an_unknown_action_is_an_action_error(formbot: ActionServerClient) -> None:
    with pytest.raises(ActionError, match="no such action") as raised:
        await formbot.run("action_nobody_wrote", "u1", form_tracker("cuisine", "x"), None)
    assert not isinstance(raised.value, ActionRejected)


async def test_a_rejection_names_the_action(action_servers) -> None:  # noqa: F811
    client = ActionServerClient({"url": action_servers["testbot"].url})
    try:
        with pytest.raises(ActionRejected) as raised:
            await client.run("action_reject_always", "t1", Tracker("t1").current_state(), {})
    finally:
        await client.aclose()
    assert raised.value.action_name == "action_reject_always"
    assert str(raised.value) == "not today"


async def test_selective_domain_works_with_a_caching_rasa_sdk(
    action_servers,  # noqa: F811
) -> None:
    url = action_servers["testbot"].url
    domain = {"version": "3.1", "intents": ["greet"], "responses": {}}
    state = Tracker("t1", events=[UserUttered("hello")]).current_state(EventVerbosity.ALL)
    client = ActionServerClient({"url": url, "enable_selective_domain": True})
    try:
        first = await client.run("action_echo", "t1", state, domain)
        second = await client.run("action_echo", "t1", state, domain)
    finally:
        await client.aclose()
    for result in (first, second):
        assert result["responses"][0]["custom"] == {
            "domain_keys": ["intents", "responses", "version"]
        }
        assert result["responses"][1]["response"] == "utter_greet"
        assert result["responses"][1]["name"] == "t1"
        assert result["events"] == [
            {"event": "slot", "timestamp": None, "name": "echoed", "value": "hello"}
        ]


# -- broken action servers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_server() -> Iterator[BrokenActionServer]:
    with broken_action_server() as server:
        yield server


def _url(server: ThreadingHTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


@pytest.mark.timing
async def test_a_server_that_is_down_fails_fast_and_clearly() -> None:
    client = ActionServerClient({"url": f"http://127.0.0.1:{free_port()}/webhook"})
    started = time.monotonic()
    with pytest.raises(ActionError, match="cannot reach the action server"):
        await client.run("action_x", "u1", {}, None)
    assert time.monotonic() - started < paced(2, below=DEFAULT_ACTION_TIMEOUT)
    await client.aclose()


async def test_an_action_server_restarting_runs_the_action_once_it_listens(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its port refuses connections for a moment (a deploy, a crash restarted): nothing of
    the call was sent, so it is tried again after 0.25 s, then 1 s, within the action's
    `timeout`, and the action runs once. Before, the user got the fallback at once."""
    calls: list[str] = []

    async def webhook(request: Request) -> JSONResponse:
        calls.append((await request.json())["next_action"])
        return JSONResponse({"events": [], "responses": [{"text": "found it"}]})

    caplog.set_level(logging.INFO)
    app = Starlette(routes=[Route("/webhook", webhook, methods=["POST"])])
    async with serving_from_the_first_retry(app, monkeypatch) as (url, pauses):
        client = ActionServerClient({"url": f"{url}/webhook"})
        try:
            result = await client.run("action_search", "u1", {}, None)
        finally:
            await client.aclose()
    assert result["responses"] == [{"text": "found it"}]
    assert (calls, pauses) == (["action_search"], [0.25])
    assert f"action server: action_search at {url}/webhook: cannot connect (" in caplog.text


async def test_an_action_call_that_reached_the_server_is_not_made_again(
    broken_server: BrokenActionServer,
) -> None:
    """The server read the call and closed the connection without an answer: the action may
    have run (a booking made, a mail sent), so it is not called again."""
    client = ActionServerClient({"url": _url(broken_server, "/hang-up")})
    try:
        with pytest.raises(ActionError, match="request to the action server at .* failed"):
            await client.run("action_book", "u1", {}, None)
    finally:
        await client.aclose()
    assert [path for path, _ in broken_server.requests].count("/hang-up") == 1


async def test_an_action_call_reset_on_a_reused_connection_is_not_made_again() -> None:
    """The server answers a call on a kept-alive connection, then reads the next call on it
    and resets the connection (a crash, a proxy dropping it): a failure on a connection
    already made is no connect failure, whatever it says ("connection reset"), so the
    action, which may have run, is not called again."""
    calls: list[bytes] = []
    connections: list[None] = []

    async def answer_once_then_reset(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connections.append(None)
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
            calls.append(await reader.readexactly(length))
            if len(calls) > 1:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()  # a reset, not a close
                return
            body = b'{"events": [], "responses": []}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    server = await asyncio.start_server(answer_once_then_reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ActionServerClient({"url": f"http://127.0.0.1:{port}/webhook"})
    try:
        await client.run("action_book", "u1", {}, None)
        with pytest.raises(ActionError, match="request to the action server at .* failed"):
            await client.run("action_book", "u1", {}, None)
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    assert (len(calls), len(connections)) == (2, 1)


@pytest.mark.timing
async def test_a_slow_server_times_out(broken_server: BrokenActionServer) -> None:
    client = ActionServerClient({"url": _url(broken_server, "/slow"), "timeout": 0.5})
    started = time.monotonic()
    with pytest.raises(ActionError, match="did not answer within 0.5 s"):
        await client.run("action_x", "u1", {}, None)
    assert time.monotonic() - started < 0.5 + paced(1.5, below=DEFAULT_ACTION_TIMEOUT - 0.5)
    await client.aclose()


async def test_a_call_asked_again_for_the_domain_still_ends_within_the_timeout(
    broken_server: BrokenActionServer,
) -> None:
    """Each of the two requests (the second with the domain a caching rasa-sdk asked for
    with its 449) answers within the 2 s timeout (in 1.2 s), the two together do not. Before,
    each had the whole timeout: the turn waited up to twice as long as configured."""
    client = ActionServerClient(
        {
            "url": _url(broken_server, "/domain-missing-slow"),
            "timeout": 2.0,
            "enable_selective_domain": True,
        }
    )
    with pytest.raises(ActionError, match="did not answer within 2 s"):
        await client.run("action_x", "u1", {}, {"intents": []})
    await client.aclose()
    asked = [(path, "domain" in body) for path, body in broken_server.requests[-2:]]
    assert asked == [("/domain-missing-slow", False), ("/domain-missing-slow", True)]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/garbage", "not JSON"),
        ("/shape", "event 0 is invalid"),
        ("/entity", "event 0 is invalid: 'entities' must be a list of objects"),
        ("/list", "not a JSON object"),
        ("/crash", "HTTP 500: division by zero"),
        # As Rasa: only a 400 naming the action is a rejection (another policy then chooses).
        ("/crash-rejection", "answered HTTP 500: not today$"),
        ("/cut-short", r"failed \(peer closed connection without sending complete message body"),
        # Before, the error text went into the log with its line breaks: a forged log line.
        ("/crash-lines", "HTTP 500: boom ERROR forged line$"),
        ("/bare400", "HTTP 400"),
        # Before: "(HTTP 404: )" and "answered HTTP 503: ", nothing after the colon.
        ("/empty-status/404", r"has no such action \(HTTP 404, with an empty body\)$"),
        ("/empty-status/503", "answered HTTP 503, with an empty body$"),
        # Before: "answered HTTP 302: ", nothing after the colon; the token never shown.
        (
            "/redirect",
            r"answered HTTP 302, a redirect to http://elsewhere.example:8080/webhook, which "
            "is not followed$",
        ),
        # Before, these were stored, and every later answer about the conversation was a 500.
        ("/raw/nan", r"not JSON \(NaN is not a JSON value\)"),
        ("/raw/huge-number", r"not JSON \(the number 1e400 is too large for a double\)"),
        ("/raw/surrogate", r"not JSON \(it holds an unpaired UTF-16 surrogate escape\)"),
        # Before, these escaped as a RecursionError or TypeError and the user's message was lost.
        ("/raw/deep", r"not JSON \(it is nested too deeply\)"),
        ("/raw/text-number", r"response 0 is invalid: 'text' has the wrong type \(int\)"),
        ("/raw/response-list", "response 0 is invalid: 'response' must be the name of a resp"),
        ("/raw/bot-event-text", "event 0 is a bot message whose 'text' has the wrong type"),
        # Before, taken: 100,000 of them held the event loop for over a second.
        ("/raw/many-responses", "0 events and 1001 responses, more than the 1000 of each"),
        # Before: "1001 events and 1 responses".
        ("/raw/many-events", "1001 events and 1 response, more than the 1000 of each"),
        # Before, stored; the reminder then failed when it fired.
        ("/raw/reminder-entities", "event 0 is invalid: 'entities' must be a list of objects"),
        # Before, taken: scheduling it raised a TypeError in the middle of the turn.
        ("/raw/reminder-name-list", "event 0 is invalid: a reminder's 'name' must be a string"),
    ],
)
async def test_garbage_is_an_action_error(
    broken_server: BrokenActionServer, path: str, message: str
) -> None:
    client = ActionServerClient({"url": _url(broken_server, path)})
    with pytest.raises(ActionError, match=message) as raised:
        await client.run("action_x", "u1", {}, None)
    assert not isinstance(raised.value, ActionRejected)
    await client.aclose()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"events": {}}, "'events' must be a list, not dict"),
        ({"events": False, "responses": [{"text": "hi"}]}, "'events' must be a list, not bool"),
        ({"responses": 0}, "'responses' must be a list, not int"),
        ({"responses": "hi"}, "'responses' must be a list, not str"),
        # Before, an empty list, false or 0 was taken as no metadata.
        (
            {"events": [{"event": "slot", "name": "x", "value": 1, "metadata": []}]},
            "event 0 is invalid: an event's 'metadata' must be an object",
        ),
        (
            {"events": [{"event": "bot", "text": "hi", "metadata": False}]},
            "event 0 is invalid: an event's 'metadata' must be an object",
        ),
        # As Rasa's answer schema (and as posted to the API); before, read as its truth
        # value: "false" as true, hiding the action from the rules' history.
        (
            {"events": [{"event": "action", "name": "utter_ok", "hide_rule_turn": "false"}]},
            "event 0 is invalid: 'hide_rule_turn' of an 'action' event must be true or false",
        ),
        # Rasa keeps these as sent (its schema leaves them out), and the string then acts
        # as true; before, read as true and stored so: GET .../tracker showed `true`.
        (
            {"events": [{"event": "loop_interrupted", "is_interrupted": "false"}]},
            "event 0 is invalid: 'is_interrupted' of a 'loop_interrupted' event must be true "
            "or false",
        ),
        (
            {"events": [{"event": "user_featurization", "use_text_for_featurization": "no"}]},
            "event 0 is invalid: 'use_text_for_featurization' of a 'user_featurization' "
            "event must be true or false",
        ),
    ],
)
def test_events_or_responses_of_another_type_are_an_action_error(
    answer: dict, message: str
) -> None:
    """As Rasa's answer schema, `events` and `responses` are lists, and an event's
    `metadata` an object (null is read as none, as a missing key is; Rasa's schema refuses
    null for the lists). Before, an empty object, false or 0 was taken as none, and the
    action ran as if it had answered nothing."""
    with pytest.raises(ActionError, match=f"Custom action 'action_x': {message}$"):
        validate_action_result("action_x", answer)
    assert validate_action_result("action_x", {"events": None, "responses": None}) == {
        "events": [],
        "responses": [],
    }


def test_a_legacy_topic_event_is_ignored_as_in_rasa(caplog: pytest.LogCaptureFixture) -> None:
    # Rasa reads Rasa 1's `topic` event as nothing, with a warning; before, the whole action
    # failed and the user got the fallback.
    slot = {"event": "slot", "name": "city", "value": "Rome"}
    answer = {"events": [{"event": "topic", "topic": "travel"}, slot]}
    assert validate_action_result("action_x", answer)["events"] == [slot]
    assert "'topic' event" in caplog.text and "ignored" in caplog.text


@pytest.mark.timing
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/bomb", "its answer is more than 10485760 bytes"),  # 30 KB of gzip, 30 MB inflated
        ("/huge", "its answer is 11534367 bytes, more than 10485760"),  # said up front
        ("/endless", "its answer is more than 10485760 bytes"),  # chunked, never ends
    ],
)
async def test_an_answer_over_the_size_limit_is_refused_as_it_arrives(
    broken_server: BrokenActionServer, path: str, message: str
) -> None:
    """Before, the whole answer was read into memory (1 MB of gzip grew to gigabytes, held
    the event loop while it inflated and ran into the timeout; an endless body ran until
    the timeout). Now the reading stops at `max_response_bytes` (10 MB), counted inflated."""
    client = ActionServerClient({"url": _url(broken_server, path), "timeout": 5})
    started = time.monotonic()
    with pytest.raises(ActionError, match=message):
        await client.run("action_x", "u1", {}, None)
    assert time.monotonic() - started < paced(2, below=5)  # within the timeout
    await client.aclose()


async def test_the_size_limit_is_configurable(broken_server: BrokenActionServer) -> None:
    client = ActionServerClient(
        {"url": _url(broken_server, "/huge"), "max_response_bytes": 12 * 1024 * 1024}
    )
    assert await client.run("action_x", "u1", {}, None) == {"events": [], "responses": []}
    await client.aclose()


@pytest.mark.parametrize("name", ["gzip", "raw-deflate", "gzip-members", "identity"])
async def test_an_answer_of_exactly_the_size_limit_is_read(
    broken_server: BrokenActionServer, name: str
) -> None:
    """The limit counts the answer decoded, its last byte included, whatever the encoding.
    Before, an encoded answer's Content-Length was held against it: 45 bytes sent as 60 of
    gzip were "more than 45"."""
    size = len(zlib.decompress(ENCODED_ANSWERS["gzip"][1], wbits=31))
    for path in (f"/encoded/{name}", f"/trickled/{name}"):
        exact = ActionServerClient({"url": _url(broken_server, path), "max_response_bytes": size})
        assert (await exact.run("action_x", "u1", {}, None))["responses"] == [{"text": "ok"}]
        await exact.aclose()
        under = ActionServerClient(
            {"url": _url(broken_server, path), "max_response_bytes": size - 1}
        )
        with pytest.raises(ActionError, match=f"its answer is .*more than {size - 1}"):
            await under.run("action_x", "u1", {}, None)
        await under.aclose()


@pytest.mark.parametrize("path", ["/bomb", "/bomb-twice"])
async def test_an_answer_is_never_inflated_past_the_size_limit(
    broken_server: BrokenActionServer, path: str
) -> None:
    """Before, httpx inflated each piece read whole, then each encoding in turn, and only
    then was the size counted: 30 KB of gzip made 30 MB at once, and 2 KB sent as
    `gzip, gzip` made a gigabyte (2 GB of memory, the event loop held for 25 s)."""
    limit = 1024 * 1024
    warm = ActionServerClient({"url": _url(broken_server, "/ok")})
    await warm.run("action_x", "u1", {}, None)  # the process's TLS context made: not counted
    await warm.aclose()
    gzip_bomb(), twice_gzipped_bomb()  # the server's answers made: not counted either
    client = ActionServerClient({"url": _url(broken_server, path), "max_response_bytes": limit})
    tracemalloc.start()
    try:
        with pytest.raises(ActionError):
            await client.run("action_x", "u1", {}, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await client.aclose()
    assert peak < 4 * limit, peak  # 2.3 MB: the answer so far, and its last piece


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/bomb-twice", "its answer is encoded 'gzip, gzip': botserver reads one gzip or"),
        ("/brotli", "its answer is encoded 'br': botserver reads one gzip or deflate"),
        ("/encoded/not-gzip", r"its answer, said to be gzip, is not \(Error -3 while"),
        ("/encoded/not-deflate", r"its answer, said to be deflate, is not \(Error -3 while"),
        # Before, what followed the gzip was dropped unread, as though the answer ended there.
        (
            "/encoded/gzip-trailing-garbage",
            r"its answer, said to be gzip, goes on after its end with bytes that are not gzip",
        ),
        ("/encoded/gzip-many-members", "its answer is more than 1024 gzip members one after"),
    ],
)
async def test_an_encoding_botserver_does_not_read_is_an_action_error(
    broken_server: BrokenActionServer, path: str, message: str
) -> None:
    """Rasa's aiohttp reads no layers either (and br only once Brotli is installed); before,
    the brotli bytes were read as the answer ("not JSON")."""
    client = ActionServerClient({"url": _url(broken_server, path)})
    with pytest.raises(ActionError, match=message):
        await client.run("action_x", "u1", {}, None)
    await client.aclose()


async def test_only_the_encodings_read_are_asked_for(
    broken_server: BrokenActionServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx asks for every encoding it can undo: with `brotli` or `zstandard` installed (a
    dependency of another package), `br` and `zstd` too, which a server may then send and
    botserver refuses. Now only gzip and deflate are asked for, whatever is installed."""
    monkeypatch.setattr("httpx._client.ACCEPT_ENCODING", "gzip, deflate, br, zstd")
    client = ActionServerClient({"url": _url(broken_server, "/ok")})
    await client.run("action_x", "u1", {}, None)
    await client.aclose()
    assert broken_server.headers[-1]["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    "path",
    [
        *(f"/encoded/{name}" for name in ("gzip", "x-gzip", "GZip", "deflate", "raw-deflate")),
        "/encoded/identity",
        # gzip members one after the other, one encoding (RFC 1952): before, the first only
        # was read ("not JSON").
        "/encoded/gzip-members",
        # A byte at a time: before, raw deflate was taken for zlib's at its first byte, then
        # refused at its second.
        *(f"/trickled/{name}" for name in ("gzip", "deflate", "raw-deflate", "gzip-members")),
    ],
)
async def test_an_encoded_answer_is_read(broken_server: BrokenActionServer, path: str) -> None:
    client = ActionServerClient({"url": _url(broken_server, path)})
    assert await client.run("action_x", "u1", {}, None) == {
        "events": [],
        "responses": [{"text": "ok"}],
    }
    await client.aclose()


async def test_token_goes_in_the_query_and_never_in_errors(
    broken_server: BrokenActionServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = ActionServerClient(
        {
            "url": _url(broken_server, "/ok"),
            "token": "s3cret-token",
            "params": {"team": "a"},
            "headers": {"X-Extra": "1"},
        }
    )
    result = await client.run("action_x", "u1", {"sender_id": "u1"}, {"intents": []})
    assert result == {"events": [], "responses": [{"text": "ok"}]}
    path, body = broken_server.requests[-1]
    assert path == "/ok?team=a&token=s3cret-token"
    assert body == {
        "next_action": "action_x",
        "sender_id": "u1",
        "tracker": {"sender_id": "u1"},
        "domain": {"intents": []},
        "version": "3.6.21",
    }
    await client.aclose()

    crash = ActionServerClient({"url": _url(broken_server, "/crash"), "token": "s3cret-token"})
    with pytest.raises(ActionError) as raised:
        await crash.run("action_x", "u1", {}, None)
    await crash.aclose()
    assert "s3cret-token" not in str(raised.value)
    assert "s3cret-token" not in caplog.text


async def test_selective_domain_leaves_the_domain_out_unless_asked(
    broken_server: BrokenActionServer,
) -> None:
    requests = broken_server.requests
    client = ActionServerClient({"url": _url(broken_server, "/ok"), "enable_selective_domain": 1})
    await client.run("action_x", "u1", {}, {"intents": ["a"]})
    assert "domain" not in requests[-1][1]
    assert len(requests[-1][1]["domain_digest"]) == 64
    await client.run("action_x", "u1", {}, {"intents": ["a"]}, {"send_domain": True})
    assert requests[-1][1]["domain"] == {"intents": ["a"]}
    await client.aclose()


async def test_the_domain_digest_is_computed_once_per_domain(
    broken_server: BrokenActionServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest writes the whole domain out, sorted, on the event loop: 11 ms for a
    190 KB domain, which every call of every conversation paid."""
    digests: list[dict[str, Any]] = []

    def counted(domain: dict[str, Any]) -> str:
        digests.append(domain)
        return domain_digest(domain)

    monkeypatch.setattr("server.dialogue.action_client.domain_digest", counted)
    requests = broken_server.requests
    client = ActionServerClient({"url": _url(broken_server, "/ok"), "enable_selective_domain": 1})
    domain, retrained = {"intents": ["a"]}, {"intents": ["a", "b"]}
    for model_domain in (domain, domain, domain, retrained, retrained):
        await client.run("action_x", "u1", {}, model_domain)
    await client.aclose()
    assert digests == [domain, retrained]
    sent = [body["domain_digest"] for _, body in requests[-5:]]
    assert sent == [domain_digest(domain)] * 3 + [domain_digest(retrained)] * 2


async def test_a_connection_idle_for_over_a_second_is_not_used_again(
    broken_server: BrokenActionServer,
) -> None:
    """An idle connection was kept 5 s, as long as uvicorn, Node and Apache keep theirs: a
    call as the server closed it failed (a ReadError, 1 call in 40 made a second apart to a
    server keeping 1 s), and the user got the fallback. Rasa opens a connection per call."""
    client = ActionServerClient({"url": _url(broken_server, "/idle-close")})
    await client.run("action_x", "u1", {}, None)
    await asyncio.sleep(1.5)
    assert await client.run("action_x", "u1", {}, None) == {"events": [], "responses": []}
    await client.aclose()


async def test_one_pooled_client_serves_concurrent_calls(
    broken_server: BrokenActionServer,
) -> None:
    client = ActionServerClient({"url": _url(broken_server, "/ok")})
    results = await asyncio.gather(*(client.run("action_x", "u1", {}, None) for _ in range(20)))
    assert all(r["responses"] == [{"text": "ok"}] for r in results)
    first = client.endpoint.client()
    await client.run("action_x", "u1", {}, None)
    assert client.endpoint.client() is first
    await client.aclose()


async def test_a_rejection_is_logged_on_one_line(broken_server: BrokenActionServer) -> None:
    """Before, the rejection's error text went into the log with its line breaks."""
    client = ActionServerClient({"url": _url(broken_server, "/reject-lines")})
    with pytest.raises(ActionRejected) as raised:
        await client.run("action_x", "u1", {}, None)
    assert str(raised.value) == "no ERROR forged line"
    await client.aclose()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"cafile": "missing.pem"}, "'cafile' .*missing.pem.* cannot be read as a CA bundle"),
        ({"cafile": "not-a-cert.pem"}, "'cafile' .*not-a-cert.pem.* cannot be read as a CA"),
        ({"headers": "X-Api-Key: abc"}, "'headers' must be a mapping"),
        ({"params": ["team=a"]}, "'params' must be a mapping"),
        # Before, taken: every call then failed, "did not answer within nan s".
        ({"timeout": float("nan")}, "'timeout' must be a positive number of seconds"),
    ],
)
@pytest.mark.parametrize("client_class", [ActionServerClient, NLGClient])
def test_an_unusable_endpoint_fails_at_startup(
    tmp_path: Path, config: dict[str, Any], message: str, client_class: type
) -> None:
    """Before, a missing or empty CA file raised an OSError out of every turn (no answer,
    the user's message lost), and headers given as text an AttributeError at startup."""
    (tmp_path / "not-a-cert.pem").write_text("hello")
    if "cafile" in config:
        config = {"cafile": str(tmp_path / config["cafile"])}
    with pytest.raises(InvalidConfig, match=message):
        client_class({"url": "https://actions.example/webhook", **config})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        # A secret read from a file, with its line break: every call failed, and the log line
        # said why with the secret in it (`Illegal header value b's3cret\\n'`).
        ({"headers": {"X-Api-Key": "s3cret\n"}}, "header 'X-Api-Key' holds a line break"),
        ({"headers": {"X-Api-Key": "s3cret\r\nX-Evil: 1"}}, "'X-Api-Key' holds a line break"),
        ({"headers": {"X-Api-Key": "s3c\x00ret"}}, "header 'X-Api-Key' holds a control char"),
        ({"headers": {"X-Api-Key": "s3c\ud800"}}, "header 'X-Api-Key' is no UTF-8 text"),
        ({"headers": {"X Api Key": "s3cret"}}, "'X Api Key' is no header name"),
        # Before, sent as the text "None".
        ({"headers": {"X-Api-Key": None}}, "header 'X-Api-Key' has no value"),
        ({"params": {"team": None}}, "parameter 'team' has no value"),
    ],
)
@pytest.mark.parametrize("client_class", [ActionServerClient, NLGClient])
def test_a_header_no_request_can_carry_fails_at_startup(
    config: dict[str, Any], message: str, client_class: type
) -> None:
    with pytest.raises(InvalidConfig, match=message) as raised:
        client_class({"url": "https://actions.example/webhook", **config})
    assert "s3c" not in str(raised.value)


async def test_header_values_are_sent_as_rasa_sends_them(
    broken_server: BrokenActionServer,
) -> None:
    """Before, a value with a space around it failed every call, and one with a letter
    outside ASCII raised a UnicodeEncodeError out of the turn (no answer, the message lost).
    Now the space goes (it is no part of a header's value, RFC 9110 section 5.5) and the
    value is sent in UTF-8, as Rasa's aiohttp sends it."""
    headers = {"X-Api-Key": " s3cret\t", "X-Team": "Café", "X-Count": 3, "X-Auth": "Bearer a\tb c"}
    client = ActionServerClient({"url": _url(broken_server, "/ok"), "headers": headers})
    assert (await client.run("action_x", "u1", {}, None))["responses"] == [{"text": "ok"}]
    await client.aclose()
    got = broken_server.headers[-1]
    assert got["X-Api-Key"] == "s3cret"
    assert got["X-Team"].encode("latin-1").decode("utf-8") == "Café"
    assert got["X-Count"] == "3"
    assert got["X-Auth"] == "Bearer a\tb c"  # spaces and tabs inside a value are kept


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("localhost:5055/webhook", "must start with http:// or https://"),
        ("actions:5055", "must start with http:// or https://"),
        ("ftp://actions.example/webhook", "must start with http:// or https://"),
        ("http:///webhook", "name a host"),
        ("http://user:secret@actions.example:99999/webhook", "is not a URL: Port out of range"),
    ],
)
@pytest.mark.parametrize("client_class", [ActionServerClient, NLGClient])
def test_a_url_no_call_can_use_fails_at_startup(url: str, message: str, client_class: type) -> None:
    """Before, `url: localhost:5055/webhook` (no scheme: read as scheme `localhost`) started,
    and then every custom action failed; the error never shows the URL's credentials."""
    with pytest.raises(InvalidConfig, match=message) as raised:
        client_class({"url": url})
    assert "secret" not in str(raised.value)


async def test_a_numeric_basic_auth_password_is_sent_as_rasa_sends_it(
    broken_server: BrokenActionServer,
) -> None:
    """`password: 1234` in endpoints.yml is a number to YAML; Rasa's aiohttp sends it as
    text. Before, botserver refused to start: "basic_auth needs 'username' and 'password'"."""
    auth = {"username": "bot", "password": 1234}
    client = ActionServerClient({"url": _url(broken_server, "/ok"), "basic_auth": auth})
    assert (await client.run("action_x", "u1", {}, None))["responses"] == [{"text": "ok"}]
    await client.aclose()
    assert broken_server.headers[-1]["Authorization"] == "Basic Ym90OjEyMzQ="  # bot:1234


@pytest.mark.parametrize(
    ("basic_auth", "message"),
    [
        ({"username": "bot"}, "'basic_auth' needs a 'password'"),
        ({"password": "s3c"}, "'basic_auth' needs a 'username'"),
        ({"username": "bot", "password": None}, "'basic_auth' needs a 'password'"),
        ({"username": "bot", "password": ["s3c"]}, "'basic_auth' 'password' must be text"),
        ({"username": "bot", "password": True}, "'basic_auth' 'password' must be text"),
        ({"username": "a:b", "password": "s3c"}, "'username' cannot hold a ':'"),
        ("bot:s3c", "'basic_auth' must be a mapping with 'username' and 'password'"),
    ],
)
@pytest.mark.parametrize("client_class", [ActionServerClient, NLGClient])
def test_basic_auth_no_request_can_carry_fails_at_startup(
    basic_auth: Any, message: str, client_class: type
) -> None:
    with pytest.raises(InvalidConfig, match=message) as raised:
        client_class({"url": "https://actions.example/webhook", "basic_auth": basic_auth})
    assert "s3c" not in str(raised.value)


@pytest.mark.parametrize("token", ["", 0, False])
async def test_an_empty_token_is_not_sent_as_in_rasa(
    broken_server: BrokenActionServer, token: object
) -> None:
    """`token: ${ACTION_TOKEN}` with the variable set empty: Rasa sends no token. Before,
    botserver sent `?token=` (a gateway checking tokens refused it). Nor `token: 0` or
    `false` (Rasa sends a token only when it is truthy; before, `?token=0` and
    `?token=False`), as the model server's and the NLU server's."""
    client = ActionServerClient({"url": _url(broken_server, "/ok"), "token": token})
    await client.run("action_x", "u1", {}, None)
    await client.aclose()
    assert broken_server.requests[-1][0] == "/ok"


@pytest.mark.parametrize("client_class", [ActionServerClient, NLGClient])
async def test_a_query_in_the_url_is_sent_beside_the_token_and_params(
    broken_server: BrokenActionServer, client_class: type
) -> None:
    """An Azure Function's `?code=` or a gateway's `?apikey=` in `url:` reaches the server
    with the token and params added, as Rasa's aiohttp sends them. Before, httpx replaced the
    URL's query with them: the key was never sent, and every call was refused."""
    url = _url(broken_server, "/ok?code=fn-key")
    await _call(client_class({"url": url, "token": "s3cret", "params": {"team": "a"}}))
    assert broken_server.requests[-1][0] == "/ok?code=fn-key&team=a&token=s3cret"


@pytest.mark.parametrize("client_class", [ActionServerClient, NLGClient])
async def test_a_cookie_the_server_sets_is_not_sent_back(
    broken_server: BrokenActionServer, client_class: type
) -> None:
    """Rasa opens a session per call, so it never sends a cookie back. Before, the pooled
    client kept every cookie an answer set and sent it with every later call, for every
    conversation: state one user's call left went along with another's."""
    await _call(client_class({"url": _url(broken_server, "/cookie")}), times=2)
    assert "Cookie" not in broken_server.headers[-1]


async def _call(client: ActionServerClient | NLGClient, times: int = 1) -> None:
    """Calls the server `times` times (an action, or a response), then closes the client."""
    try:
        for _ in range(times):
            if isinstance(client, NLGClient):
                await client.generate("utter_greet", {}, "rest")
            else:
                await client.run("action_x", "u1", {}, None)
    finally:
        await client.aclose()


async def test_an_action_that_hangs_for_many_conversations_does_not_hold_the_others() -> None:
    """A custom action stuck for 100 conversations (the backend it calls hangs), within the
    action `timeout`: every other conversation's actions still run. Before, the 100 calls
    held the client's 100 connections (httpx's cap, one host): every other action waited for
    one, its wait counted against its own timeout, and it failed as the action server not
    answering. The callback channel's twin."""
    import json

    from starlette.types import Receive, Scope, Send

    from tests.serving import serving, until_arrived

    stuck: list[str] = []
    release = asyncio.Event()

    async def action_server(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = json.loads((await receive())["body"])
        if body["next_action"] == "action_check_order":
            stuck.append(body["sender_id"])
            await release.wait()
        answer = json.dumps({"events": [], "responses": [{"text": body["sender_id"]}]})
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer.encode()})

    async with serving(action_server) as url:
        client = ActionServerClient({"url": f"{url}/webhook", "timeout": 8})
        slow = [
            asyncio.create_task(client.run("action_check_order", f"s{n}", {}, None))
            for n in range(100)
        ]
        try:
            await until_arrived(stuck, 100)
            result = await client.run("action_greet", "u1", {}, None)
            assert result["responses"] == [{"text": "u1"}]
            assert not any(task.done() for task in slow)  # all 100 still held meanwhile
        finally:
            release.set()
            await asyncio.gather(*slow, return_exceptions=True)
            await client.aclose()


def _answering(status: int, body: bytes) -> ActionServerClient:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
    config = {"url": "http://actions.test/webhook", "max_response_bytes": 40_000_000}
    return ActionServerClient(config, transport=transport)


def _many_events_document(events: int = 120_000, messages: int = 60_000) -> dict[str, Any]:
    """An answer of `events` bot events and `messages` messages."""
    event = {"event": "bot", "text": "hi", "data": {"custom": {"k": list(range(20))}}}
    message = {"text": "hello", "custom": {"a": [1, 2, 3]}}
    return {
        "events": [{**event, "text": f"t{i}"} for i in range(events)],
        "responses": [{**message, "text": f"m{i}"} for i in range(messages)],
    }


def _many_events() -> bytes:
    """17 MB: 120,000 bot events and 60,000 messages, more than an answer may hold."""
    return orjson.dumps(_many_events_document())


@pytest.fixture
def released(monkeypatch: pytest.MonkeyPatch) -> list[int | str]:
    """How many values each document handed to the releasing thread held at its top, or
    "held elsewhere" for one it could not empty (nothing freed a piece at a time)."""
    freeing._RELEASER.submit(lambda: None).result()  # what earlier tests let go of
    sizes: list[int | str] = []
    empty = freeing.empty_json_in_pieces

    def recording(items: list[Any]) -> None:
        alone = freeing._item_references(items, 0) == freeing._ALONE_IN_LIST
        sizes.append(len(items[0]) if alone else "held elsewhere")
        empty(items)

    monkeypatch.setattr(freeing, "empty_json_in_pieces", recording)
    return sizes


async def _handed_over(released: list[int | str]) -> None:
    """Waits (up to 0.4 s) for the releasing thread to be handed a document."""
    for _ in range(40):
        if released:
            return
        await asyncio.sleep(0.01)


@pytest.mark.timing
async def test_a_big_answer_refused_is_freed_off_the_loop(released: list[int | str]) -> None:
    """Before, an answer of more events than a turn takes was refused, and its 17 MB of
    parsed JSON freed at once on the event loop, where the error was dropped or at a later
    garbage collection: 37-42 ms of the loop thread's CPU (a probe with the collector off).
    Now the answer is freed a piece at a time in a thread."""
    client = _answering(200, _many_events())
    said = ""
    async with loop_hold() as hold:
        try:  # the error dropped here, as a turn drops it
            await client.run("action_many", "u1", {"events": []}, None)
        except ActionError as e:
            said = str(e)
        await _handed_over(released)
        freeing._RELEASER.submit(lambda: None).result()
    await client.aclose()
    assert "120000 events and 60000 responses" in said
    assert released == [2]  # its events and its responses
    assert hold.loop_busiest < 0.012 * hold.slowness, hold


@pytest.mark.timing
async def test_a_big_error_answer_is_told_without_writing_it_out_on_the_loop(
    released: list[int | str],
) -> None:
    """An action server's error answer is told in the log as its JSON's first 200
    characters. Before, a 17 MB one was written out whole as JSON on the event loop for them
    (0.37-0.43 s of the loop thread's CPU); now only its start is written."""
    body = _many_events()
    client = _answering(500, body)
    async with loop_hold() as hold:
        with pytest.raises(ActionError) as raised:
            await client.run("action_many", "u1", {"events": []}, None)
        freeing._RELEASER.submit(lambda: None).result()
    await client.aclose()
    # The answer's JSON starts as that of its first 20 events (2,600 characters) does.
    start = json.dumps(_many_events_document(events=20, messages=0))[:1000]
    shown = " ".join(start.split())[:200]
    assert str(raised.value).endswith(f"answered HTTP 500: {shown}")
    assert released == [2]
    assert hold.loop_busiest < 0.012 * hold.slowness, hold


@pytest.mark.timing
async def test_a_big_error_that_is_no_text_is_told_without_writing_it_out_on_the_loop(
    released: list[int | str],
) -> None:
    """An error answer's `error` that is no text (an object, a list) is told as its JSON's
    start, as a whole answer is. Before, it was written out whole with `str()` on the event
    loop for the log's 200 characters: 17 MB of it held the loop thread 0.3 s."""
    client = _answering(500, orjson.dumps({"error": _many_events_document()}))
    async with loop_hold() as hold:
        with pytest.raises(ActionError) as raised:
            await client.run("action_many", "u1", {"events": []}, None)
        freeing._RELEASER.submit(lambda: None).result()
    await client.aclose()
    assert hold.loop_busiest < 0.012 * hold.slowness, hold
    start = json.dumps(_many_events_document(events=20, messages=0))[:1000]
    shown = " ".join(start.split())[:200]
    assert str(raised.value).endswith(f"answered HTTP 500: {shown}")
    assert released == [1]


async def test_a_big_message_an_nlg_server_gives_and_is_refused_is_freed_off_the_loop(
    released: list[int | str],
) -> None:
    """As an action server's refused answer: handed to the releasing thread, not dropped on
    the loop with the error."""
    message = {"text": 5, "custom": {"items": [{"n": i} for i in range(50_000)]}}
    body = orjson.dumps(message)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    nlg = NLGClient({"url": "http://nlg.test/nlg"}, transport=transport)
    try:
        with pytest.raises(ActionError, match="'text' has the wrong type"):
            await nlg.generate("utter_greet", {"events": []}, "rest")
        await _handed_over(released)
    finally:
        await nlg.aclose()
    assert released == [2]  # its text and its custom payload


async def test_a_big_answer_with_an_invalid_event_is_freed_off_the_loop(
    released: list[int | str],
) -> None:
    """An answer refused for an event it cannot read (found while reading each event) is
    handed to the releasing thread too: the error's context held the reader's frames, and
    so the answer, until the turn dropped the error on the loop."""
    event = {"event": "bot", "text": "hi", "data": {"custom": {"k": list(range(2_000))}}}
    body = orjson.dumps({"events": [event] * 999 + [{"event": "slot"}], "responses": []})
    assert len(body) > 8_000_000
    client = _answering(200, body)
    try:
        with pytest.raises(ActionError, match="event 999 is invalid"):
            await client.run("action_many", "u1", {"events": []}, None)
        await _handed_over(released)
    finally:
        await client.aclose()
    assert released == [2]  # its events and its responses, nobody else holding them
