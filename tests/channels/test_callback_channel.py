"""The callback channel answers "success" and POSTs each bot message to the configured URL."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from starlette.types import Receive, Scope, Send

from server.api.app import create_app
from server.channels import attach_channels, load_channels
from server.channels.callback import CallbackInput
from server.errors import InvalidConfig
from tests.channels.conftest import concertbot_server, echo, modelless_app
from tests.loop_lag import paced
from tests.serving import (
    failing_handshakes,
    serving,
    serving_from_the_first_retry,
    until_arrived,
)
from tests.tls_certificates import self_signed


class Receiver:
    """A local HTTP server standing in for the user's callback endpoint."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.status = 200
        self.headers: dict[str, str] = {}
        self.body = b""
        self.app = FastAPI()
        self.app.add_api_route("/bot", self.receive, methods=["POST"])

    async def receive(self, request: Request) -> Response:
        self.received.append((await request.json(), {**request.headers, **request.query_params}))
        return Response(self.body, status_code=self.status, headers=self.headers)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    r = Receiver()
    async with serving(r.app) as url:
        yield r, f"{url}/bot"


async def _bot(credentials: dict[str, Any]) -> tuple[httpx.AsyncClient, Any]:
    (channel,) = load_channels({"callback": credentials})
    app = create_app()
    attach_channels(app, [channel], echo)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot")
    return client, channel


async def _say(credentials: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
    client, channel = await _bot(credentials)
    try:
        return await client.post("/webhooks/callback/webhook", json=body)
    finally:
        await client.aclose()
        await channel.aclose()


async def _say_hello(credentials: dict[str, Any], sender: str) -> httpx.Response:
    return await _say(credentials, {"sender": sender, "message": "hello"})


async def test_replies_are_posted_to_the_callback_url(receiver: tuple[Receiver, str]) -> None:
    r, url = receiver
    client, channel = await _bot({"url": url, "headers": {"X-Bot": "b1"}, "token": "tk"})
    try:
        health = await client.get("/webhooks/callback/")
        answer = await client.post(
            "/webhooks/callback/webhook", json={"sender": "c1", "message": "hello"}
        )
    finally:
        await client.aclose()
        await channel.aclose()
    assert health.json() == {"status": "ok"}
    assert answer.status_code == 200
    assert answer.text == "success"
    assert answer.headers["content-type"].startswith("text/plain")
    assert [body for body, _ in r.received] == [
        {"recipient_id": "c1", "text": "echo: hello"},
        {"recipient_id": "c1", "text": "from c1 via callback"},
    ]
    headers = r.received[0][1]
    assert headers["x-bot"] == "b1" and headers["token"] == "tk"


async def test_the_urls_own_query_is_kept_beside_token_and_params(
    receiver: tuple[Receiver, str],
) -> None:
    """A URL's own key (`?code=...`, as Azure Functions and many webhook services take it)
    was dropped once `token` or `params` was set: every reply was refused by the receiver.
    Rasa sends both."""
    r, url = receiver
    answer = await _say_hello(
        {"url": f"{url}?code=k1&lang=de", "token": "tk", "params": {"v": 2}}, "c13"
    )
    assert answer.text == "success"
    _, query = r.received[0]
    assert (query["code"], query["lang"], query["token"], query["v"]) == ("k1", "de", "tk", "2")


async def test_a_content_type_in_headers_is_sent_as_configured(
    receiver: tuple[Receiver, str],
) -> None:
    """As Rasa sends it: before, `application/json` replaced it, and a receiver that asks
    for a charset (or a type of its own) refused every reply."""
    r, url = receiver
    headers = {"Content-Type": "application/json; charset=utf-8"}
    answer = await _say_hello({"url": url, "headers": headers}, "c14")
    assert answer.text == "success"
    assert r.received[0][1]["content-type"] == "application/json; charset=utf-8"


def test_a_url_no_request_can_be_sent_to_stops_the_start() -> None:
    """Before, the server started, and every reply failed with `InvalidURL` in the log."""
    with pytest.raises(InvalidConfig, match="non-printable ASCII character"):
        load_channels({"callback": {"url": "http://127.0.0.1/b\x01ot"}})


async def test_a_url_with_a_line_break_or_a_space_before_it_is_read_as_rasa_reads_it(
    receiver: tuple[Receiver, str],
) -> None:
    """A URL from an environment variable or a file often ends with a line break: Rasa
    (urlsplit) drops a tab or line break and what precedes the scheme, and sends. Before,
    the start was refused (a line break) or every reply failed (a space before it)."""
    r, url = receiver
    for written in (f"{url}\n", f"{url}\r\n", f"  {url}", f"{url[:-2]}\t{url[-2:]}"):
        r.received.clear()
        answer = await _say_hello({"url": written, "token": "tk"}, "c15")
        assert answer.text == "success"
        assert [query["token"] for _, query in r.received] == ["tk", "tk"]  # both replies


async def test_metadata_that_is_no_object_is_ignored_as_rasa_ignores_it(
    receiver: tuple[Receiver, str],
) -> None:
    # Rasa's callback channel reads no metadata; the REST channel refuses such a body (400).
    r, url = receiver
    client, channel = await _bot({"url": url})
    try:
        answer = await client.post(
            "/webhooks/callback/webhook",
            json={"sender": "c9", "message": "hello", "metadata": '{"plan": "pro"}'},
        )
    finally:
        await client.aclose()
        await channel.aclose()
    assert answer.text == "success"
    assert r.received[0][0] == {"recipient_id": "c9", "text": "echo: hello"}


async def test_a_metadata_object_reaches_the_turn_where_rasa_drops_it(
    receiver: tuple[Receiver, str],
) -> None:
    """A difference from Rasa (docs/differences-from-rasa.md): Rasa's callback channel reads
    no metadata; ours hands an object on to the turn, as the REST channel does."""
    _, url = receiver
    (channel,) = load_channels({"callback": {"url": url}})
    seen: list[Any] = []

    async def handle(message: Any) -> None:
        seen.append((message.metadata, message.input_channel))
        await echo(message)

    app = create_app()
    attach_channels(app, [channel], handle)
    body = {"sender": "c8", "message": "hi", "metadata": {"plan": "pro"}, "input_channel": "x"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as c:
        answer = await c.post("/webhooks/callback/webhook", json=body)
    await channel.aclose()
    assert answer.text == "success"
    assert seen == [({"plan": "pro"}, "callback")]  # input_channel is not read, as in Rasa


async def test_a_body_without_a_message_is_a_400_not_success(
    receiver: tuple[Receiver, str],
) -> None:
    """Before, `success` while nothing was handled and nothing would ever be posted (a
    client sending `text` for `message` waited for replies in vain); Rasa answers a 500."""
    r, url = receiver
    answer = await _say({"url": url}, {"sender": "c11", "text": "hello"})
    assert answer.status_code == 400
    assert answer.json()["message"] == "The request body has no 'message': nothing was handled."
    assert r.received == []


async def test_a_failing_receiver_does_not_fail_the_webhook(
    receiver: tuple[Receiver, str],
) -> None:
    r, url = receiver
    r.status = 500
    answer = await _say_hello({"url": url}, "c2")
    assert answer.text == "success"
    assert len(r.received) == 2


async def test_an_error_answer_is_logged_with_what_the_receiver_said(
    receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the log said only `HTTP 500`: why the receiver refused the message (which
    Rasa logs) was nowhere."""
    r, url = receiver
    r.status = 422
    r.body = b'{"error": "unknown recipient c10"}'
    answer = await _say_hello({"url": url}, "c10")
    assert answer.text == "success"
    assert (
        f"callback: {url} answered HTTP 422 to a bot message to c10, which was not delivered: "
        "unknown recipient c10"
    ) in caplog.text


async def test_a_receiver_that_is_down_does_not_fail_the_webhook() -> None:
    from bench.tcp_proxy import free_port

    answer = await _say_hello({"url": f"http://127.0.0.1:{free_port()}/bot"}, "c3")
    assert answer.text == "success"


async def test_a_reply_that_could_not_connect_is_posted_once_the_receiver_listens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The receiver restarting, its port refusing connections for a moment: nothing of the
    POST was sent, so it is tried again after a short back-off, and each reply arrives
    once. Before, the turn's replies were lost at the first refused connection."""
    r = Receiver()
    async with serving_from_the_first_retry(r.app, monkeypatch) as (url, pauses):
        answer = await _say_hello({"url": f"{url}/bot"}, "c13")
    assert answer.text == "success"
    assert pauses == [0.25]
    assert [body["text"] for body, _ in r.received] == ["echo: hello", "from c13 via callback"]


async def _post_within_1_s(url: str, sender: str) -> None:
    """A bot message to `sender` pushed through a callback channel posting to `url`, whose
    `timeout` is 1 s."""
    channel = CallbackInput.from_credentials({"url": url, "timeout": 1})
    try:
        await channel.get_output_channel().send_response(sender, {"text": "hi"})
    finally:
        await channel.aclose()


async def test_tries_of_a_post_that_could_not_connect_stay_within_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection that fails slowly (a TLS proxy closing it after 0.6 s: the receiver behind
    it is down) is not tried again past `timeout`, which bounds a POST as a whole, retries
    and their pauses included (a pushed message or reminder waits for it under the
    conversation's lock; shutdown waits `timeout` for it). Before, each try had a `timeout`
    of its own: three tries and 1.25 s of pauses for a 1 s timeout."""
    async with failing_handshakes(after=0.6) as (url, taken):
        await _post_within_1_s(f"{url}/bot", "c15")
    # One try, or two when the pause leaves time; never the third (0.6 + 0.25 + 0.6 s).
    assert 1 <= len(taken) < 3
    assert "could not deliver a bot message to c15 at https://" in caplog.text


async def test_a_post_that_could_not_connect_is_logged_so_when_no_retry_has_the_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection that fails after 0.6 s (a TLS proxy whose receiver is down), with a 1 s
    `timeout`: a retry after the 0.25 s pause would have 0.15 s, less than the try that just
    failed took. The error says why the message was lost: the URL cannot be reached. Before,
    that retry was made, timed out, and the line said the receiver "did not answer within
    1 s", as for one that took the POST and hung."""
    async with failing_handshakes(after=0.6) as (url, taken):
        await _post_within_1_s(f"{url}/bot", "c16")
    assert len(taken) == 1
    [line] = [m for m in caplog.messages if "could not deliver" in m]
    assert line.startswith(
        f"callback: could not deliver a bot message to c16 at {url}/bot: it cannot be reached ("
    ), line


async def test_a_post_whose_retry_pause_ran_past_the_timeout_is_logged_as_unreachable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The receiver refuses the connection; the 0.25 s pause before the retry ends after the
    1 s `timeout` (an event loop held by other work). Before, the retry was made with no
    time left, timed out at once, and the line said the receiver "did not answer within
    1 s", as one that took the POST and hung."""
    from bench.tcp_proxy import free_port
    from server import http_clients

    async def overslept(delay: float) -> None:
        await asyncio.sleep(1.0)

    monkeypatch.setattr(http_clients, "_pause", overslept)
    url = f"http://127.0.0.1:{free_port()}/bot"
    await _post_within_1_s(url, "c17")
    [line] = [m for m in caplog.messages if "could not deliver" in m]
    assert line.startswith(
        f"callback: could not deliver a bot message to c17 at {url}: it cannot be reached ("
    ), line


async def test_a_reply_that_reached_the_receiver_is_not_posted_again() -> None:
    """The receiver took the POST and closed the connection without an answer: it may have
    shown the reply, so it is not tried again (a retry could show it twice)."""
    received: list[str] = []

    async def hanging_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append((await reader.readuntil(b"\r\n")).decode())
        writer.close()

    server = await asyncio.start_server(hanging_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        answer = await _say_hello({"url": f"http://127.0.0.1:{port}/bot"}, "c14")
    finally:
        server.close()
        await server.wait_closed()
    assert answer.text == "success"
    assert received == ["POST /bot HTTP/1.1\r\n"] * 2  # each of the two replies, once


async def test_a_receiver_whose_certificate_is_not_trusted_is_logged_as_such(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, `it cannot be reached`, as for a receiver that is down: nothing said that TLS
    verification failed (a self-signed certificate wants `cafile`)."""
    r = Receiver()
    cert, key = self_signed(tmp_path)
    async with serving(r.app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        answer = await _say_hello({"url": f"{url}/bot"}, "c12")
    assert answer.text == "success"
    assert r.received == []
    [line] = [m for m in caplog.messages if "could not deliver" in m]
    assert line.startswith(
        f"callback: could not deliver a bot message to c12 at {url}/bot: it cannot be"
    )
    assert "CERTIFICATE_VERIFY_FAILED" in line


async def test_pushed_messages_use_the_same_output(receiver: tuple[Receiver, str]) -> None:
    r, url = receiver
    (channel,) = load_channels({"callback": {"url": url}})
    output = channel.get_output_channel()
    assert output is not None
    await output.send_response("c4", {"text": "Remember to call John!"})
    await channel.aclose()
    assert r.received[0][0] == {"recipient_id": "c4", "text": "Remember to call John!"}


async def test_a_redirect_is_not_followed_and_is_logged_as_not_delivered(
    receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    r, url = receiver
    r.status = 307
    r.headers = {"Location": "https://bob:pw-1@elsewhere.example/bot?sig=x"}
    answer = await _say_hello({"url": url}, "c5")
    assert answer.text == "success"
    # Before: a 3xx answer was taken as delivered, without a word; then, without where to.
    assert (
        "answered HTTP 307 to a bot message to c5, a redirect to https://elsewhere.example/bot, "
        "which is not followed: the message was not delivered"
    ) in caplog.text


@pytest.mark.timing
async def test_a_callback_that_trickles_its_answer_is_cut_at_the_timeout() -> None:
    async def trickle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(30):  # a byte every 0.1 s: httpx's per-read timeout never fires
            await send({"type": "http.response.body", "body": b".", "more_body": True})
            await asyncio.sleep(0.1)
        await send({"type": "http.response.body", "body": b""})

    async with serving(trickle) as url:
        started = time.monotonic()
        answer = await _say_hello({"url": f"{url}/bot", "timeout": 0.3}, "c6")
        took = time.monotonic() - started
    # Before: each of the turn's two messages held the conversation 3 s.
    assert answer.text == "success"
    assert took < 0.6 + paced(0.9, below=2.4)  # two timeouts of 0.3 s; before, 6 s


async def test_after_a_timeout_the_rest_of_the_turn_is_not_sent_to_wait_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    arrived: list[float] = []
    answered = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        arrived.append(time.monotonic())
        await answered.wait()  # past the timeout, for as long as the turn runs
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with serving(slow) as url:
        # 1 s: with 0.3 s, on a loaded machine the first POST timed out before it arrived.
        answer = await _say_hello({"url": f"{url}/bot", "timeout": 1.0}, "c7")
        answered.set()
    # Before: each message of the turn waited the timeout in turn, the conversation's lock
    # held all along (timeout x messages; 10 s x 2 by default).
    assert answer.text == "success"
    assert len(arrived) == 1
    assert "1 more bot message to c7 not sent: the callback URL" in caplog.text
    # the lost message's line names its conversation (before, the URL alone)
    assert f"could not deliver a bot message to c7 at {url}/bot: it did not answer" in caplog.text


async def test_a_slow_callback_url_does_not_hold_the_conversations_next_message(
    concertbot_model: Path,
) -> None:
    """The callback URL holds the reply to message 1 (slow, but within its timeout).
    Before, the turn kept the conversation's lock while it posted: message 2 was not even
    handled until the URL answered (and its lock wait could run out: a 503). Now message 2
    is handled at once; its reply is posted after message 1's, in order, and each webhook
    still answers `success` once its own replies were posted."""
    received: list[str] = []
    first_arrived, release = asyncio.Event(), asyncio.Event()

    async def slow_receiver(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = json.loads((await receive())["body"])
        if not received:
            first_arrived.set()
            await release.wait()
        received.append(body["text"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with serving(slow_receiver) as callback_url:
        credentials = {"callback": {"url": f"{callback_url}/bot", "timeout": 30}}
        async with (
            concertbot_server(concertbot_model, "http://127.0.0.1:9/webhook", credentials) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):

            def say(text: str) -> Any:
                body = {"sender": "slowcb", "message": text}
                return asyncio.create_task(client.post("/webhooks/callback/webhook", json=body))

            first = say("/greet")
            await asyncio.wait_for(first_arrived.wait(), 10)
            second = say("/goodbye")
            handled: list[str] = []
            for _ in range(100):  # up to 5 s
                tracker = (await client.get("/conversations/slowcb/tracker")).json()
                handled = [e["text"] for e in tracker["events"] if e["event"] == "user"]
                if len(handled) == 2:
                    break
                await asyncio.sleep(0.05)
            assert handled == ["/greet", "/goodbye"]  # while message 1's reply is held
            assert not first.done() and not second.done()
            release.set()
            answers = [await first, await second]
    assert [answer.text for answer in answers] == ["success", "success"]
    assert received == ["Hey there!", "Goodbye :("]


async def test_receivers_that_hang_for_many_conversations_do_not_hold_the_others_replies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The callback URL hangs for 100 conversations (a receiver whose backend for them is
    stuck), within its timeout. Before, their POSTs held the client's 100 connections: the
    reply to any other conversation waited for one, its wait counted against its own
    timeout, and it was lost, logged as the URL not answering, naming no conversation."""
    stuck_arrived: list[str] = []
    release = asyncio.Event()
    delivered: list[str] = []

    async def receiver(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        recipient = json.loads((await receive())["body"])["recipient_id"]
        if recipient.startswith("stuck"):
            stuck_arrived.append(recipient)
            await release.wait()
        else:
            delivered.append(recipient)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with serving(receiver) as url:
        channel = CallbackInput.from_credentials({"url": f"{url}/bot", "timeout": 8})
        stuck = [
            asyncio.create_task(
                channel.get_output_channel().send_response(f"stuck{n}", {"text": "hi"})
            )
            for n in range(100)
        ]
        try:
            await until_arrived(stuck_arrived, 100)
            await channel.get_output_channel().send_response("fine", {"text": "hi"})
            assert delivered == ["fine"]
            assert not any(task.done() for task in stuck)  # all 100 still held meanwhile
        finally:
            release.set()
            await asyncio.gather(*stuck)
            await channel.aclose()
    assert not [m for m in caplog.messages if "could not deliver" in m]


# Pushes 300 replies (300 conversations' reminders due at once) to a callback URL that hangs,
# in a process allowed 256 files, then opens 20 files once its open files stop growing.
_PUSHING_TO_A_HUNG_URL = """
import asyncio, os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from server.channels.callback import CallbackInput

async def main():
    channel = CallbackInput.from_credentials({"url": sys.argv[1], "timeout": 60})
    pushes = [
        asyncio.ensure_future(channel.get_output_channel().send_response(f"c{n}", {"text": "hi"}))
        for n in range(300)
    ]
    last, steady = -1, 0
    for _ in range(200):
        await asyncio.sleep(0.1)
        try:
            now = len(os.listdir("/proc/self/fd"))
        except OSError:
            break  # no file left even for that
        steady = steady + 1 if now == last else 0
        last = now
        if steady == 10 and now > 50:
            break
    try:
        files = [open(os.devnull) for _ in range(20)]
        print("opened", len(files), flush=True)
    except OSError as e:
        print("refused:", e, flush=True)
    os._exit(0)

asyncio.run(main())
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
async def test_replies_to_a_url_that_hangs_leave_the_server_files_to_open() -> None:
    """300 conversations' replies pushed at once (their reminders due at the same minute) to
    a callback URL that hangs, in a server allowed 256 open files (systemd's default soft
    limit is 1024): the POSTs hold 100 connections at most (a quarter of the files the
    process may open, at least httpx's 100), the others wait for one, and the server can
    still open files, sockets, database connections. Before (no cap), they took every
    file: each new connection, webhook call and store connection failed ("Too many open
    files")."""
    arrived: list[str] = []
    release = asyncio.Event()

    async def hanging(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        arrived.append(scope["path"])
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with serving(hanging, timeout_graceful_shutdown=0) as url:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _PUSHING_TO_A_HUNG_URL,
            f"{url}/bot",
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), 120)
        finally:
            release.set()
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert out.decode().strip() == "opened 20"
    assert 0 < len(arrived) <= 100


async def test_a_message_while_no_model_is_loaded_is_a_409_as_a_streamed_rest_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = {"rest": None, "callback": {"url": "http://127.0.0.1:1/bot"}}
    app = modelless_app(tmp_path, credentials)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bot"
    ) as client:
        body = {"sender": "u", "message": "hi"}
        callback = await client.post("/webhooks/callback/webhook", json=body)
        streamed = await client.post("/webhooks/rest/webhook?stream=true", json=body)
    # Before: "success" (with an ERROR line): the sender believed the message taken.
    assert (callback.status_code, callback.json()) == (streamed.status_code, streamed.json())
    assert callback.status_code == 409
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
