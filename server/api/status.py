"""Server information routes: GET / (health text), GET /version, GET /status (protected).

/status reads any object shaped like `ModelStatusSource` (the live ModelHolder in practice).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePath
from typing import Any, Protocol

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from server import RASA_COMPAT_VERSION, __version__
from server.api.errors import ERROR_STATUSES, ApiError
from server.api.openapi import error_responses, json_response
from server.api.query import FirstValueRoute
from server.api.schemas import Status, Version
from server.auth import require_auth
from server.auth.log_redaction import redact
from server.errors import NoModelLoaded

# Rasa's text, kept verbatim: health checks grep for it and clients parse the version after
# the colon. Our own version is in GET /version.
HELLO_TEXT = f"Hello from Rasa: {RASA_COMPAT_VERSION}"
# Rasa's MINIMUM_COMPATIBLE_VERSION; clients compare it with their own.
MINIMUM_COMPATIBLE_VERSION = RASA_COMPAT_VERSION


class ModelInfoLike(Protocol):
    @property
    def model_file(self) -> str: ...

    @property
    def model_id(self) -> str | None: ...

    @property
    def fingerprint(self) -> Any: ...

    @property
    def training_type(self) -> str: ...


class ModelStatusSource(Protocol):
    """What GET /status needs; `server.models.holder.ModelHolder` provides it."""

    @property
    def info(self) -> ModelInfoLike | None: ...

    @property
    def num_active_training_jobs(self) -> int: ...


def info_router() -> APIRouter:
    """GET / and GET /version: open, and present even without `--enable-api`."""
    router = APIRouter(route_class=FirstValueRoute, tags=["Server Information"])

    @router.get(
        "/",
        response_class=PlainTextResponse,
        operation_id="getHealth",
        summary="Health endpoint",
    )
    async def hello() -> str:
        return HELLO_TEXT

    @router.get(
        "/version",
        operation_id="getVersion",
        summary="Version of the server",
        response_model=None,
        responses={200: json_response(Version, "The API and model format versions.")},
    )
    async def version() -> dict[str, str]:
        return {
            "version": RASA_COMPAT_VERSION,
            "minimum_compatible_version": MINIMUM_COMPATIBLE_VERSION,
            "botserver": __version__,
        }

    return router


class PullStatusSource(Protocol):
    """Why model-server pulls fail; `server.models.source.ModelSource` provides it."""

    @property
    def last_pull_error(self) -> dict[str, str] | None: ...


def _last_load_error(source: object) -> dict[str, Any] | None:
    message = getattr(source, "last_error", None)
    if not message:
        return None
    at = getattr(source, "last_error_at", None)
    return {
        "message": redact(str(message)),
        "at": at.isoformat() if isinstance(at, datetime) else None,
    }


def _problems(source: ModelStatusSource, pulls: PullStatusSource | None) -> dict[str, Any]:
    """Why the model is not what it should be: a failed load, failing model-server pulls."""
    problems: dict[str, Any] = {}
    load_error = _last_load_error(source)
    if load_error:
        problems["last_load_error"] = load_error
    pull_error = pulls.last_pull_error if pulls is not None else None
    if pull_error:
        problems["last_pull_error"] = {**pull_error, "message": redact(pull_error["message"])}
    return problems


def status_router(source: ModelStatusSource, pulls: PullStatusSource | None = None) -> APIRouter:
    """GET /status about `source` (and the model-server pulls of `pulls`): 409 when no model
    is loaded, as in Rasa."""
    router = APIRouter(route_class=FirstValueRoute, tags=["Server Information"])

    @router.get(
        "/status",
        operation_id="getStatus",
        summary="Status of the server and the loaded model",
        dependencies=[Depends(require_auth())],
        response_model=None,
        responses={
            200: json_response(Status, "The loaded model."),
            **error_responses(409),
        },
    )
    async def status() -> dict[str, Any]:
        info = source.info
        problems = _problems(source, pulls)
        if info is None:
            conflict = ERROR_STATUSES[NoModelLoaded]
            raise ApiError(
                conflict.status,
                conflict.reason,
                conflict.message or "No model loaded.",
                problems or None,
                conflict.help_url,
            )
        body: dict[str, Any] = {
            # A basename, as Rasa: the server's directory layout is nobody's business.
            "model_file": PurePath(info.model_file).name,
            "model_id": info.model_id,
            "num_active_training_jobs": source.num_active_training_jobs,
            "fingerprint": info.fingerprint,
            "training_type": info.training_type,
        }
        return {**body, **problems}

    return router
