"""The app factory: server information routes, OpenAPI, CORS, state and lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request

from server import __version__
from server.api.app import create_app
from server.api.middleware.cors import check_origins
from server.api.settings import ApiSettings
from server.api.status import info_router, status_router
from server.auth import AuthConfig


@dataclass
class Info:
    model_file: str
    model_id: str | None
    fingerprint: str
    training_type: str = "both"


@dataclass
class Holder:
    info: Info | None = None
    num_active_training_jobs: int = 0
    last_error: str | None = None


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def app_with(holder: Holder, **settings: Any) -> FastAPI:
    return create_app(ApiSettings(**settings), [info_router(), status_router(holder)])


async def test_hello_keeps_rasas_text() -> None:
    async with client_for(app_with(Holder())) as client:
        response = await client.get("/", headers={"Accept": "*/*"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "Hello from Rasa: 3.6.21"


async def test_version() -> None:
    async with client_for(app_with(Holder())) as client:
        response = await client.get("/version", headers={"Accept": "*/*"})
    assert response.json() == {
        "version": "3.6.21",
        "minimum_compatible_version": "3.6.21",
        "botserver": __version__,
    }


async def test_status_of_a_loaded_model() -> None:
    holder = Holder(Info("/srv/models/20261122-013754-afraid.tar.gz", "feb0aa8e", "sha256:ab"), 1)
    async with client_for(app_with(holder)) as client:
        response = await client.get("/status")
    assert response.status_code == 200
    assert response.json() == {
        "model_file": "20261122-013754-afraid.tar.gz",
        "model_id": "feb0aa8e",
        "num_active_training_jobs": 1,
        "fingerprint": "sha256:ab",
        "training_type": "both",
    }


async def test_status_shows_a_failed_load_next_to_the_old_model() -> None:
    holder = Holder(Info("a.tar.gz", "1", "f"), last_error="archive member ../x refused")
    async with client_for(app_with(holder)) as client:
        body = (await client.get("/status")).json()
    assert body["last_load_error"]["message"] == "archive member ../x refused"


async def test_status_without_a_model_is_409() -> None:
    async with client_for(app_with(Holder(last_error="bad archive"))) as client:
        response = await client.get("/status")
    assert response.status_code == 409
    body = response.json()
    assert body["reason"] == "Conflict"
    assert body["details"] == {"last_load_error": {"message": "bad archive", "at": None}}


async def test_status_is_protected_but_hello_and_version_are_not() -> None:
    app = app_with(Holder(), auth=AuthConfig(token="s3cret"))
    async with client_for(app) as client:
        assert (await client.get("/status")).status_code == 401
        assert (await client.get("/status?token=s3cret")).status_code == 409
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/version")).status_code == 200


async def test_openapi_document_lists_rasas_security_schemes() -> None:
    async with client_for(app_with(Holder())) as client:
        response = await client.get("/openapi.json")
        docs = await client.get("/docs")
    spec = response.json()
    assert spec["components"]["securitySchemes"]["TokenAuth"] == {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The static token given to `--auth-token`.",
    }
    assert spec["components"]["securitySchemes"]["JWT"]["scheme"] == "bearer"
    assert {"TokenAuth": []} in spec["paths"]["/status"]["get"]["security"]
    assert "security" not in spec["paths"]["/version"]["get"]
    assert docs.status_code == 404
    assert spec["paths"]["/status"]["get"]["responses"]["401"]["content"]["application/json"] == {
        "schema": {"$ref": "#/components/schemas/Error"}
    }


async def test_openapi_documents_400_not_422() -> None:
    router = APIRouter()

    @router.get("/numbers")
    async def numbers(until: float) -> dict[str, float]:
        return {"until": until}

    async with client_for(create_app(ApiSettings(), [router])) as client:
        spec = (await client.get("/openapi.json")).json()
    responses = spec["paths"]["/numbers"]["get"]["responses"]
    assert "422" not in responses and "400" in responses
    assert "HTTPValidationError" not in spec["components"]["schemas"]


async def test_without_the_api_there_is_no_openapi_document() -> None:
    async with client_for(app_with(Holder(), enable_api=False)) as client:
        assert (await client.get("/openapi.json")).status_code == 404


ORIGIN = "http://example.test"


async def test_cors_for_one_origin() -> None:
    app = app_with(Holder(), cors_origins=[ORIGIN], auth=AuthConfig(token="s3cret"))
    async with client_for(app) as client:
        preflight = await client.options(
            "/status",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
        )
        denied = await client.get("/status", headers={"Origin": ORIGIN})
        other = await client.get("/version", headers={"Origin": "http://evil.test"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    # Even an error answer carries the CORS headers, so a browser client can read it.
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == ORIGIN
    assert denied.headers["access-control-expose-headers"] == "filename"
    assert "access-control-allow-origin" not in other.headers
    # Credentials are allowed to the origins listed only (before, the header was on the
    # answer to any other origin too, as in Rasa: harmless, but docs said it was not sent).
    assert "access-control-allow-credentials" not in other.headers
    assert denied.headers["access-control-allow-credentials"] == "true"


async def test_cors_for_any_origin_allows_no_credentials() -> None:
    # Reflecting every origin with credentials allowed would let any site make credentialed
    # requests (client certificates, a proxy's cookies) and read the answers.
    async with client_for(app_with(Holder(), cors_origins=["*"])) as client:
        simple = await client.get("/version", headers={"Origin": ORIGIN, "Cookie": "s=1"})
        preflight = await client.options(
            "/status",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
    for response in (simple, preflight):
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-headers"] == "authorization"


async def test_a_preflight_to_an_unknown_path_lets_the_browser_read_the_404() -> None:
    # A preflight is answered for any path (a 404 to it would fail in the browser as a CORS
    # error); the request itself then gets the 404 with the CORS headers, readable by the page.
    async with client_for(app_with(Holder(), cors_origins=[ORIGIN])) as client:
        preflight = await client.options(
            "/nosuch", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
        )
        plain = await client.options("/nosuch")
        request = await client.get("/nosuch", headers={"Origin": ORIGIN})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert plain.status_code == 404  # not a preflight: the path is unknown, as for GET
    assert request.status_code == 404
    assert request.headers["access-control-allow-origin"] == ORIGIN


async def test_a_refused_preflight_answers_rasas_error_body() -> None:
    async with client_for(app_with(Holder(), cors_origins=[ORIGIN])) as client:
        response = await client.options(
            "/status",
            headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "GET"},
        )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["status"], body["reason"], body["code"]) == ("failure", "CorsRefused", 400)
    assert body["details"] == {"refused": ["origin"]}
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    ("allowed", "origin", "is_allowed"),
    [
        # As sanic-cors reads `--cors` for Rasa: a value with `*`, `\\`, `]` or `?` is a
        # regular expression, matched ignoring case; others are compared ignoring case.
        (r"https://.*\.example\.test", "https://app.example.test", True),
        (r"https://.*\.example\.test", "https://APP.example.test", True),
        (r"http://localhost:\d+", "http://localhost:3000", True),
        # Rasa's `http://localhost:*` (a colon, any number of times) let any origin that
        # starts so in, http://localhost.evil.test too; here, only http://localhost itself.
        ("http://localhost:*", "http://localhost.evil.test", False),
        # The whole origin must match (sanic-cors matched its start only).
        (r"https://.*\.example\.test", "https://app.example.test.evil.test", False),
        (r"https://.*\.example\.test", "https://example.test", False),
        ("http://Example.Test", "http://example.test", True),
    ],
)
async def test_cors_origins_are_read_as_rasa_reads_them(
    allowed: str, origin: str, is_allowed: bool
) -> None:
    """Before, each value was compared as is: Rasa's patterns and capitals matched nothing,
    and the browser refused every call."""
    async with client_for(app_with(Holder(), cors_origins=[allowed])) as client:
        simple = await client.get("/version", headers={"Origin": origin})
        preflight = await client.options(
            "/status", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
        )
    if is_allowed:
        assert simple.headers["access-control-allow-origin"] == origin
        assert preflight.status_code == 200
    else:
        assert "access-control-allow-origin" not in simple.headers
        assert preflight.status_code == 400


async def test_cors_dot_star_is_the_wildcard_as_in_rasa() -> None:
    # sanic-cors reads `*` as `.*`, and `.*` as its wildcard: `--cors '.*'` is Rasa's
    # `--cors '*'`. Before, `.*` was a pattern, so every site (and `null`) was reflected with
    # Access-Control-Allow-Credentials: true, which `*` never allows.
    async with client_for(app_with(Holder(), cors_origins=[".*"])) as client:
        for origin in ("http://evil.test", "null"):
            simple = await client.get("/version", headers={"Origin": origin, "Cookie": "s=1"})
            assert simple.headers["access-control-allow-origin"] == "*"
            assert "access-control-allow-credentials" not in simple.headers


@pytest.mark.parametrize(
    ("pattern", "origin"),
    [
        ("https?://.*", "https://evil.test"),
        ("https?://[^/]+|null", "https://evil.test"),
        ("http://.*", "http://evil.test"),
    ],
)
async def test_a_cors_pattern_admitting_any_origin_is_the_wildcard(
    pattern: str, origin: str
) -> None:
    # As `*` and `.*`: any site, never credentials. Before, every site the pattern admits was
    # echoed with Access-Control-Allow-Credentials: true.
    async with client_for(app_with(Holder(), cors_origins=["https://app.test", pattern])) as c:
        simple = await c.get("/version", headers={"Origin": origin, "Cookie": "s=1"})
    assert simple.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in simple.headers


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?i)https://.*\.example\.test",  # a flag of the whole expression, at its start
        r"(?P<host>https://app\.example\.test)",  # a named group, twice below
    ],
)
async def test_cors_patterns_with_their_own_flags_or_names_serve(pattern: str) -> None:
    # Before, every pattern was joined into one expression: `(?i)` inside it, or a group
    # name used twice, broke it when the first request came, and every answer of the server
    # (channels and health included) was a 500 "Internal Server Error".
    check_origins([pattern, r"(?P<host>https://other\.test)"])
    app = app_with(Holder(), cors_origins=[pattern, r"(?P<host>https://other\.test)"])
    async with client_for(app) as client:
        allowed = await client.get("/version", headers={"Origin": "https://APP.example.test"})
        other = await client.get("/version", headers={"Origin": "https://other.test"})
        refused = await client.get("/version", headers={"Origin": "https://evil.test"})
    assert allowed.status_code == other.status_code == refused.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://APP.example.test"
    assert other.headers["access-control-allow-origin"] == "https://other.test"
    assert "access-control-allow-origin" not in refused.headers


async def test_no_cors_by_default() -> None:
    async with client_for(app_with(Holder())) as client:
        response = await client.get("/version", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in response.headers


async def test_services_and_lifespan_are_passed_in() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("start")
        yield
        events.append("stop")

    router = APIRouter()

    @router.get("/greeting")
    async def greeting(request: Request) -> dict[str, str]:
        return {"greeting": request.app.state.greeter}

    app = create_app(ApiSettings(), [router], lifespan=lifespan, state={"greeter": "hi"})
    async with app.router.lifespan_context(app), client_for(app) as client:
        assert (await client.get("/greeting")).json() == {"greeting": "hi"}
    assert events == ["start", "stop"]


@pytest.mark.parametrize("accept", ["*/*", "application/json", "text/html", "nonsense"])
async def test_no_406_whatever_the_accept_header(accept: str) -> None:
    async with client_for(app_with(Holder(Info("m.tar.gz", "1", "f")))) as client:
        for path in ("/", "/version", "/status"):
            assert (await client.get(path, headers={"Accept": accept})).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/status/", 200), ("GET", "/version/", 200), ("POST", "/status/", 405)],
)
async def test_a_trailing_slash_reaches_the_route_as_in_rasa(
    method: str, path: str, status: int
) -> None:
    """Before, a 307 redirect to the path without the slash (an empty answer to clients that
    do not follow redirects, and an http:// Location behind a TLS proxy)."""
    holder = Holder(info=Info("m.tar.gz", "id", "fp"))
    async with client_for(app_with(holder)) as client:
        response = await client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert "location" not in response.headers


async def test_an_unknown_path_with_a_slash_is_still_404() -> None:
    async with client_for(app_with(Holder())) as client:
        response = await client.get("/nosuch/")
    assert response.status_code == 404
    assert response.json()["reason"] == "NotFound"


async def test_head_is_answered_as_get_without_the_body() -> None:
    """Before, 405 for every route (`curl -I`, HEAD health checks)."""
    app = app_with(Holder(info=Info("m.tar.gz", "id", "fp")), auth=AuthConfig(token="s3cret"))
    async with client_for(app) as client:
        get = await client.get("/")
        head = await client.head("/")
        denied = await client.head("/status")
        allowed = await client.head("/status?token=s3cret")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["content-type"] == get.headers["content-type"]
    assert denied.status_code == 401  # credentials are checked as for GET
    assert allowed.status_code == 200 and allowed.content == b""


async def test_options_names_the_methods_of_a_route_without_credentials() -> None:
    """Before, 405 (HAProxy's default health check is `OPTIONS /`); Rasa answers 200."""
    app = app_with(Holder(), auth=AuthConfig(token="s3cret"))
    async with client_for(app) as client:
        status = await client.options("/status")
        root = await client.options("/")
        unknown = await client.options("/nosuch")
        wrong = await client.post("/status")
    assert status.status_code == 200 and status.content == b""
    assert status.headers["allow"] == "GET, HEAD, OPTIONS"
    assert root.status_code == 200
    assert unknown.status_code == 404
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, HEAD, OPTIONS"
