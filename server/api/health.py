"""Probes for orchestrators: GET /health/live (the process answers) and GET /health/ready
(a model is loaded and the stores a turn needs answer: tracker store, shared lock store), both
open like Rasa's `GET /`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from server.api.query import FirstValueRoute

logger = logging.getLogger(__name__)

# A store slower than this is as good as down for a readiness probe.
PING_TIMEOUT_SECONDS = 2.0


def health_router(
    model_loaded: Callable[[], bool],
    pings: Mapping[str, Callable[[], Awaitable[None]]],
    ping_timeout: float = PING_TIMEOUT_SECONDS,
    reports: Mapping[str, Callable[[], str]] | None = None,
) -> APIRouter:
    """Probe routes. Each of `pings` (by check name: `tracker_store`, `lock_store`) raises, or
    hangs past `ping_timeout`, when its store is down; they are asked at once. `reports`
    (`event_broker`: `ok`, `unavailable`, `blocked`) are shown in `checks` as they say but do
    not make the server unready: a turn does not need them (events wait in a queue)."""
    router = APIRouter(route_class=FirstValueRoute, tags=["Server Information"])
    failing: set[str] = set()  # the checks failing at the last probe

    @router.get("/health/live", operation_id="getLiveness", summary="The process is running")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/health/ready",
        operation_id="getReadiness",
        summary="Ready for traffic: a model is loaded and the stores answer",
        responses={503: {"description": "Not ready; `reasons` says why"}},
    )
    async def ready() -> JSONResponse:
        reasons: list[str] = []
        checks: dict[str, Any] = {"model": "ok"}
        if not model_loaded():
            checks["model"] = "not loaded"
            reasons.append("no model is loaded")
        names = list(pings)
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(pings[name](), ping_timeout) for name in names),
            return_exceptions=True,
        )
        for name, outcome in zip(names, outcomes, strict=True):
            what = name.replace("_", " ")
            checks[name] = "ok"
            if isinstance(outcome, asyncio.TimeoutError):
                checks[name] = "timeout"
                reasons.append(f"the {what} did not answer within {ping_timeout:g} s")
            elif isinstance(outcome, Exception):  # any failure means "not ready"
                # The probe is open: hosts, ports and database names stay in the log.
                checks[name] = "unavailable"
                reasons.append(f"the {what} is unavailable (the server log says why)")
            elif isinstance(outcome, BaseException):
                raise outcome
            _log_change(failing, name, what, checks[name], outcome)
        for name, report in (reports or {}).items():
            checks[name] = report()
        if reasons:
            return JSONResponse(
                {"status": "not ready", "checks": checks, "reasons": reasons}, status_code=503
            )
        return JSONResponse({"status": "ready", "checks": checks})

    return router


def _log_change(failing: set[str], name: str, what: str, state: str, outcome: object) -> None:
    """A check that starts failing is logged once, with why; one that recovers, once."""
    if state != "ok" and name not in failing:
        failing.add(name)
        why = "no answer" if state == "timeout" else outcome
        logger.warning("readiness: the %s is %s: %s", what, state, why)
    elif state == "ok" and name in failing:
        failing.discard(name)
        logger.warning("readiness: the %s answers again", what)
