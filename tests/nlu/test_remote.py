"""RemoteNLU against a misbehaving NLU server: what it reads, and what it refuses."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from server.errors import InvalidConfig
from server.nlu.remote import RemoteNLU
from tests.action_servers.fixtures import BrokenActionServer, bomb_refusal, peak_memory_of
from tests.closing_idle_server import QUIET_SECONDS, ClosingIdleServer
from tests.fake_http import dripping_server


def _url(server: BrokenActionServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


@pytest.mark.parametrize("path", ["/bomb", "/bomb-twice"])
def test_an_answer_is_never_inflated_past_the_size_limit(
    broken_server: BrokenActionServer, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, httpx inflated the whole answer, each encoding in turn, before anything was
    checked: 500 bytes sent as `gzip, gzip` took 100 MB of memory (a bigger one, gigabytes).
    Now it is inflated only up to `max_response_bytes`, and one encoding at most is read."""
    limit = 1024 * 1024
    nlu = RemoteNLU({"url": _url(broken_server, path), "max_response_bytes": limit})
    parsed: dict = {}
    peak = peak_memory_of(lambda: parsed.update(nlu.parse("hello")))
    assert parsed["intent"] == {"name": None, "confidence": 0.0}
    assert peak < 4 * limit, peak
    assert bomb_refusal(path, limit) in caplog.text


def test_an_encoded_answer_is_read_and_only_what_is_read_is_asked_for(
    broken_server: BrokenActionServer, caplog: pytest.LogCaptureFixture, br_installed: None
) -> None:
    caplog.set_level(logging.ERROR)
    nlu = RemoteNLU({"url": _url(broken_server, "/encoded/gzip")})
    nlu.parse("hello")
    # Inflated and read as JSON: only its shape is not a parse result's.
    assert "no parse result (no 'intent' object)" in caplog.text
    assert broken_server.headers[-1]["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        # Read whole (as JSON, only not a parse result's): before, the first member only.
        ("/encoded/gzip-members", "no parse result (no 'intent' object)"),
        ("/trickled/raw-deflate", "no parse result (no 'intent' object)"),
        ("/encoded/gzip-trailing-garbage", "goes on after its end with bytes that are not gzip"),
    ],
)
def test_gzip_members_and_raw_deflate_are_read_as_the_action_server_reads_them(
    broken_server: BrokenActionServer, caplog: pytest.LogCaptureFixture, path: str, logged: str
) -> None:
    caplog.set_level(logging.ERROR)
    RemoteNLU({"url": _url(broken_server, path)}).parse("hello")
    assert logged in caplog.text


@pytest.mark.parametrize("value", [0, -1, "10", True, 1.5])
def test_a_size_limit_that_is_no_positive_number_stops_the_start(value: object) -> None:
    with pytest.raises(InvalidConfig, match="'max_response_bytes' must be a positive number"):
        RemoteNLU({"url": "http://127.0.0.1:9", "max_response_bytes": value})


def test_a_cookie_the_nlu_server_sets_is_not_sent_back(
    broken_server: BrokenActionServer,
) -> None:
    """Before, the pooled client kept a cookie an answer set and sent it with every later
    message, whoever sent it (as Rasa 3.6.21's one session for the server's life does: a
    documented difference)."""
    nlu = RemoteNLU({"url": _url(broken_server, "/cookie")})
    nlu.parse("hello")
    nlu.parse("hello again")
    assert len(broken_server.headers) == 2
    assert "Cookie" not in broken_server.headers[-1]


async def test_an_nlu_server_whose_certificate_is_not_trusted_is_logged_as_such(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, `(ConnectError)`, as for a server that is down: nothing said that TLS
    verification failed (as the action server, NLG, callback and Rocket.Chat clients say)."""
    from fastapi import FastAPI

    from tests.serving import serving
    from tests.tls_certificates import self_signed

    caplog.set_level(logging.ERROR)
    cert, key = self_signed(tmp_path)
    async with serving(FastAPI(), ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        nlu = RemoteNLU({"url": url, "token": "secret-token"})
        parsed = await asyncio.to_thread(nlu.parse, "hello")
    assert parsed["intent"] == {"name": None, "confidence": 0.0}
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    assert "secret-token" not in caplog.text


@pytest.mark.parametrize(
    ("token", "query"),
    [(None, ""), ("", ""), (0, ""), (False, ""), ("abc", "?token=abc"), (123, "?token=123")],
)
def test_the_token_is_in_the_query_only_when_one_is_set(
    broken_server: BrokenActionServer, token: object, query: str
) -> None:
    """Before, `token: ""` (say, `${NLU_TOKEN}` with the variable empty) sent `?token=`, as no
    other endpoint does (an empty token is not sent, as in Rasa); nor `token: 0` or `false`
    (Rasa sends an endpoint's token only when it is truthy; before, `?token=0`)."""
    RemoteNLU({"url": _url(broken_server, "/nlu"), "token": token}).parse("hello")
    assert broken_server.requests[-1][0] == f"/nlu/model/parse{query}"


async def test_a_message_after_a_quiet_moment_is_parsed() -> None:
    """Before, the client kept an idle connection 5 s, as long as the NLU server (Rasa's
    Sanic: 5 s) keeps it: a message as the server closed the connection got no answer, and
    was left without an intent. Now kept 1 s, as every outgoing client's."""
    parse = {"intent": {"name": "greet", "confidence": 1.0}, "entities": []}
    server = ClosingIdleServer(json.dumps(parse).encode())
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    nlu = RemoteNLU({"url": f"http://127.0.0.1:{port}"})
    try:
        first = await asyncio.to_thread(nlu.parse, "hello")
        await asyncio.sleep(QUIET_SECONDS)  # the quiet moment itself, not a wait for something
        second = await asyncio.to_thread(nlu.parse, "hello again")
    finally:
        listening.close()
    assert [first["intent"]["name"], second["intent"]["name"]] == ["greet", "greet"]
    assert len(server.served) == 2


@pytest.mark.parametrize("in_headers", [False, True], ids=["body", "headers"])
def test_an_answer_dripping_past_the_timeout_is_given_up(
    in_headers: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The `nlu:` section's `timeout` bounds the whole call. Before, it bounded each read:
    an NLU server sending a byte every 0.1 s held the message's parse, a worker thread and
    the conversation until its last byte (10 s here, for a timeout of 0.5 s); its headers
    so, even once the body was bounded."""
    with dripping_server(every=0.1, in_headers=in_headers) as (url, sent_before_hang_up):
        parsed = RemoteNLU({"url": url, "timeout": 0.5}).parse("hello")
        sent = sent_before_hang_up()
    assert parsed["intent"] == {"name": None, "confidence": 0.0}
    assert sent < 100, "all of it was read"
    assert "failed (no whole answer within 0.5 s)" in caplog.text
