"""Our OpenAPI document, corrected to what the server really answers.

FastAPI documents a 422 `HTTPValidationError` on every route with parameters; we answer 400
with Rasa's error body instead, and 401/403 on protected routes. This rewrites the generated
document accordingly, once, on first request.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Rasa's error body.",
    "properties": {
        "version": {"type": "string", "description": "Rasa version"},
        "status": {"type": "string", "enum": ["failure"]},
        "message": {"type": "string", "description": "Error message"},
        "reason": {"type": "string", "description": "Error category"},
        "details": {"type": "object", "description": "Additional error information"},
        "help": {"type": "string", "description": "URL to additional material"},
        "code": {"type": "number", "description": "HTTP status code"},
    },
}

_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_DESCRIPTIONS = {
    "400": "Bad Request",
    "401": "User is not authenticated.",
    "403": "User has insufficient permission.",
    "409": "The request conflicts with the currently loaded model.",
}
_METHODS = {"get", "put", "post", "delete", "patch", "options", "head"}


def _error_response(status: str) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS.get(status, "Error"),
        "content": {"application/json": {"schema": _ERROR_REF}},
    }


def rewrite_error_responses(document: dict[str, Any]) -> dict[str, Any]:
    """Replace 422 by Rasa's 400 and add 401/403 to operations that declare security."""
    for path_item in document.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            if responses.pop("422", None) is not None:
                responses.setdefault("400", _error_response("400"))
            if operation.get("security"):
                responses.setdefault("401", _error_response("401"))
                responses.setdefault("403", _error_response("403"))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return document


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = rewrite_error_responses(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
