"""Probes for orchestrators: GET /health/live (the process answers) and GET /health/ready
(a model is loaded and the tracker store answers), both open like Rasa's `GET /`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

logger = logging.getLogger(__name__)

# A store slower than this is as good as down for a readiness probe.
PING_TIMEOUT_SECONDS = 2.0


def health_router(
    model_loaded: Callable[[], bool],
    ping: Callable[[], Awaitable[None]],
    ping_timeout: float = PING_TIMEOUT_SECONDS,
) -> APIRouter:
    """Probe routes. `ping` raises (or hangs past `ping_timeout`) when the store is down."""
    router = APIRouter(tags=["Server Information"])

    @router.get("/health/live", operation_id="getLiveness", summary="The process is running")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/health/ready",
        operation_id="getReadiness",
        summary="Ready for traffic: a model is loaded and the tracker store answers",
        responses={503: {"description": "Not ready; `reasons` says why"}},
    )
    async def ready() -> JSONResponse:
        reasons: list[str] = []
        checks: dict[str, Any] = {"model": "ok", "tracker_store": "ok"}
        if not model_loaded():
            checks["model"] = "not loaded"
            reasons.append("no model is loaded")
        try:
            await asyncio.wait_for(ping(), ping_timeout)
        except asyncio.TimeoutError:
            checks["tracker_store"] = "timeout"
            reasons.append(f"the tracker store did not answer within {ping_timeout:g} s")
        except Exception as exc:  # any failure of the store means "not ready", with its reason
            checks["tracker_store"] = "unavailable"
            reasons.append(f"the tracker store is unavailable: {exc}")
            logger.debug("readiness: tracker store ping failed: %s", exc)
        if reasons:
            return JSONResponse(
                {"status": "not ready", "checks": checks, "reasons": reasons}, status_code=503
            )
        return JSONResponse({"status": "ready", "checks": checks})

    return router
