"""The NLG client against a local NLG server: Rasa's request, the message back, failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from bench.tcp_proxy import free_port
from server.dialogue.actions import ActionContext, events_from_action_result
from server.dialogue.domain import Domain
from server.dialogue.nlg_client import NLGClient
from server.errors import ActionError
from server.trackers.events import BotUttered, SlotSet
from server.trackers.tracker import Tracker
from tests.action_servers.fixtures import broken_action_server
from tests.dialogue.conversation_fixtures import (
    Conversation,
    Turn,
    make_agent,
    train_files,
)
from tests.serving import serving, serving_from_the_first_retry


class NLGServer:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.in_flight = self.most_in_flight = 0
        self.empty: set[str] = set()  # responses answered with an empty body
        self.app = FastAPI()
        self.app.add_api_route("/nlg", self.nlg, methods=["POST"])

    async def nlg(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((body, dict(request.query_params)))
        name = body["response"]
        if name == "utter_slow":
            await asyncio.sleep(2)
        if name.startswith("utter_paced"):
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            await asyncio.sleep(0.2)
            self.in_flight -= 1
        if name == "utter_nothing" or name in self.empty:
            return Response(status_code=200)
        if name == "utter_broken":
            return JSONResponse({"error": "template missing"}, status_code=500)
        if name == "utter_unavailable":
            return Response(status_code=503)
        if name == "utter_wrong":
            return JSONResponse({"text": ["not", "a", "string"]})
        if name == "utter_hello" and body["tracker"]["sender_id"] == "echoes":
            # A server that sends back what it rendered, under a name of its own.
            return JSONResponse({"text": "Hello", "utter_action": "hello_v2", "lang": "en"})
        if name == "utter_hello" and body["tracker"]["sender_id"] == "named":
            return JSONResponse({"text": "Hello", "template_name": "hello", "rephrase": True})
        if name == "utter_hello" and body["tracker"]["sender_id"] == "tagged":
            return JSONResponse({"lang": "en", "text": "Hello", "id": "hello_en"})
        return JSONResponse(
            {"text": f"{name} for {body['tracker']['sender_id']}", "buttons": [], "custom": None}
        )


@pytest.fixture
async def nlg_url() -> AsyncIterator[tuple[NLGServer, str]]:
    server = NLGServer()
    async with serving(server.app) as url:
        yield server, f"{url}/nlg"


async def test_the_request_is_rasas_and_the_message_comes_back(nlg_url) -> None:  # noqa: ANN001
    server, url = nlg_url
    client = NLGClient({"url": url, "token": "nlg-token"})
    tracker = {"sender_id": "u1", "slots": {"name": "Ann"}}
    message = await client.generate(
        "utter_greet", tracker, "socketio", response_id="greet_1", name="Ann"
    )
    await client.aclose()
    assert message == {"text": "utter_greet for u1", "buttons": [], "custom": None}
    body, query = server.requests[-1]
    assert body == {
        "response": "utter_greet",
        "id": "greet_1",
        "arguments": {"name": "Ann"},
        "tracker": tracker,
        "channel": {"name": "socketio"},
    }
    assert query == {"token": "nlg-token"}


async def test_the_server_gets_the_id_of_the_variation_the_slots_and_channel_allow(
    nlg_url,  # noqa: ANN001
) -> None:
    # Before: `id` was always null, though Rasa sends the variation's id (what NLG servers
    # that keep their texts by id look up).
    server, url = nlg_url
    logged_in = [{"type": "slot", "name": "logged_in", "value": True}]
    domain = Domain.from_dict(
        {
            "slots": {"logged_in": {"type": "bool", "mappings": [{"type": "custom"}]}},
            "responses": {
                "utter_greet": [
                    {"id": "hi", "text": "Hi"},
                    {"id": "hi_back", "text": "Welcome back", "condition": logged_in},
                    {"id": "hi_slack", "text": "Hi there", "channel": "slack"},
                ],
                "utter_twice": [{"id": "same", "text": "a"}, {"id": "same", "text": "b"}],
            },
        }
    )
    tracker = Tracker("u1", domain.slot_defaults())
    client = NLGClient({"url": url})
    said = []
    for channel, name, slots in [
        ("rest", "utter_greet", []),
        ("slack", "utter_greet", []),
        ("rest", "utter_greet", [SlotSet(key="logged_in", value=True)]),
        ("rest", "utter_twice", []),
        ("rest", "utter_unknown", []),
    ]:
        tracker.update_many(slots)
        ctx = ActionContext(tracker, domain, output_channel=channel, nlg_endpoint=client)
        await ctx.generate(name, day="Monday")
        body = server.requests[-1][0]
        said.append((body["id"], body["arguments"]))
    await client.aclose()
    monday = {"day": "Monday"}
    assert said == [
        ("hi", monday),
        ("hi_slack", monday),
        ("hi_back", monday),
        (None, monday),  # ids that repeat name no variation, as in Rasa
        (None, monday),
    ]


async def test_an_empty_answer_is_no_message(nlg_url) -> None:  # noqa: ANN001
    _, url = nlg_url
    client = NLGClient({"url": url})
    assert await client.generate("utter_nothing", {"sender_id": "u"}, "rest") is None
    await client.aclose()


@pytest.mark.parametrize(
    ("response", "config", "message"),
    [
        ("utter_broken", {}, "HTTP 500"),
        # Before: "answered HTTP 503: ", nothing after the colon.
        ("utter_unavailable", {}, "answered HTTP 503, with an empty body$"),
        ("utter_wrong", {}, "'text' has the wrong type"),
        ("utter_slow", {"timeout": 0.3}, "did not answer within 0.3 s"),
    ],
)
async def test_failures_are_action_errors(
    nlg_url,  # noqa: ANN001
    response: str,
    config: dict[str, Any],
    message: str,
) -> None:
    _, url = nlg_url
    client = NLGClient({"url": url, **config})
    with pytest.raises(ActionError, match=message):
        await client.generate(response, {"sender_id": "u"}, "rest")
    await client.aclose()


@pytest.mark.parametrize("name", ["empty-gzip", "empty-br", "empty-layers"])
async def test_an_empty_answer_with_a_content_encoding_is_no_message(name: str) -> None:
    """No body holds no encoding to refuse: before, one said to be `br` (or `gzip, gzip`)
    failed the response ("its answer is encoded 'br'")."""
    with broken_action_server() as server:
        client = NLGClient({"url": f"http://127.0.0.1:{server.server_address[1]}/encoded/{name}"})
        assert await client.generate("utter_nothing", {"sender_id": "u"}, "rest") is None
        await client.aclose()


async def test_an_nlg_server_restarting_gives_the_message_once_it_listens(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its port refuses connections for a moment (a deploy): nothing was sent, so the call
    is tried again after 0.25 s, then 1 s, within `timeout`. Before, the bot's message was
    lost at once (the turn went on without it)."""
    server = NLGServer()
    caplog.set_level(logging.INFO)
    async with serving_from_the_first_retry(server.app, monkeypatch) as (url, pauses):
        client = NLGClient({"url": f"{url}/nlg"})
        try:
            message = await client.generate("utter_greet", {"sender_id": "u1"}, "rest")
        finally:
            await client.aclose()
    assert message == {"text": "utter_greet for u1", "buttons": [], "custom": None}
    assert (len(server.requests), pauses) == (1, [0.25])
    assert f"NLG server: utter_greet at {url}/nlg: cannot connect (" in caplog.text


async def test_a_server_that_is_down_is_an_action_error() -> None:
    client = NLGClient({"url": f"http://127.0.0.1:{free_port()}/nlg"})
    with pytest.raises(ActionError, match="cannot reach the NLG server"):
        await client.generate("utter_greet", {"sender_id": "u"}, "rest")
    await client.aclose()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        # Before: read whole (30 MB inflated; an endless body until the timeout; 11 MB of
        # spaces was "no message").
        ("/bomb", "its answer is more than 10485760 bytes"),
        # Before: inflated to 100 MB before the size was counted.
        ("/bomb-twice", "could not be read \\(its answer is encoded 'gzip, gzip'"),
        ("/endless", "its answer is more than 10485760 bytes"),
        ("/huge", "its answer is 11534367 bytes, more than 10485760"),
        # Before: "answered HTTP 500", without the reason it gave.
        ("/crash", "the NLG server at .* answered HTTP 500: division by zero$"),
        ("/crash-lines", "answered HTTP 500: boom ERROR forged line$"),
        # Before: "answered HTTP 302: ", nothing after the colon.
        ("/redirect", "HTTP 302, a redirect to http://elsewhere.example:8080/webhook, which is"),
        # Before: a message holding half a surrogate pair broke the turn's answer (a 500).
        ("/raw/surrogate", "not JSON \\(it holds an unpaired UTF-16 surrogate escape\\)"),
    ],
)
async def test_an_answer_no_channel_could_send_is_an_action_error(path: str, message: str) -> None:
    with broken_action_server() as server:
        client = NLGClient({"url": f"http://127.0.0.1:{server.server_address[1]}{path}"})
        with pytest.raises(ActionError, match=message):
            await client.generate("utter_greet", {"sender_id": "u"}, "rest")
        await client.aclose()


def nlg_context(url: str, sender_id: str) -> tuple[ActionContext, NLGClient]:
    """An action's context in a new conversation of an empty domain, with the NLG server at
    `url`, and the NLG client (to close)."""
    domain = Domain.from_dict({})
    client = NLGClient({"url": url})
    tracker = Tracker(sender_id, domain.slot_defaults())
    return ActionContext(tracker, domain, nlg_endpoint=client), client


async def test_the_responses_of_one_action_are_asked_for_at_once_and_kept_in_order(
    nlg_url,  # noqa: ANN001
) -> None:
    server, url = nlg_url
    ctx, client = nlg_context(url, "u9")
    names = [f"utter_paced_{i}" for i in range(4)]
    result = {"responses": [{"response": name} for name in names]}
    try:
        events = await events_from_action_result(ctx, result)
    finally:
        await client.aclose()
    # Before: one request after the other, four round trips of the NLG server in the turn.
    assert server.most_in_flight == 4
    assert [e.as_dict()["text"] for e in events] == [f"{name} for u9" for name in names]


async def test_an_actions_response_the_nlg_server_gives_no_message_for_is_logged_so(
    nlg_url,  # noqa: ANN001
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As for an utter action: nothing said for it, and the log says why; the action's other
    messages and events stay. Before, nothing in the log told why the message was missing."""
    _, url = nlg_url
    ctx, client = nlg_context(url, "u10")
    result = {
        "responses": [{"response": "utter_nothing"}, {"response": "utter_after"}],
        "events": [{"event": "slot", "name": "seen", "value": True}],
    }
    try:
        with caplog.at_level(logging.WARNING, logger="server.dialogue.actions"):
            events = await events_from_action_result(ctx, result)
    finally:
        await client.aclose()
    assert [e.as_dict().get("text") for e in events] == ["utter_after for u10", None]
    assert isinstance(events[1], SlotSet)
    assert [r.getMessage() for r in caplog.records if r.name == "server.dialogue.actions"] == [
        "the NLG server gave no message for response 'utter_nothing' (an empty answer, or "
        "null): nothing is said"
    ]


# A bot whose responses all live on the NLG server: the domain lists the `utter_` actions only.
NLG_ONLY_BOT = {
    "config.yml": "language: en\npolicies:\n  - name: RulePolicy\n",
    "domain.yml": """
version: "3.1"
intents: [greet]
actions: [utter_hello]
""",
    "data/rules.yml": """
version: "3.1"
rules:
- {rule: greet, steps: [{intent: greet}, {action: utter_hello}]}
""",
}


async def greeted(bot: dict[str, str], folder: Path, nlg_url: str, sender_id: str) -> Turn:
    """The turn answering "/greet" of `bot` (trained into `folder`), with the NLG server."""
    agent = make_agent(train_files(bot, folder))
    agent.processor.nlg_endpoint = client = NLGClient({"url": nlg_url})
    try:
        return await Conversation(agent, sender_id).say("/greet")
    finally:
        await client.aclose()


async def test_an_utter_action_without_a_domain_response_is_asked_of_the_nlg_server(
    nlg_url,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    """As in Rasa, every `utter_` action is a response, whoever writes it. Before, one the
    domain held no response for was called on the action server (which has none: the
    fallback ran) and the NLG server was never asked."""
    server, url = nlg_url
    turn = await greeted(NLG_ONLY_BOT, tmp_path, url, "nlg-only")
    assert turn.actions == ["utter_hello"]
    assert turn.texts == ["utter_hello for nlg-only"]
    assert [body["response"] for body, _ in server.requests] == ["utter_hello"]


async def test_a_bot_event_names_the_response_said_whatever_the_nlg_server_answers(
    nlg_url,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    """As in Rasa, `utter_action` in the bot event's metadata is the response the bot said,
    the answer's other keys kept beside it. Before, an answer's own `utter_action` took its
    place, so a dashboard counting responses by it counted one the domain does not have."""
    _, url = nlg_url
    turn = await greeted(NLG_ONLY_BOT, tmp_path, url, "echoes")
    assert turn.texts == ["Hello"]
    assert turn.responses == ["utter_hello"]
    assert [e.metadata.get("lang") for e in turn.events if isinstance(e, BotUttered)] == ["en"]


async def test_a_bot_events_metadata_lists_the_answers_keys_then_the_response_as_rasa(
    nlg_url,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    """Rasa names the response after the answer's own keys (where the answer has no
    `utter_action` of its own): the stored event's JSON is the same, byte for byte. Before,
    `utter_action` came first."""
    _, url = nlg_url
    turn = await greeted(NLG_ONLY_BOT, tmp_path, url, "tagged")
    (bot,) = [e for e in turn.events if isinstance(e, BotUttered)]
    assert list(bot.as_dict()["metadata"]) == [
        "lang",
        "id",
        "utter_action",
        "model_id",
        "assistant_id",
    ]


async def test_every_key_of_the_answer_that_is_no_message_part_is_in_the_bot_event(
    nlg_url,  # noqa: ANN001
) -> None:
    _, url = nlg_url
    ctx, client = nlg_context(url, "named")
    try:
        bot = await ctx.generate("utter_hello")
    finally:
        await client.aclose()
    assert bot is not None
    # As in Rasa. Before, `template_name` was dropped.
    assert bot.metadata == {
        "template_name": "hello",
        "rephrase": True,
        "utter_action": "utter_hello",
    }


NLG_ONLY_FORM_BOT = {
    "config.yml": "language: en\npolicies:\n  - name: RulePolicy\n",
    "domain.yml": """
version: "3.1"
intents: [greet]
actions: [utter_ask_name]
slots:
  name:
    type: text
    mappings:
    - {type: from_text, conditions: [{active_loop: name_form, requested_slot: name}]}
forms:
  name_form:
    required_slots: [name]
""",
    "data/rules.yml": """
version: "3.1"
rules:
- rule: ask
  steps: [{intent: greet}, {action: name_form}, {active_loop: name_form}]
""",
}


async def test_a_forms_question_without_a_domain_response_is_asked_of_the_nlg_server(
    nlg_url,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    """As in Rasa, the form asks with `utter_ask_<slot>` when the domain lists that action,
    response or not. Before, only a domain response was asked for: the form asked nothing."""
    server, url = nlg_url
    turn = await greeted(NLG_ONLY_FORM_BOT, tmp_path, url, "nlg-form")
    assert turn.texts == ["utter_ask_name for nlg-form"]
    assert [body["response"] for body, _ in server.requests] == ["utter_ask_name"]


# A bot whose response is in the domain, the NLG server writing it.
DOMAIN_AND_NLG_BOT = {
    **NLG_ONLY_BOT,
    "domain.yml": """
version: "3.1"
intents: [greet]
responses:
  utter_hello:
  - text: "Hello from the domain"
""",
}


async def test_a_response_the_nlg_server_gives_no_message_for_is_logged_so(
    nlg_url,  # noqa: ANN001
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, the warning blamed the domain ("response 'utter_hello' has no variation that
    fits this conversation"), which has one that fits: the NLG server's empty answer was why."""
    server, url = nlg_url
    server.empty.add("utter_hello")
    with caplog.at_level(logging.WARNING, logger="server.dialogue.actions"):
        turn = await greeted(DOMAIN_AND_NLG_BOT, tmp_path, url, "nothing")
    assert turn.actions == ["utter_hello"]
    assert turn.texts == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "server.dialogue.actions"]
    assert warnings == [
        "the NLG server gave no message for response 'utter_hello' (an empty answer, or "
        "null): nothing is said"
    ]
