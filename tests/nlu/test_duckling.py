"""DucklingEntityExtractor against a misbehaving Duckling: what it reads, what it logs."""

from __future__ import annotations

from typing import Any

import pytest

from server.errors import InvalidConfig
from server.nlu.duckling import DucklingEntityExtractor
from server.nlu.message import Message
from server.nlu.pipeline import NLUPipeline
from server.nlu.training_data import NLUTrainingData
from tests.action_servers.fixtures import BrokenActionServer, bomb_refusal, peak_memory_of
from tests.fake_http import dripping_server, serve_json


def _url(server: BrokenActionServer, path: str, user: str = "") -> str:
    return f"http://{user}127.0.0.1:{server.server_address[1]}{path}"


@pytest.mark.parametrize("path", ["/bomb", "/bomb-twice"])
def test_an_answer_is_never_inflated_past_the_size_limit(
    broken_server: BrokenActionServer,
    path: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, httpx inflated the whole answer, each encoding in turn: 500 bytes sent as
    `gzip, gzip` took 100 MB of memory at every message. Now it is inflated only up to the
    size limit (10 MB), and one encoding at most is read."""
    limit = 1024 * 1024
    monkeypatch.setattr("server.nlu.duckling.MAX_ANSWER_BYTES", limit)
    duckling = DucklingEntityExtractor({"url": _url(broken_server, path)})
    message = Message("at 5")
    peak = peak_memory_of(lambda: duckling.process(message))
    assert message.entities == []
    assert peak < 4 * limit, peak
    assert bomb_refusal(path, limit) in caplog.text


def test_an_encoded_answer_is_read_and_only_what_is_read_is_asked_for(
    broken_server: BrokenActionServer, caplog: pytest.LogCaptureFixture, br_installed: None
) -> None:
    DucklingEntityExtractor({"url": _url(broken_server, "/encoded/gzip")}).process(Message("5"))
    # Inflated and read as JSON: only its shape is not Duckling's.
    assert "Duckling did not answer a list" in caplog.text
    assert broken_server.headers[-1]["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize("path", ["/crash", "/garbage"])
def test_the_warning_shows_no_password_of_the_url(
    broken_server: BrokenActionServer, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the warning quoted the configured URL whole, its password with it (and
    httpx's error for an HTTP 500 quoted it again)."""
    url = _url(broken_server, path, user="bot:pa55-w0rd@")
    DucklingEntityExtractor({"url": url}).process(Message("5"))
    assert f"Duckling at {_url(broken_server, path)} failed" in caplog.text
    assert "pa55-w0rd" not in caplog.text


def test_a_url_httpx_cannot_read_is_a_warning_without_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, httpx's InvalidURL escaped the parse (the message was lost) and its text
    quoted a password holding a '/' as the port ("Invalid port: 'pa55w0rd'")."""
    duckling = DucklingEntityExtractor({"url": "http://bot:pa55w0rd/x@127.0.0.1:9"})
    message = Message("5")
    duckling.process(message)
    assert message.entities == []
    assert "Duckling at http://bot failed (its url is not a URL" in caplog.text
    assert "pa55w0rd" not in caplog.text


def test_a_cookie_duckling_sets_is_not_sent_back(
    broken_server: BrokenActionServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rasa opens a session per call to Duckling, so it never sends a cookie back. Before,
    the pooled client kept one an answer set and sent it with every later message."""
    monkeypatch.setattr("server.nlu.duckling._RETRY_AFTER_SECONDS", 0)  # asked again at once
    duckling = DucklingEntityExtractor({"url": _url(broken_server, "/cookie")})
    duckling.process(Message("at 5"))
    duckling.process(Message("at 6"))
    assert len(broken_server.headers) == 2
    assert "Cookie" not in broken_server.headers[-1]


FIVE = {"body": "5", "start": 9, "end": 10, "dim": "number", "value": {"type": "value", "value": 5}}


@pytest.mark.parametrize(
    "match",
    [
        {**FIVE, "value": "5"},
        {**FIVE, "value": [5]},
        {**FIVE, "dim": "time", "value": {"type": "interval", "to": "2026-12-07"}},
        {**FIVE, "start": "nine"},
        {**FIVE, "end": 99},
        {**FIVE, "dim": {"number": True}},
        {**FIVE, "body": ["5"]},
        "5",
    ],
)
def test_a_match_not_of_ducklings_shape_is_left_out_with_a_warning(
    match: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, a match whose `value` was no object failed the parse, and the turn of
    every message while that Duckling answered so; one whose positions or dimension
    were no numbers or text was kept as an entity. Now such a match is left out, the others
    kept, and the log says why."""
    with serve_json(lambda path, body: (200, [match, FIVE])) as url:
        pipeline = NLUPipeline.train(
            NLUTrainingData(),
            [{"name": "WhitespaceTokenizer"}, {"name": "DucklingEntityExtractor", "url": url}],
        )
        entities = pipeline.parse("table at 5")["entities"]
    assert [(e["entity"], e["value"], e["start"], e["end"]) for e in entities] == [
        ("number", 5, 9, 10)
    ]
    assert f"Duckling at {url} answered what is not Duckling's" in caplog.text


def test_a_timeout_no_socket_can_wait_is_refused_with_the_config() -> None:
    """Before, `timeout: 1e10` was taken, and every message's parse raised an
    OverflowError (a socket waits at most ~9.2e9 s)."""
    with pytest.raises(InvalidConfig, match=r"'timeout' must be between 0 and 1e\+09"):
        DucklingEntityExtractor({"url": "http://127.0.0.1:9", "timeout": 1e10})


def test_the_longest_timeout_taken_reads_the_matches() -> None:
    with serve_json(lambda path, body: (200, [FIVE])) as url:
        pipeline = NLUPipeline.train(
            NLUTrainingData(),
            [
                {"name": "WhitespaceTokenizer"},
                {"name": "DucklingEntityExtractor", "url": url, "timeout": 1e9},
            ],
        )
        entities = pipeline.parse("table at 5")["entities"]
    assert [(e["entity"], e["value"]) for e in entities] == [("number", 5)]


@pytest.mark.parametrize("in_headers", [False, True], ids=["body", "headers"])
def test_an_answer_dripping_past_the_timeout_is_given_up(
    in_headers: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """`timeout` bounds the whole call: before, it bounded each read, and a Duckling sending
    a byte every 0.1 s held the parse (its worker thread and the conversation) until its
    last byte, here 10 s for a 0.5 s timeout; its headers so, even once the body was bounded."""
    with dripping_server(every=0.1, in_headers=in_headers) as (url, sent_before_hang_up):
        duckling = DucklingEntityExtractor({"url": url, "timeout": 0.5})
        message = Message("at 5")
        duckling.process(message)
        sent = sent_before_hang_up()
    assert message.entities == []
    assert sent < 100, "all of it was read"
    assert "failed (no whole answer within 0.5 s)" in caplog.text


def test_the_warning_of_a_match_not_of_ducklings_shape_is_one_short_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A position is written into the warning: before, one of 4,000 digits (read as JSON
    reads it) made a log line of 8,000 characters."""
    huge = int("9" * 4000)
    with serve_json(lambda path, body: (200, [{**FIVE, "start": huge, "end": huge}, FIVE])) as url:
        pipeline = NLUPipeline.train(
            NLUTrainingData(),
            [{"name": "WhitespaceTokenizer"}, {"name": "DucklingEntityExtractor", "url": url}],
        )
        entities = pipeline.parse("table at 5")["entities"]
    assert [e["value"] for e in entities] == [5]
    [warning] = [r.getMessage() for r in caplog.records if "not Duckling's" in r.getMessage()]
    assert len(warning) < 500, len(warning)


def test_two_threads_first_parses_share_one_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, two threads' first parses could each build a client (the slower one
    replacing the other, which was never closed). Now one client is made, and both use it."""
    import threading
    import time

    import server.http_clients

    made: list[Any] = []
    real = server.http_clients.sync_client

    def slow_sync_client(**options: Any) -> Any:
        time.sleep(0.05)  # the window in which the other thread also finds no client
        client = real(**options)
        made.append(client)
        return client

    monkeypatch.setattr(server.http_clients, "sync_client", slow_sync_client)
    duckling = DucklingEntityExtractor({"url": "http://127.0.0.1:9"})
    barrier = threading.Barrier(2)
    used: list[Any] = []

    def first_parse() -> None:
        barrier.wait()
        used.append(duckling._http())

    threads = [threading.Thread(target=first_parse) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(made) == 1, f"{len(made)} clients made"
        assert used[0] is used[1] is made[0]
        assert [client for client in made if client is not duckling._client] == []
    finally:
        for client in made:
            client.close()


def test_the_timeout_bounds_ducklings_answer_not_the_first_parses_setup(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first parse builds the client (reading the trusted certificates): on a loaded host
    that took past a 0.5 s `timeout`, and the parse failed without asking Duckling, which was
    then left out for the next seconds' messages too. (Its answer here may take long: the
    limit is wide, for a loaded host, and the setup longer still.)"""
    import time

    import server.http_clients

    real = server.http_clients.sync_client

    def slow_sync_client(**options: Any) -> Any:
        time.sleep(2)  # a loaded host's certificate reading
        return real(**options)

    monkeypatch.setattr(server.http_clients, "sync_client", slow_sync_client)
    with serve_json(lambda path, body: (200, [FIVE])) as url:
        duckling = DucklingEntityExtractor({"url": url, "timeout": 1.5})
        message = Message("table at 5")
        duckling.process(message)
    assert [(e["entity"], e["value"]) for e in message.entities] == [("number", 5)]
    assert "failed" not in caplog.text
