"""Tokens and JWTs never reach the logs, uvicorn's access log included."""

from __future__ import annotations

import contextlib
import io
import logging
import random
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import jwt
import pytest
import yarl
from fastapi import APIRouter, Depends, FastAPI, Response

from server.api.app import create_app
from server.api.server import ServerOptions, build_app
from server.api.settings import ApiSettings
from server.auth import (
    AuthConfig,
    install_log_redaction,
    keep_endpoint_secrets_out_of_logs,
    log_redaction,
    redact,
    require_auth,
)
from server.auth.log_redaction import RedactSecretsFilter
from server.dialogue.http_endpoint import HttpEndpoint
from tests.action_servers.fixtures import broken_action_server
from tests.serving import serving

TOKEN = "thisismysecret-token-value"
SERVER_TOKEN = "model-server-token-4f2a"
JWT_SECRET = "a-jwt-secret-that-is-long-enough-for-hs256"


def router() -> APIRouter:
    r = APIRouter()

    @r.get("/status", dependencies=[Depends(require_auth())])
    async def status() -> dict[str, bool]:
        return {"ok": True}

    return r


async def test_token_and_bearer_are_redacted_from_logs(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    caplog.set_level(logging.DEBUG)
    app = create_app(ApiSettings(auth=AuthConfig(token=TOKEN, jwt_secret=JWT_SECRET)), [router()])
    admin = jwt.encode({"user": {"username": "boss", "role": "admin"}}, JWT_SECRET)
    bad = jwt.encode({"user": {"username": "boss", "role": "admin"}}, JWT_SECRET + "x")
    async with (
        serving(app, log_level="debug", access_log=True) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        assert (await client.get(f"/status?token={TOKEN}")).status_code == 200
        assert (
            await client.get("/status", headers={"Authorization": f"Bearer {admin}"})
        ).is_success
        assert (await client.get(f"/status?x=1&token={TOKEN}z")).status_code == 401
        rejected = await client.get("/status", headers={"Authorization": f"Bearer {bad}"})
        assert rejected.status_code == 401

    access_lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any("/status?token=***" in line for line in access_lines), access_lines
    assert TOKEN not in caplog.text
    assert admin not in caplog.text and bad not in caplog.text
    assert admin.split(".")[2] not in caplog.text


async def test_a_token_whose_query_name_is_percent_encoded_is_redacted_from_the_access_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # `?%74oken=` is `?token=` to the server (Rasa's too), which lets it in; the access log
    # writes the query as sent.
    access_lines = await _access_log(
        caplog,
        TOKEN,
        {f"/status?%74oken={TOKEN}": 200, f"/status?x=1&%54%4F%4B%45%4E={TOKEN}": 401},
    )
    assert any("/status?%74oken=***" in line for line in access_lines), access_lines
    assert TOKEN not in caplog.text


async def test_a_registered_token_is_hidden_percent_encoded_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`botserver run` hides its --auth-token wherever it appears; a client's misspelt
    parameter (`?tokn=`) carries a base64 token percent-encoded (`+/=` as `%2B%2F%3D`, by
    httpx, yarl (which keeps `/`), a browser's encodeURIComponent). Before, the access log
    showed the token so spelt."""
    token = "Zm9v+YmFy/YmF6Qk=="
    log_redaction.redact_also(token)
    encoded = {str(httpx.URL("/status", params={name: token})): 401 for name in ("tokn", "t")}
    access = await _access_log(caplog, token, encoded)
    assert any("/status?tokn=*** " in line for line in access), access
    assert "Zm9v%2BYmFy" not in caplog.text
    assert redact("?t=Zm9v%2BYmFy/YmF6Qk%3D%3D&u=Zm9v%2bYmFy%2fYmF6Qk%3d%3d") == "?t=***&u=***"


def test_a_registered_token_is_hidden_as_each_client_percent_encodes_it() -> None:
    """Clients spell a token's `!$'()*~` and spaces each their own way in a query: a
    browser's encodeURIComponent keeps `!'()*~`, its URLSearchParams (the /inspect page's)
    writes `~` as `%7E` and a space as `+`, yarl (aiohttp) keeps `$!'()*`, httpx and
    requests write a space as `+`. Before, only Python's `quote` spelling was hidden: a
    client's misspelt `?tokn=` showed the token so spelt in the access log."""
    token = "s3cr3t!Pa$$(w0rd)*~x y"
    log_redaction.redact_also(token)
    spelt = {
        "encodeURIComponent": "s3cr3t!Pa%24%24(w0rd)*~x%20y",
        "URLSearchParams": "s3cr3t%21Pa%24%24%28w0rd%29*%7Ex+y",
        "yarl": yarl.URL("/status").with_query({"tokn": token}).raw_query_string[5:],
        "httpx": httpx.URL("/status", params={"tokn": token}).query.decode()[5:],
    }
    shown = {
        client: redact(f"GET /status?tokn={value} HTTP/1.1") for client, value in spelt.items()
    }
    assert shown == dict.fromkeys(spelt, "GET /status?tokn=*** HTTP/1.1")


def test_secret_query_names_are_known_percent_encoded() -> None:
    assert redact("GET /x?a=1&%6Bey=abc&y=2") == "GET /x?a=1&%6Bey=***&y=2"
    assert redact("GET /x?access%5Ftoken=abc") == "GET /x?access%5Ftoken=***"


async def _access_log(
    caplog: pytest.LogCaptureFixture, token: str, statuses: dict[str, int]
) -> list[str]:
    """The access log lines of GETs of `statuses`' URLs from a server of `token`, each
    answered with its status."""
    install_log_redaction()
    caplog.set_level(logging.DEBUG)
    app = create_app(ApiSettings(auth=AuthConfig(token=token)), [router()])
    async with (
        serving(app, log_level="debug", access_log=True) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        for path, status in statuses.items():
            assert (await client.get(path)).status_code == status, path
    return [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]


@contextlib.asynccontextmanager
async def _api_and_model_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client of a running app, httpx logging at debug, and the URL of a model server
    that has no model."""
    install_log_redaction()
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")
    model_server = FastAPI()

    @model_server.get("/model")
    async def no_model() -> Response:
        return Response(status_code=404)

    options = ServerOptions(
        enable_api=True, endpoints={"tracker_store": {"type": "in_memory"}}, models_dir=tmp_path
    )
    app = build_app(options)
    async with (
        serving(model_server) as url,
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield client, url


async def test_a_model_server_token_stays_out_of_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Under any token_name, at debug level (httpx logs each request's URL), and in the
    record of the PUT /model body another worker follows."""
    async with _api_and_model_server(tmp_path, caplog) as (client, url):
        body = {"model_server": {"url": f"{url}/model", "token": SERVER_TOKEN, "token_name": "t"}}
        response = await client.put("/model", json=body)
        logging.getLogger("server.api.model_sync").info("Following %s", body)

    assert response.status_code == 400
    assert any("HTTP Request: GET" in r.getMessage() for r in caplog.records)
    assert SERVER_TOKEN not in caplog.text


async def test_put_model_bodies_do_not_grow_the_log_redaction_without_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, each PUT /model body's model server token and query names were kept for
    good: bodies one after another, each with its own, grew them without bound, and every
    log line's work with them (10,000 tokens: 3.8 ms a line instead of 0.14). Now a body's
    are kept while among the latest few (the model server polled is the last one given),
    still hidden in the lines of their own requests."""
    literals, names = len(log_redaction._literals), len(log_redaction._query_names)
    bodies = 3 * log_redaction.MAX_TRANSIENT_ENDPOINTS
    async with _api_and_model_server(tmp_path, caplog) as (client, url):
        for i in range(bodies):
            endpoint: dict[str, Any] = {"url": f"{url}/model?q{i}=v{i}"}
            endpoint |= {"token": f"body-token-{i:04d}"}
            endpoint |= {"token_name": f"t{i}", "params": {f"p{i}": f"w{i}"}}
            assert (await client.put("/model", json={"model_server": endpoint})).status_code == 400

    requests = [r.getMessage() for r in caplog.records if "HTTP Request: GET" in r.getMessage()]
    assert len(requests) >= bodies
    assert "body-token-" not in caplog.text
    assert not [line for line in requests if re.search(r"[?&][qpt][0-9]+=[^*]", line)]
    # Three names and one token a body: at most those of the latest few are kept.
    assert len(log_redaction._literals) - literals <= log_redaction.MAX_TRANSIENT_ENDPOINTS
    assert len(log_redaction._query_names) - names <= 3 * log_redaction.MAX_TRANSIENT_ENDPOINTS


ACTION_TOKEN = "action-server-token-9c1e"
NLG_TOKEN = "nlg-server-token-77b0"
CALLBACK_TOKEN = "callback-token-31d8"
QUERY_SECRET = "query-secret-5e3d"


async def _call_action_and_nlg_servers(
    caplog: pytest.LogCaptureFixture,
    action_endpoint: dict[str, Any],
    nlg: dict[str, Any],
    credentials: dict[str, Any] | None = None,
) -> None:
    """One call to each, from an app built with these endpoints, httpx logging at debug."""
    install_log_redaction()
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")
    endpoints = {"tracker_store": {"type": "in_memory"}, "action_endpoint": action_endpoint}
    endpoints["nlg"] = nlg
    app = build_app(ServerOptions(endpoints=endpoints, credentials=credentials))
    processor = app.state.processor
    await processor.action_server.run("action_x", "u1", {}, None)
    await processor.nlg_endpoint.generate("utter_x", {}, "rest")
    await processor.action_server.aclose()
    await processor.nlg_endpoint.aclose()


async def test_an_endpoint_token_stays_out_of_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    """The action server's, the NLG server's and the callback channel's token travel as
    `?<token_name>=`, which the redaction knows only under usual names: before, under
    another name, httpx's request line at debug level showed them."""
    with broken_action_server() as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/ok"
        callback = {"url": url, "token": CALLBACK_TOKEN, "token_name": "c"}
        await _call_action_and_nlg_servers(
            caplog,
            {"url": url, "token": ACTION_TOKEN, "token_name": "a"},
            {"url": url, "token": NLG_TOKEN, "token_name": "n"},
            credentials={"callback": callback},
        )
        endpoint = HttpEndpoint.from_config(callback)  # as the app's callback channel posts
        await endpoint.post_json({"recipient_id": "u1", "text": "hi"})
        await endpoint.aclose()

    assert [r.getMessage().startswith("HTTP Request: POST") for r in caplog.records].count(
        True
    ) == 3
    for token in (ACTION_TOKEN, NLG_TOKEN, CALLBACK_TOKEN):
        assert token not in caplog.text


async def test_a_secret_in_an_endpoint_query_stays_out_of_the_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A secret in an endpoint's `url:` query or `params:` under a name no pattern knows
    (`?auth=`, `?pw=`), however short: before, httpx's request line at debug level showed
    it. Now every value of a configured endpoint's query is hidden, as `safe_url` hides the
    whole query in the lines botserver writes."""
    with broken_action_server() as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/ok"
        await _call_action_and_nlg_servers(
            caplog,
            {"url": f"{url}?auth={QUERY_SECRET}&team=blue"},
            {"url": url, "params": {"pw": "pw-9z"}},
        )

    requests = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert [line.split("?")[1].split(" ")[0] for line in requests] == [
        "auth=***&team=***",
        "pw=***",
    ]
    assert QUERY_SECRET not in caplog.text and "pw-9z" not in caplog.text


def test_a_configured_query_name_is_hidden_in_a_query_only() -> None:
    keep_endpoint_secrets_out_of_logs({"url": "http://h/x?zq7=1", "params": {"QP8": "b"}})
    assert (
        redact("GET http://h/x?zq7=1234&Qp8=b&zq=2 done")
        == "GET http://h/x?zq7=***&Qp8=***&zq=2 done"
    )
    assert redact("a form: zq7=1234, qp8=5") == "a form: zq7=1234, qp8=5"  # not a query


async def test_a_short_endpoint_token_stays_out_of_the_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A token too short to be hidden wherever it appears (`k9` would blank every `k9` in
    the logs) is hidden where it travels: the value of its `?<token_name>=`. Before, httpx's
    request line at debug level showed it."""
    install_log_redaction()
    caplog.set_level(logging.DEBUG, logger="httpx")
    endpoints: dict[str, Any] = {"tracker_store": {"type": "in_memory"}}
    with broken_action_server() as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/ok"
        endpoints["action_endpoint"] = {"url": url, "token": "k9", "token_name": "auth"}
        app = build_app(ServerOptions(endpoints=endpoints))
        await app.state.processor.action_server.run("action_x", "u1", {}, None)
        await app.state.processor.action_server.aclose()
    lines = [r.getMessage() for r in caplog.records if "HTTP Request" in r.getMessage()]
    assert len(lines) == 1 and "/ok?auth=*** " in lines[0], lines
    assert "k9" not in caplog.text
    # Elsewhere the text stays as it is.
    assert redact("a k9 and auth=k9 and ?authx=1") == "a k9 and auth=k9 and ?authx=1"


def test_redact_covers_the_usual_places() -> None:
    assert redact("GET /x?token=abc&y=1") == "GET /x?token=***&y=1"
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    assert redact("Authorization: Basic dXNlcjpwdw==") == "Authorization: Basic ***"
    assert redact("postgresql://bot:pw@db/x") == "postgresql://bot:***@db/x"
    assert redact("{'token': 'abc', 'url': 'http://a'}") == "{'token': ***, 'url': 'http://a'}"
    assert redact("nothing secret here") == "nothing secret here"
    assert redact("tokenizer: WhitespaceTokenizer") == "tokenizer: WhitespaceTokenizer"
    assert redact("GET http://h/m?key=abc&x=1") == "GET http://h/m?key=***&x=1"
    assert redact("Authorization: Token abc") == "Authorization: Token ***"
    assert redact("{'Authorization': 'ApiKey abc'}") == "{'Authorization': 'ApiKey ***'}"
    assert redact("{'X-Api-Key': 'abc'}") == "{'X-Api-Key': ***}"
    assert redact("keyboard: qwerty, monkey=banana") == "keyboard: qwerty, monkey=banana"


def test_a_password_holding_a_hash_names_the_host_httpx_connects_to() -> None:
    # httpx reads `http://bot:1234#x@host/` as host `bot`, port 1234 (the rest a fragment,
    # never sent). Before, the log showed `http://bot:***@host/`: a host never reached.
    url = "http://bot:1234#x@host/"
    assert (httpx.URL(url).host, httpx.URL(url).port) == ("bot", 1234)
    assert redact(f"cannot reach {url}: refused") == "cannot reach http://bot:1234#***: refused"


def test_a_secret_of_several_words_after_a_colon_is_hidden_whole() -> None:
    # Before, only its first word was: `password: *** secret phrase`.
    assert redact("password: my secret phrase") == "password: ***"
    assert redact("login failed; password: my secret phrase\nnext") == (
        "login failed; password: ***\nnext"
    )
    # It ends where the next key, a comma or a quote begins; `key=value` pairs stay one word.
    assert redact("password: my phrase user: bob") == "password: *** user: bob"
    assert redact("password: my phrase, user=bob") == "password: ***, user=bob"
    assert redact("password=abc user=bob") == "password=*** user=bob"
    assert redact("password = my phrase\nuser = bob") == "password = ***\nuser = bob"
    assert redact("msg='password: my secret phrase' ok") == "msg='password: ***' ok"
    assert redact('"GET /x?password=abc HTTP/1.1" 200') == '"GET /x?password=*** HTTP/1.1" 200'


def test_the_credential_of_a_presigned_url_is_hidden() -> None:
    # Before, an S3 presigned URL in a model server's log line showed its access key id.
    url = (
        "https://b.s3.amazonaws.com/m.tar.gz?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261206%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20261206T000000Z&X-Amz-Signature=abc"
    )
    assert redact(url) == (
        "https://b.s3.amazonaws.com/m.tar.gz?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=***&X-Amz-Date=20261206T000000Z&X-Amz-Signature=***"
    )
    assert redact("?X-Goog-Credential=bot%40p.iam.gserviceaccount.com%2F1") == (
        "?X-Goog-Credential=***"
    )


def test_a_long_secret_of_many_words_is_redacted_at_once() -> None:
    words = "word " * 32_000
    started = time.thread_time()
    assert redact(f"password: {words}") == "password: ***" + " "
    assert redact(f"password: a b: {words}") == f"password: *** b: {words}"
    assert redact("password: a " * 16_000) == "password: *** " * 16_000
    assert time.thread_time() - started < 1


def test_a_long_password_of_many_ats_or_escaped_quotes_is_redacted_at_once() -> None:
    # A URL password runs to the last '@' before the path: each '@' looks for another one
    # ahead, which, read to the path each time, cost such a line its square (4 s of CPU).
    started = time.thread_time()
    assert redact("x://b:" + "a@" * 32_000 + "/p") == "x://b:***@/p"
    assert redact('password: "' + '\\"' * 32_000 + '" ok') == "password: *** ok"
    assert redact("password: '" + "\\'" * 32_000) == "password: ***"  # no closing quote
    assert time.thread_time() - started < 1


# Log lines a client shapes (uvicorn's access log with -v shows the request's path): each
# tried by a redaction pattern from many places, every try reading to the end of the line.
HOSTILE_LINES = {
    "secret-named keys": "a-" * 32_000,  # `\b[\w-]*token` from each word
    "a query holding an @": "a:///" * 13_000,  # every `x://` read its path to the end
    "schemes": "a." * 32_000,  # a scheme from each word, read to the end
    "a JWT's start": "eyJ-" * 16_000,  # `eyJ` from each word, its first part to the end
    # Every URL's query read to its end, each inside the one before (`@` after the quote).
    "URLs in a query": "h://?" * 13_000 + "'@",
    "a long scheme": "x" * 64_000,  # a scheme read from each letter
    "X-Auth header names": "x-auth-" * 9_000,  # each name read to the end of the run
    # A key's name before an escaped quote or a quote and a comma, with no value after.
    "Authorization before escaped quotes": 'authorization\\" ' * 6_000,
    "key names before quotes": "tokens'" * 14_000,
    # A secret word, a quote and a comma with no quoted value closing a pair after it.
    "names and commas": "token'," * 14_000,
    "pairs never closed": "('cookie', " * 10_000,
    "pairs of unclosed values": "('token', '\\" * 10_000,
    "pairs of values not closing": "('token', 'a' " * 8_000,
}

# Hostile lines that do hold secrets: values quoted with escaped quotes, (name, value)
# pairs, cookies' unclosed quotes, read once each (15 ms of CPU per 100 KB, as a line of
# plain letters costs).
HOSTILE_SECRETS = {
    "(name, value) pairs": "('cookie', 'a'), " * 6_000,
    "(token, value) pairs": "('token', '\\'')" * 8_000,
    "escaped quotes after keys": 'token:\\"a' * 11_000,
    "an escaped quote never closed": 'password: \\"' + "a\\b" * 33_000,
    "unclosed quotes in a cookie": "Cookie: " + 'a="' * 33_000,
    "escaped quotes in a cookie": 'cookie=\\"' * 10_000,
}


@pytest.mark.parametrize("line", HOSTILE_SECRETS.values(), ids=HOSTILE_SECRETS.keys())
def test_a_long_hostile_line_of_secrets_is_redacted_at_once(line: str) -> None:
    logged = f'127.0.0.1:5000 - "GET /{line} HTTP/1.1" 404'
    started = time.thread_time()
    redacted = redact(logged)
    assert time.thread_time() - started < 0.25
    assert "***" in redacted


@pytest.mark.parametrize("line", HOSTILE_LINES.values(), ids=HOSTILE_LINES.keys())
def test_a_long_hostile_log_line_is_redacted_at_once(line: str) -> None:
    # Before: each pattern's work grew with the square of the line: a 32 KB path in the
    # access log of a server run with -v held its event loop for about a minute of CPU
    # (CPU before: 117, 11, 4 and 55 s for these lines; now 12-19 ms each).
    logged = f'127.0.0.1:5000 - "GET /{line} HTTP/1.1" 404'
    started = time.thread_time()  # CPU seconds: the host's other work does not count
    assert redact(logged) == logged
    assert time.thread_time() - started < 1


@pytest.mark.parametrize("line", ["?zq7" * 16_000, "&" + "z" * 64_000, "?zq7=" * 13_000])
def test_a_hostile_line_of_query_names_is_redacted_at_once(line: str) -> None:
    keep_endpoint_secrets_out_of_logs({"url": "http://h/x?zq7=1"})
    logged = f'127.0.0.1:5000 - "GET /{line} HTTP/1.1" 404'
    started = time.thread_time()
    redact(logged)
    assert time.thread_time() - started < 1


def test_redaction_still_finds_secrets_after_a_hostile_start() -> None:
    # The same work, shown on lines whose secret comes after what a pattern tried first.
    assert redact("a-" * 50 + "my_token: abc") == "a-" * 50 + "my_token: ***"
    assert redact("a:///" * 50 + "x://bot:1/2#pw@host") == "a:///" * 50 + "x://bot:1/2#***"
    assert redact("a." * 50 + "http://u:pw@h") == "a." * 50 + "http://u:***@h"
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    assert redact("eyJ-" * 50 + jwt_like) == "***"  # one run of base64url: all of it
    assert redact("eyJ-" * 50 + "!" + jwt_like) == "eyJ-" * 50 + "!***"
    assert redact("id-" + jwt_like + " ok") == "id-*** ok"


def test_a_password_after_a_long_scheme_is_hidden() -> None:
    # A scheme is no longer read to any length; one of 40 letters still leads to a password.
    scheme = "x" * 40
    assert redact(f"{scheme}://bot:pw@host") == f"{scheme}://bot:***@host"


def test_a_url_in_a_query_holding_a_quote_still_hides_its_password() -> None:
    # The outer URL's query ends at the quote; the inner URL's path runs on past it, and its
    # password (holding a '/' and a '#') must not show.
    line = "see http://a?next=amqp://bot:1/2'x#pw@host ok"
    assert redact(line) == "see http://a?next=amqp://bot:1/2'x#*** ok"


# Lines a secret reaches the logs in, `{}` standing for the secret.
SECRET_PLACES = (
    "Authorization: Bearer {}",
    "authorization: Basic {}",
    "GET /webhook?token={}&x=1",
    "GET /m?a=1&auth_token={}",
    "GET /m?access_token={}",
    "password={}",
    '{{"password": "{}"}}',
    "{{'client_secret': '{}'}}",
    "api_key: {}",
    "X-Api-Key={}",
    "secret={}",
    "https://b.s3.amazonaws.com/m.tar.gz?X-Amz-Signature={}&X-Amz-Credential=a",
    "https://storage.googleapis.com/b/m?X-Goog-Signature={}",
    "https://h/x?sig={}",
    "redis://:{}@127.0.0.1:6379/0",
    "amqp://bot:{}@rabbit:5672/%2F",
    "postgresql+asyncpg://bot:{}@[::1]:5432/db",
    "http://bot:{}@[fe80::1%25eth0]:8080/",
    "mysql://bot:{}@db/x",
    "AWS_SECRET_ACCESS_KEY={}",
    "{{'aws_secret_access_key': '{}'}}",
    '{{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\n{}\\n"}}',
    "https://b.s3.amazonaws.com/m?X-Amz-Security-Token={}&X-Amz-Signature=x",
    "https://b.s3.amazonaws.com/m?X-Amz-Credential={}%2F20261206%2Fs3%2Faws4_request&x=1",
    "password: my {} phrase",
    "[db]\npassword = my {} phrase\nuser = bob",  # an INI file: `=` between spaces
    '{{"password": "a \\"quoted\\" {} phrase"}}',  # JSON: the quotes inside escaped
    "{{'token': 'it\\'s {}'}}",
    "SECRET_KEY={}",
    "{{'secret_key': '{}'}}",
    "redis://bot:p@ss{}@127.0.0.1:6379/0",  # an '@' not percent-encoded: redis-py reads it
    "line one\npassword: {}\nline three",
    "GET /conversations/eyJhbGciOiJIUzI1NiJ9.{}.c2ln/tracker",
    "GET /x?jwt=eyJhbGciOiJIUzI1NiJ9.{}.c2ln",
    '{{"jwt": "eyJhbGciOiJIUzI1NiJ9.{}.c2ln"}}',
    # YAML block scalars: the value on the lines after the key, indented.
    "password: |\n  {}\n  more\nuser: bob",
    "db:\n  password: >-\n    first\n\n    {}\n  user: bob",
    "secret: |2 # comment\n\n    {}\n",
    # ... with Windows line ends (a file edited there): before, the lines after shown.
    "password: |\r\n  {}\r\n  more\r\nuser: bob",
    "db:\r\n  password: >-\r\n    first\r\n\r\n    {}\r\n  user: bob",
    # Cookies, whatever their name, and a request's or an answer's headers.
    "Cookie: theme=dark; sessionid={}",
    "Set-Cookie: sessionid={}; Path=/; HttpOnly",
    # A cookie's value in double quotes (RFC 6265 allows them), an apostrophe in another's,
    # a header name in any case: before, the cookies after them, or all, shown.
    'Cookie: theme="dark"; sessionid={}',
    "Cookie: name=o'brien; sessionid={}",
    "CooKie: sessionid={}",
    "{{'cookie': 'sid={}', 'host': 'h'}}",
    "X-Auth-Token: {}",
    "X-Auth: {}",
    "{{'X-Auth-Key': '{}'}}",
    "passphrase: {}",
    "PASSPHRASE={}",
    "pwd={}",
    "Server=db;Uid=bot;Pwd={}",
    "passwd={}",
)


@pytest.mark.parametrize("place", SECRET_PLACES)
def test_no_secret_survives_whatever_surrounds_it(place: str) -> None:
    # Generated lines: each place glued to random text (punctuation, quotes, URLs, letters of
    # any script, newlines, long runs) and holding a generated secret; none may reach the log.
    pieces = (
        " ",
        "\n",
        "'",
        '"',
        ",",
        ";",
        ")",
        "(",
        "é",
        "x" * 40,
        "a.",
        "eyJ",
        "-",
        "://",
        "http://h?q=",
        "/",
        "@",
        "#",
        "?",
        "=",
        "&",
        "ü",
        "\t",
        "连接",
        "a",
    )
    alphabet = "abcdefXYZ0123456789_-" + ("" if "eyJ" in place else "~+")
    rng = random.Random(place)
    for _ in range(300):
        secret = "S" + "".join(rng.choice(alphabet) for _ in range(rng.randint(6, 20)))
        before = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        after = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        line = before + place.format(secret) + after
        assert secret not in redact(line), line


def test_secret_looking_words_in_prose_stay_readable() -> None:
    # The names added for cookies, passphrases, `pwd` and `X-Auth` headers hide values
    # given under them, not sentences that mention them.
    for line in (
        "passwords reset for 3 users",
        "the passphrase was changed; cookies accepted",
        "Cookie policy updated",
        "X-Authored-By: bob",
        "password_policy: |\n  at least 8 characters\nuser: bob",
        "cwd=/app pwdx=1",
    ):
        assert redact(line) == line


def test_a_yaml_block_scalar_is_hidden_to_its_end() -> None:
    # Before, `password: ***` and the secret on the next line, shown.
    assert redact("password: |\n  s3cret\n  more\nuser: bob") == "password: ***\nuser: bob"
    assert redact("a:\n  token: >-\n    x\n  b: 1") == "a:\n  token: ***\n  b: 1"
    assert redact("secret: |") == "secret: ***"


def test_a_cookie_header_is_hidden_whole() -> None:
    # Before, `Cookie: theme=dark; sessionid=abc` was printed as it was.
    assert redact("Cookie: theme=dark; sessionid=abc") == "Cookie: ***"
    assert redact("{'cookie': 'sid=abc', 'host': 'h'}") == "{'cookie': ***, 'host': 'h'}"
    # Before, the quoted value ended it: `Cookie: ***"dark"; sessionid=abc`.
    assert redact('Cookie: theme="dark"; sessionid=abc') == "Cookie: ***"
    assert (
        redact("""{'h': 'Cookie: theme="dark"; sid=abc', 'x': 1}""")
        == "{'h': 'Cookie: ***', 'x': 1}"
    )


def test_json_held_in_a_json_string_hides_its_secrets() -> None:
    """A JSON string holding JSON is logged with its quotes escaped: before, the key was not
    known behind `\\"`, and `{\\"password\\": \\"x\\"}` showed whole."""
    assert redact('{\\"password\\": \\"x\\"}') == '{\\"password\\": ***}'
    assert redact('"{\\"token\\": \\"my long secret\\", \\"a\\": 1}"') == (
        '"{\\"token\\": ***, \\"a\\": 1}"'
    )
    assert redact('{\\"cookie\\": \\"sid=x\\", \\"a\\": 1}') == ('{\\"cookie\\": ***, \\"a\\": 1}')
    assert redact('{\\"authorization\\": \\"Token abc\\"}') == (
        '{\\"authorization\\": \\"Token ***\\"}'
    )


def test_headers_as_httpx_shows_them_are_hidden() -> None:
    """httpx's repr of headers: a list of (name, value) pairs, or Headers({...}) or
    Headers([...]) when a name repeats. Before, the pairs showed whole."""
    pairs = "[('set-cookie', 'sid=x'), ('authorization', 'Token y'), ('x-api-key', 'k')]"
    assert redact(pairs) == (
        "[('set-cookie', ***), ('authorization', 'Token ***'), ('x-api-key', ***)]"
    )
    assert redact("Headers({'cookie': 'sid=x', 'password': 'p w'})") == (
        "Headers({'cookie': ***, 'password': ***})"
    )
    assert redact("Headers([('set-cookie', 'a=1'), ('set-cookie', 'b=2')])") == (
        "Headers([('set-cookie', ***), ('set-cookie', ***)])"
    )
    assert redact('[(b"cookie", b"sid=x"), (b"token", b"t")]') == (
        '[(b"cookie", ***), (b"token", ***)]'
    )


@pytest.mark.parametrize(
    "line",
    [
        # socketio's rooms_redis refused at start (server/channels/socketio_rooms.py)
        "'rooms_redis' must be a Redis URL (redis://host:6379/0), a mapping with 'url' or "
        "'host' (and 'port', 'db', 'password', 'use_ssl', 'key_prefix'), or false",
        "endpoints.yml: models: unknown keys ['token', 'url', 'wait_time_between_pulls']",
        'the "password", which the store needs, is missing',
        '    PrincipalKind = Literal["open", "token", "jwt"]',  # a traceback's line
        '    for flag, value in (("--auth-token", args.auth_token), ("--jwt-secret", s)):',
    ],
)
def test_a_secret_word_quoted_before_a_comma_is_no_pair_of_a_header(line: str) -> None:
    """A (name, value) pair is the name, a comma and a quoted value closing the pair: a list
    of setting names, prose or a line of code naming a secret word and a comma is no such
    pair. Before, the word after the comma was hidden ('password', ***, 'key_prefix')."""
    assert redact(line) == line


def test_a_cookie_with_an_unclosed_quote_is_hidden_to_its_end() -> None:
    # Before, the value stopped at the quote: `Cookie: a=***"x; sid=secret`.
    assert redact('Cookie: a="x; sid=secret') == "Cookie: ***"
    assert redact('Cookie: a="x; sid=secret\nnext line') == "Cookie: ***\nnext line"


def test_a_yaml_block_scalar_with_windows_line_ends_is_hidden_to_its_end() -> None:
    # Before, `password: ***` and the secret on the next line, shown.
    line = "password: |\r\n  s3cret\r\n\r\n  more\r\nuser: bob"
    assert redact(line) == "password: ***\r\nuser: bob"


def test_a_long_line_of_block_scalar_headers_is_redacted_at_once() -> None:
    # Each `password:|#` read its comment to the end of the line, looking for the block's
    # first line: 600 KB of them cost 3 s of CPU (100 KB, 70-100 ms).
    line = "password: |#" * 50_000
    started = time.thread_time()
    assert redact(line) == "password: ***"  # (the rest is the first one's comment)
    assert time.thread_time() - started < 1
    # A comment of any length before the block still hides it.
    block = "password: |  # " + "the db's, see the wiki " * 20 + "\n  s3cret\nuser: bob"
    assert redact(block) == "password: ***\nuser: bob"


def test_a_jwt_glued_to_text_in_any_script_is_hidden() -> None:
    # Text without spaces (Chinese, Japanese) runs straight into a token a user pastes.
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    assert redact(f"我的令牌{jwt_like}。") == "我的令牌***。"
    assert redact(f"café{jwt_like}") == "café***"
    assert redact(f"word{jwt_like}") == f"word{jwt_like}"  # a longer base64url run: no JWT


def test_a_secret_given_as_an_argument_after_its_key_in_the_format_is_hidden() -> None:
    # `logger.warning("token: %s", t)`: the format's value placeholder was taken for the
    # secret and hidden, the record then failed to format, and logging's error report
    # printed the arguments, the secret among them, as they were.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecretsFilter())
    logger = logging.getLogger("tests.auth.secret_arguments")
    logger.addHandler(handler)
    logger.propagate = False
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            logger.warning("login token: %s for user %s", "S3cr3tValue", "bob")
            logger.warning("%s: password: %s", "db", "S3cr3tValue")
            logger.warning("key %(name)s, secret: %(value)s", {"name": "a", "value": "S3cr3t"})
    finally:
        logger.removeHandler(handler)
    assert errors.getvalue() == ""
    assert stream.getvalue().splitlines() == [
        "login token: ***",
        "db: password: ***",
        "key a, secret: ***",
    ]


def _logged_by_a_handler_with_the_filter(log: Any, formatter: logging.Formatter) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactSecretsFilter())
    logger = logging.getLogger("tests.auth.secret_shapes")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        log(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_a_secret_in_a_dict_given_alone_or_split_over_arguments_is_hidden() -> None:
    # A dict given as the only argument is logging's mapping of named arguments: each value
    # was redacted alone (`'p4ss'` is no secret), then `%s` printed the dict whole; a key in
    # one argument and its value in the next were never read together.
    def log(logger: logging.Logger) -> None:
        logger.warning("settings %s", {"password": "p4ssw0rdXYZ", "user": "bob"})
        logger.warning("%s=%s user=%s", "password", "p4ssw0rdXYZ", "bob")
        logger.warning("%s %s", "connecting to", "redis://:p4ssw0rdXYZ@cache")
        logger.warning({"password": "p4ssw0rdXYZ"})  # a message that is no text
        logger.warning(ValueError("redis://:p4ssw0rdXYZ@cache"))

    assert _logged_by_a_handler_with_the_filter(log, logging.Formatter()).splitlines() == [
        "settings {'password': ***, 'user': 'bob'}",
        "password=*** user=bob",
        "connecting to redis://:***@cache",
        "{'password': ***}",
        "redis://:***@cache",
    ]


def _raise_and_log(logger: logging.Logger) -> None:
    try:
        raise ValueError("no route to postgresql://bot:p4ssw0rdXYZ@db/x, password: p4ssw0rdXYZ")
    except ValueError:
        logger.exception("store down")


@pytest.mark.parametrize("fmt", ["text", "json", "plain"])
def test_a_secret_in_an_exceptions_message_is_hidden_in_the_traceback(fmt: str) -> None:
    # `logger.exception(...)` (a store or a library failing with its URL in the message):
    # the message was redacted, the traceback printed below it never was.
    from server.logs import JsonFormatter, TextFormatter

    formatter = {
        "text": TextFormatter("%(message)s"),
        "json": JsonFormatter(),
        "plain": logging.Formatter("%(message)s"),  # a --logging-config-file's own
    }[fmt]
    logged = _logged_by_a_handler_with_the_filter(_raise_and_log, formatter)
    assert "p4ssw0rdXYZ" not in logged
    assert "postgresql://bot:***@db/x" in logged
    assert "Traceback (most recent call last)" in logged
    if fmt == "text":  # still indented under its record
        assert all(line.startswith("  ") for line in logged.splitlines()[1:])


def test_a_secret_in_an_extra_field_is_hidden_in_json_lines() -> None:
    # `extra=` fields are printed by the JSON formatter as they were: the filter rewrites the
    # message, its arguments and traceback only.
    import json

    from server.logs import JsonFormatter

    def log(logger: logging.Logger) -> None:
        extra = {"store": "redis://:p4ssw0rdXYZ@cache", "password": "p4ssw0rdXYZ", "n": 3}
        logger.warning("store down", extra=extra)

    line = json.loads(_logged_by_a_handler_with_the_filter(log, JsonFormatter()))
    assert (line["store"], line["password"], line["n"]) == ("redis://:***@cache", "***", 3)


def test_a_record_is_redacted_once_whatever_the_filters_it_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # uvicorn's access line passes the filter on `uvicorn.access` and on each root handler
    # (stderr, --log-file): each argument and the format were redacted again at every one,
    # 10 passes of every pattern for one line at -v with a log file. Now the line once.
    from server.auth import log_redaction

    spy = mock.Mock(wraps=log_redaction.redact)
    monkeypatch.setattr(log_redaction, "redact", spy)
    the_filter = RedactSecretsFilter()
    logger = logging.getLogger("tests.auth.redacted_once")
    handlers = [logging.StreamHandler(io.StringIO()) for _ in range(2)]
    logger.addFilter(the_filter)
    for handler in handlers:
        handler.addFilter(the_filter)
        logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/status", "1.1", 200)
        logger.debug("below the level: %s", "no work")
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.removeFilter(the_filter)
        logger.setLevel(logging.NOTSET)
    assert [call.args for call in spy.call_args_list] == [
        ('127.0.0.1:5 - "GET /status HTTP/1.1" 200',)
    ]


def test_configured_secrets_are_hidden_alone_and_the_names_beside_them_are_not() -> None:
    """endpoints.yml's secrets are hidden wherever a line quotes them (a URL's password
    percent-decoded too); a `token_name`, a `key_prefix` and a short value are not
    registered: hiding those everywhere would garble every line holding the word."""
    log_redaction.keep_configured_secrets_out_of_logs(
        {
            "models": {"url": "http://m/x", "token": "model-token-2", "token_name": "auth_2"},
            "lock_store": {"type": "redis", "password": "lock-pass-2", "key_prefix": "prefix-2"},
            "event_broker": {"url": "amqp://bot:rabbit%40pass-2@mq:5672/"},
            "brokers": [{"sasl_password": "kafka-pass-2"}],
            "tracker_store": {"password": "short", "bypass": "proxy-host-2"},
            "socketio": {"jwt_key": "socket-jwt-key-2"},
        }
    )
    line = "model-token-2 lock-pass-2 rabbit@pass-2 rabbit%40pass-2 kafka-pass-2 socket-jwt-key-2"
    assert redact(line) == "*** *** *** *** *** ***"
    assert redact("auth_2 prefix-2 short proxy-host-2") == "auth_2 prefix-2 short proxy-host-2"


class _CountedScans(str):
    """A log line that counts the searches made in it with `in`."""

    scans = 0

    def __contains__(self, part: object) -> bool:
        _CountedScans.scans += 1
        return super().__contains__(part)  # type: ignore[operator]


def _scans_of_a_line(secrets: int) -> int:
    for i in range(secrets):
        log_redaction.redact_also(f"a-secret+of/{i:03d}=")  # 6 spellings each at least
    _CountedScans.scans = 0
    line = '127.0.0.1:5 - "GET /conversations/abc/tracker?include_events=ALL HTTP/1.1" 200'
    assert log_redaction.redact(_CountedScans(line)) == line
    return _CountedScans.scans


def test_a_log_line_is_read_as_often_whatever_the_number_of_secrets() -> None:
    """Every log line is searched for each secret registered (the flags', endpoints.yml's,
    credentials.yml's, the environment's; each in several spellings): before, once per
    spelling (20 secrets, some 100 searches of each line). Now in one pass, as with one."""
    one = _scans_of_a_line(1)
    assert _scans_of_a_line(20) == one


def test_a_configured_secret_that_is_also_a_shown_setting_does_not_garble_the_logs() -> None:
    """A PostgreSQL of a development setup whose password is its user name (`postgres`):
    hidden wherever a line quoted it alone, every `postgresql://postgres@db` line read
    `***ql://***@db`, and the name shows there anyway. A password that is no other
    setting's value is hidden alone as before."""
    log_redaction.keep_configured_secrets_out_of_logs(
        {
            "tracker_store": {"dialect": "postgresql", "username": "postgres"}
            | {"password": "postgres"},
            "event_broker": {"url": "amqp://rabbit-user:rabbit-user@mq/", "password": "other-3"},
            "lock_store": {"type": "redis", "password": "lock-pass-3"},
        }
    )
    line = "connected to postgresql://postgres@db/rasa and amqp://rabbit-user@mq/"
    assert redact(line) == line
    assert redact("lock-pass-3 other-3") == "*** ***"


def test_a_private_key_registered_is_hidden_whole() -> None:
    """A private key's text (thousands of characters) is searched for on its own; a secret
    it holds is hidden with it."""
    key = "-----BEGIN PRIVATE KEY-----\n" + "k3y+/" * 400 + "\n-----END PRIVATE KEY-----"
    log_redaction.redact_also(key)
    log_redaction.redact_also("k3y+/k3y+/")
    assert redact(f"loaded {key} and k3y+/k3y+/.") == "loaded *** and ***."
