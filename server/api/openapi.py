"""Our OpenAPI document: the helpers routes use to document their bodies and statuses, and
the pass that makes the generated document say what the server really answers.

Routes read their request bodies and build their responses themselves, so they document
them with `json_request(...)` / `json_response(...)` / `error_responses(...)` (pure
documentation, no run-time validation). FastAPI's generated 422 `HTTPValidationError`
becomes Rasa's 400; 401/403 go on protected routes; 413, 415, 500 and 503 (body limit, a
compressed body, any unexpected failure, response timeout) go everywhere they can happen;
query parameters get their real types.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from server.api.schemas import Error, component_schemas, ref

_STATUS_DESCRIPTIONS = {
    400: "The request is malformed: a parameter or the body is invalid.",
    401: "No valid credentials: a missing or wrong token, or a bad JWT.",
    403: "The credentials do not allow this route (a `user` JWT for another conversation).",
    404: "The conversation, action or intent named does not exist.",
    406: "The Accept header asks for a format this route cannot produce.",
    409: "No model is loaded.",
    413: "The request body is larger than the server's limit.",
    415: "The request body is gzip-compressed: no Content-Encoding is decoded, no archive read.",
    500: "An unexpected failure; the server log has the details.",
    503: "The answer took longer than the response timeout.",
    507: "The server has no disk space left for the model; the current one keeps serving.",
}
_METHODS = {"get", "put", "post", "delete", "patch", "options", "head"}


def _flag(description: str, default: bool = False) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "boolean", "default": default}}


# Routes read query parameters as raw strings (`server.api.query`: only `true` is true, a
# bad number counts as absent), so FastAPI would document every one as an optional string;
# these are the types and meanings a client should go by.
_QUERY_PARAMETERS: dict[str, dict[str, Any]] = {
    "include_events": {
        "description": "Which events to include: ALL, the current session's APPLIED events, "
        "those AFTER_RESTART, or NONE (`events` is then null).",
        "schema": {
            "type": "string",
            "enum": ["ALL", "APPLIED", "AFTER_RESTART", "NONE"],
            "default": "AFTER_RESTART",
        },
    },
    "until": {
        "description": "Replay only events up to this Unix timestamp (seconds).",
        "schema": {"type": "number"},
    },
    "all_sessions": _flag("Export every session of the conversation, not only the last."),
    "output_channel": {
        "description": "Send the bot's messages to this channel of credentials.yml, or to "
        "the conversation's `latest` input channel.",
        "schema": {"type": "string"},
    },
    "execute_side_effects": _flag(
        "Send appended bot messages to `output_channel` and schedule or cancel reminders."
    ),
    "save_to_default_model_directory": _flag(
        "Keep the trained model in the server's model directory (else in a temporary one).",
        default=True,
    ),
    "force_training": _flag("Train even if the training data did not change."),
    "augmentation": {
        "description": "The ML policy's `augmentation_factor` (how many stories glued "
        "together it learns from); absent: config.yml's, else 20.",
        "schema": {"type": "string"},
    },
    "num_threads": {
        "description": "Accepted for compatibility; our trainers ignore it.",
        "schema": {"type": "string"},
    },
    "callback_url": {
        "description": "Answer 204 at once and POST the result to this URL when done.",
        "schema": {"type": "string", "format": "uri"},
    },
    "e2e": _flag("Evaluate the stories end to end (user texts are parsed by NLU)."),
    "model": {
        "description": "Evaluate this model archive instead of the loaded one.",
        "schema": {"type": "string"},
    },
    "cross_validation_folds": {
        "description": "Cross-validate the posted YAML data (with its pipeline) in this many "
        "folds instead of testing a model.",
        "schema": {"type": "integer", "minimum": 2},
    },
    "emulation_mode": {
        "description": "Answer in the response format of this service (wit.ai, LUIS v3, "
        "Dialogflow ES) instead of Rasa's; case-insensitive.",
        "schema": {"type": "string", "enum": ["WIT", "LUIS", "DIALOGFLOW"]},
    },
}
_PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "conversation_id": {
        "description": "The conversation's id (the sender id); it may contain `/`.",
        "schema": {"type": "string", "maxLength": 255},
    },
}
_JSON = "application/json"


def _schema_of(body: type[BaseModel] | dict[str, Any]) -> dict[str, Any]:
    return ref(body) if isinstance(body, type) else body


def json_response(body: type[BaseModel] | dict[str, Any], description: str) -> dict[str, Any]:
    """A `responses=` entry: a JSON body of a documented model (or a raw JSON schema)."""
    return {"description": description, "content": {_JSON: {"schema": _schema_of(body)}}}


def error_response(status: int, description: str | None = None) -> dict[str, Any]:
    """A `responses=` entry for one error status, with Rasa's error body."""
    return json_response(Error, description or _STATUS_DESCRIPTIONS.get(status, "Error"))


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for error statuses, each with Rasa's error body."""
    return {status: error_response(status) for status in statuses}


def json_request(
    body: type[BaseModel] | dict[str, Any], description: str | None = None
) -> dict[str, Any]:
    """An `openapi_extra=` request body of a documented model (or a raw JSON schema)."""
    return request_body({_JSON: _schema_of(body)}, description)


def request_body(
    content: dict[str, dict[str, Any]], description: str | None = None
) -> dict[str, Any]:
    """An `openapi_extra=` request body with a schema per media type."""
    body: dict[str, Any] = {
        "required": True,
        "content": {media: {"schema": schema} for media, schema in content.items()},
    }
    if description:
        body["description"] = description
    return {"requestBody": body}


def rewrite_error_responses(document: dict[str, Any]) -> dict[str, Any]:
    """Replace 422 by Rasa's 400, add 401/403 to operations that declare security and the
    statuses any route may answer, type the parameters, and put the documented models in
    the components."""
    for path_item in document.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _METHODS:
                continue
            for parameter in operation.get("parameters", []):
                table = _QUERY_PARAMETERS if parameter["in"] == "query" else _PATH_PARAMETERS
                parameter.update(table.get(parameter["name"], {}))
            responses = operation.setdefault("responses", {})
            if responses.pop("422", None) is not None:
                responses.setdefault("400", error_response(400))
            extra = [500, 503]
            if operation.get("security"):
                extra += [401, 403]
            if "requestBody" in operation:
                extra += [413, 415]
            for status in extra:
                responses.setdefault(str(status), error_response(status))
            operation["responses"] = dict(sorted(responses.items()))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas.update(component_schemas())
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
