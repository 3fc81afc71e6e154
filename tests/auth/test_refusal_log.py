"""A refused request (401/403) is logged once, saying which route, which client and why; a
flood of refusals logs a bounded number of lines and then how many were not logged."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import jwt
import pytest
from fastapi import APIRouter, Depends

from server.api.app import create_app
from server.api.settings import ApiSettings
from server.auth import AuthConfig, require_auth

TOKEN = "the-static-token-4e1d"
SECRET = "a-jwt-secret-that-is-long-enough-for-hs256"


def protected_router() -> APIRouter:
    router = APIRouter()

    @router.get(
        "/conversations/{conversation_id:path}/tracker",
        dependencies=[Depends(require_auth("conversation_id"))],
    )
    async def tracker(conversation_id: str) -> dict[str, str]:
        return {"sender_id": conversation_id}

    @router.post("/model/parse", dependencies=[Depends(require_auth())])
    async def parse(body: dict[str, Any]) -> dict[str, Any]:
        return body

    return router


def make_app() -> Any:
    auth = AuthConfig(token=TOKEN, jwt_secret=SECRET)
    return create_app(ApiSettings(auth=auth), [protected_router()])


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def bearer(payload: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode(payload, SECRET, algorithm="HS256")}


def server_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("server")]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "why"),
    [
        ({}, 401, "no credentials"),
        ({"params": {"token": "not-it"}}, 401, "wrong token"),
        (
            {"headers": bearer({"user": {"username": "a", "role": "admin"}, "exp": 1})},
            401,
            "ExpiredSignatureError",
        ),
        ({"headers": {"Authorization": "Token abc"}}, 401, "malformed Authorization header"),
        (
            {"headers": bearer({"user": {"username": "mallory", "role": "user"}})},
            403,
            "role 'user' of 'mallory' may not reach conversation 'alice'",
        ),
        (
            {"headers": bearer({"user": {"username": "alice"}})},
            403,
            "JWT names no role",
        ),
    ],
    ids=["nothing", "wrong-token", "expired-jwt", "other-scheme", "other-user", "no-role"],
)
async def test_a_refusal_is_one_line_naming_route_client_and_reason(
    caplog: pytest.LogCaptureFixture, request_kwargs: dict[str, Any], status: int, why: str
) -> None:
    caplog.set_level(logging.INFO, logger="server")
    async with client(make_app()) as c:
        response = await c.get("/conversations/alice/tracker", **request_kwargs)
    assert response.status_code == status
    lines = server_lines(caplog)
    assert len(lines) == 1, lines
    assert "GET /conversations/alice/tracker" in lines[0]
    assert "127.0.0.1" in lines[0] and str(status) in lines[0] and why in lines[0], lines[0]
    assert "not-it" not in caplog.text


async def test_a_username_that_differs_only_in_unicode_form_is_refused_saying_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """'José' written with a combining accent (NFD, as macOS file names and some clients
    write it) is another conversation id than 'José' with 'é' (NFC): refused, as in Rasa,
    which compares them exactly. Before, the line read "role 'user' of 'José' may not reach
    conversation 'José'", the two looking the same."""
    caplog.set_level(logging.INFO, logger="server")
    nfd = "Jose\u0301"
    async with client(make_app()) as c:
        response = await c.get(
            "/conversations/Jos%C3%A9/tracker",
            headers=bearer({"user": {"username": nfd, "role": "user"}}),
        )
    assert response.status_code == 403
    (line,) = server_lines(caplog)
    assert "differ only in Unicode normalisation" in line and "'Jose\\u0301'" in line, line


async def test_a_refusal_line_quotes_long_ids_in_brief(caplog: pytest.LogCaptureFixture) -> None:
    """A request head may be 64 KiB: before, a `user` JWT naming a 20,000-character username,
    on a conversation id as long, wrote both whole, a 40 KB line at each refusal."""
    caplog.set_level(logging.INFO, logger="server")
    async with client(make_app()) as c:
        response = await c.get(
            "/conversations/" + "b" * 20_000 + "/tracker",
            headers=bearer({"user": {"username": "a" * 20_000, "role": "user"}}),
        )
    assert response.status_code == 403
    (line,) = server_lines(caplog)
    assert len(line) < 1_000, len(line)
    assert "role 'user' of 'aaa" in line and "may not reach conversation 'bbb" in line, line


@pytest.mark.parametrize(
    ("username", "conversation_id", "shown"),
    [
        ("a" * 200 + "X" + "a" * 200, "a" * 200 + "Y" + "a" * 200, ["'" + "a" * 20 + "X", "Y"]),
        ("a" * 200 + "e\u0301" + "a" * 200, "a" * 200 + "\xe9" + "a" * 200, ["\\u0301", "\\xe9"]),
    ],
    ids=["differ-in-the-middle", "unicode-forms-in-the-middle"],
)
async def test_long_ids_cut_alike_are_told_apart(
    caplog: pytest.LogCaptureFixture, username: str, conversation_id: str, shown: list[str]
) -> None:
    """Two long ids that differ only in their middle print alike once cut: the line quotes
    them where they differ, so the operator sees why the user was refused (before, it named
    two ids that looked the same, even with its Unicode hint, which was cut too)."""
    caplog.set_level(logging.INFO, logger="server")
    async with client(make_app()) as c:
        response = await c.get(
            f"/conversations/{conversation_id}/tracker",
            headers=bearer({"user": {"username": username, "role": "user"}}),
        )
    assert response.status_code == 403
    (line,) = server_lines(caplog)
    assert len(line) < 1_000, len(line)
    assert "from character 180" in line and all(part in line for part in shown), line


async def test_a_refusal_before_the_body_is_read_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="server")
    async with client(make_app()) as c:
        response = await c.post("/model/parse", content=b"{not json")
    assert response.status_code == 401
    lines = server_lines(caplog)
    assert len(lines) == 1 and "POST /model/parse" in lines[0] and "no credentials" in lines[0]


async def test_a_flood_of_refusals_logs_a_bounded_number_of_lines_then_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from server.auth.refusals import LINES_PER_WINDOW, WINDOW_SECONDS

    caplog.set_level(logging.INFO, logger="server")
    app = make_app()
    flood = 300
    async with client(app) as c:
        for _ in range(flood):
            assert (await c.get("/conversations/x/tracker?token=guess")).status_code == 401
        assert len(server_lines(caplog)) <= LINES_PER_WINDOW + 1, len(server_lines(caplog))

        # The next refusal after the window says how many went unlogged.
        app.state.authenticator.refusals.window_started = time.monotonic() - WINDOW_SECONDS - 1
        caplog.clear()
        assert (await c.get("/conversations/x/tracker")).status_code == 401
    unlogged = flood - LINES_PER_WINDOW
    assert any(f"{unlogged} more requests were refused" in line for line in server_lines(caplog))


async def test_counts_of_one_refusal_read_in_the_singular(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: "1 requests refused within 60 s", "1 more requests were refused in ..."."""
    caplog.set_level(logging.INFO, logger="server")
    app = make_app()
    async with client(app) as c:
        refusals = app.state.authenticator.refusals
        refusals.lines_per_window = 1
        for _ in range(2):  # one logged, one counted
            assert (await c.get("/conversations/x/tracker?token=guess")).status_code == 401
        assert server_lines(caplog)[1].startswith("1 request refused within 60 s; ")
        refusals.window_started = time.monotonic() - refusals.window_seconds - 1
        caplog.clear()
        assert (await c.get("/conversations/x/tracker")).status_code == 401
    assert server_lines(caplog)[0].startswith("1 more request was refused in 6"), caplog.text


@pytest.mark.parametrize("admin_first", [True, False], ids=["admin-first", "admin-last"])
async def test_two_authorization_headers_are_refused_whichever_comes_first(
    caplog: pytest.LogCaptureFixture, admin_first: bool
) -> None:
    # A gateway that checks the last header and a server that reads the first would let the
    # unchecked one in; the field holds one credential (RFC 9110), so two is a client error.
    caplog.set_level(logging.INFO, logger="server")
    admin = bearer({"user": {"username": "boss", "role": "admin"}})["Authorization"]
    pair = [("Authorization", admin), ("Authorization", "Bearer not-a-jwt")]
    async with client(make_app()) as c:
        response = await c.get(
            "/conversations/x/tracker", headers=pair if admin_first else pair[::-1]
        )
    assert response.status_code == 401
    assert "2 Authorization headers" in caplog.text
