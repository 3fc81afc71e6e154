"""The FastAPI app factory: security, Rasa's error bodies, CORS, timeout and size limits.

Routers and services come in as arguments, so each resource group stays in its own module
and the app can be assembled with fakes in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import anyio.to_thread
import fastapi.routing
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Lifespan, Receive, Scope, Send

from server import __version__
from server.api.errors import error_response, install_error_handlers
from server.api.middleware import RequestGuardMiddleware
from server.api.middleware.cors import ApiCorsMiddleware
from server.api.openapi import install_openapi
from server.api.settings import ApiSettings
from server.api.shutdown import stopping
from server.auth import Authenticator
from server.auth.dependency import APP_STATE_KEY

OPENAPI_URL = "/openapi.json"


class BotServerApp(FastAPI):
    """FastAPI with a short way in for direct routes (the REST webhook, every turn's entry).

    Once the request guard has learned a direct route (see `RequestGuardMiddleware`), its
    requests go from here to the guard, which still applies the body limit, the response
    timeout and the catch-all: FastAPI's own layers (its telemetry check reads the
    environment three times per request, the 500 handler, the body-limit wrapper) are
    skipped. Only when the guard is the outermost middleware (no CORS layer to keep) and
    FastAPI's telemetry was off when the route was learned (a tracer configured later does
    not see these requests).
    """

    _guard: RequestGuardMiddleware | None = None
    _short_way: bool | None = None  # decided once, at the first direct request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            guard = self._guard
            if (
                guard is not None
                and scope["type"] == "http"
                and (scope["method"], scope["path"]) in guard.direct_routes
            ):
                if self._short_way is None:
                    self._short_way = self._may_skip_layers()
                if self._short_way:
                    scope["app"] = self
                    await guard(scope, receive, send)
                    return
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            if scope["type"] != "http" or not stopping():
                raise
            await _answer_shutting_down(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        outermost = self.user_middleware[0].cls if self.user_middleware else None
        self._guard = _find_guard(stack) if outermost is RequestGuardMiddleware else None
        return stack

    def _may_skip_layers(self) -> bool:
        if self.root_path:
            return False
        telemetry = getattr(self, "_native_telemetry", None)
        return telemetry is not None and not telemetry.enabled()


async def _answer_shutting_down(scope: Scope, receive: Receive, send: Send) -> None:
    """A request uvicorn cancels at the end of the graceful shutdown period: its turn was cut
    short, unstored, so the client gets a 503 it may retry elsewhere (uvicorn would answer a
    500 and log the cancellation's traceback)."""
    response = error_response(
        503,
        "ServiceUnavailable",
        "The server is shutting down; the request was not completed. Retry.",
        headers={"Retry-After": "1"},
    )
    try:
        await response(scope, receive, send)
    except (RuntimeError, OSError):  # the answer had begun, or the client is gone
        pass


def _find_guard(stack: Any) -> RequestGuardMiddleware | None:
    seen = 0
    while stack is not None and seen < 20:  # a middleware stack is a short chain
        if isinstance(stack, RequestGuardMiddleware):
            return stack
        stack = getattr(stack, "app", None)
        seen += 1
    return None


def _serve_either_slash(router: APIRouter) -> None:
    """A path with or without a trailing slash reaches the same route, as in Rasa (Sanic's
    routes are not strict about slashes), instead of Starlette's 307 redirect: clients that
    do not follow it saw an empty answer, and behind a TLS proxy it pointed at `http://`."""
    router.redirect_slashes = False
    not_found = router.default

    async def other_slash(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if scope["type"] != "http" or path == "/" or scope.get(_SLASH_TOGGLED):
            await not_found(scope, receive, send)
            return
        other = path[:-1] if path.endswith("/") else path + "/"
        raw = scope.get("raw_path") or path.encode()
        raw = raw[:-1] if raw.endswith(b"/") else raw + b"/"
        await router.app(
            {**scope, "path": other, "raw_path": raw, _SLASH_TOGGLED: True}, receive, send
        )

    router.default = other_slash


_SLASH_TOGGLED = "botserver.slash_toggled"


def prepare_routes(app: FastAPI) -> None:
    """Has FastAPI work out each route's parameters and dependencies now, as it otherwise
    does on the first request after startup: 19 ms of the event loop at the first turn
    (`get_dependant` for every route). Matching a path no route takes visits them all; a
    thread may do it (FastAPI guards the work with a lock).

    Then finds each endpoint's file and line, which FastAPI otherwise does at each route's
    first request, for its error messages: it reads and tokenizes the endpoint's source
    (the first /model/parse: 8,000 more Python calls on the loop than the next one, 3-5 ms
    of its CPU). Its cache is by the endpoint; without that (private) helper, nothing."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/\x00",
        "root_path": "",
        "headers": [],
        "query_string": b"",
    }
    for route in app.router.routes:
        route.matches(dict(scope))
    endpoint_context = getattr(fastapi.routing, "_extract_endpoint_context", None)
    if endpoint_context is not None:
        # A FastAPI release whose helper takes other arguments must not stop the server
        # from starting (the first requests then do that work themselves).
        with contextlib.suppress(Exception):
            for endpoint in _endpoints(app.router.routes):
                endpoint_context(endpoint)


async def warm_thread_pool() -> None:
    """Imports anyio's asyncio backend in a thread, then passes one call through anyio's
    thread pool. Otherwise the first Starlette background task a process runs (a response
    that frees a long tracker after it is sent) or FastAPI thread-pool call imports that
    backend (13 modules) on the event loop: 9 ms of its CPU (moodbot on SQLite), every
    conversation waiting."""
    with contextlib.suppress(ImportError):  # a private name: a release that renames it
        await asyncio.to_thread(importlib.import_module, "anyio._backends._asyncio")
    await anyio.to_thread.run_sync(_nothing)


def _nothing() -> None:
    pass


def _endpoints(routes: Iterable[BaseRoute]) -> Iterator[Callable[..., Any]]:
    """The endpoint of every API route, those of included routers too (FastAPI 0.165 keeps
    an included router whole, as `original_router`)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _endpoints(included.routes)
        elif isinstance(route, APIRoute):
            yield route.endpoint


def create_app(
    settings: ApiSettings | None = None,
    routers: Iterable[APIRouter] = (),
    lifespan: Lifespan[Any] | None = None,
    state: Mapping[str, Any] | None = None,
) -> FastAPI:
    """Build the app. `state` entries become `app.state` attributes (services for routes).

    Raises `server.errors.InvalidConfig` when the JWT settings are unusable, so a bad key
    fails at startup rather than on the first request.
    """
    settings = settings or ApiSettings()
    app = BotServerApp(
        title="botserver",
        version=__version__,
        description="Rasa 3 compatible HTTP API.",
        openapi_url=OPENAPI_URL if settings.enable_api else None,
        docs_url="/docs" if settings.enable_api and settings.docs_ui else None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        lifespan=lifespan,
        # Rasa reads a JSON body whatever the Content-Type says; be as lenient when it is absent.
        strict_content_type=False,
    )
    setattr(app.state, APP_STATE_KEY, Authenticator(settings.auth))
    app.state.settings = settings
    for name, value in (state or {}).items():
        setattr(app.state, name, value)

    install_error_handlers(app)
    install_openapi(app)
    for router in routers:
        app.include_router(router)
    _serve_either_slash(app.router)

    # Added innermost first. CORS is outermost so that every answer, 413, 503 and 500
    # included, carries its headers.
    app.add_middleware(
        RequestGuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        timeout=settings.response_timeout,
    )
    if settings.cors_origins:
        app.add_middleware(ApiCorsMiddleware, origins=tuple(settings.cors_origins))
    return app
