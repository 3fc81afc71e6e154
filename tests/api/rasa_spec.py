"""Rasa's OpenAPI spec for the tests: loading, errata, and response-body validation.

Where Rasa's own spec contradicts what Rasa 3.6 actually sends (rasa-recorded-examples.md),
we follow the real server, because that is what clients depend on; each such place is one
entry in `ERRATA`, and docs/differences-from-rasa.md lists them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.shared_data import OPENAPI_SPEC

_ANY: dict[str, Any] = {}


def _nullable(schema: dict[str, Any]) -> None:
    schema["nullable"] = True


def _apply_errata(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    tracker = schemas["Tracker"]["properties"]
    # Rasa sends `slots` as an object {name: value} (recorded GET /tracker), not an array.
    tracker["slots"] = {"type": "object", "additionalProperties": _ANY}
    tracker["sender_id"] = {"type": "string"}
    # null in every recorded tracker of a conversation without them (and events for NONE).
    for name in (
        "followup_action",
        "latest_input_channel",
        "latest_action_name",
        "latest_event_time",
    ):
        _nullable(tracker[name])
    tracker["events"] = {"allOf": [{"$ref": "#/components/schemas/EventList"}], "nullable": True}
    # Event timestamps are float epoch seconds (every recorded event), not integers.
    schemas["BasicEvent"]["properties"]["timestamp"] = {"type": "number"}
    # An empty tracker's latest_message is {"intent": {}, "text": null, ...}, and
    # trigger_intent stores {"intent": {"name": ...}} without a confidence (recorded).
    schemas["Intent"].pop("required", None)
    # Rasa's parse of a message no classifier ran on has {"name": null, "confidence": 0.0}.
    schemas["Intent"]["properties"]["name"]["nullable"] = True
    schemas["ParseResult"]["properties"]["text"]["nullable"] = True
    schemas["ParseResult"].pop("required", None)
    # Entity values may be any JSON value; trigger_intent entities carry no offsets.
    entity = schemas["Entity"]
    entity["properties"]["value"] = _ANY
    entity["required"] = ["entity", "value"]
    # The policy is null when a followup action or a forced prediction decided.
    schemas["PredictResult"]["properties"]["policy"]["nullable"] = True
    # A domain lists intents and entities as names or {name: properties} (recorded
    # GET /domain); each response is a list of variations, which may have no text;
    # Rasa 3 slots have no auto_fill.
    domain = schemas["Domain"]["properties"]
    domain["intents"]["items"] = {
        "oneOf": [{"type": "string"}, {"$ref": "#/components/schemas/IntentDescription"}]
    }
    domain["entities"]["items"] = {"oneOf": [{"type": "string"}, {"type": "object"}]}
    domain["responses"]["additionalProperties"] = {
        "type": "array",
        "items": {"$ref": "#/components/schemas/TemplateDescription"},
    }
    schemas["SlotDescription"]["required"] = ["type"]
    schemas["TemplateDescription"].pop("required", None)
    # An action's confidence is the prediction's float (the spec says string); both are null
    # when the prediction failed.
    action = schemas["EvaluationStoriesResult"]["properties"]["actions"]["items"]["properties"]
    action["confidence"] = {"type": "number", "nullable": True}
    _nullable(action["policy"])
    # `?emulation_mode=WIT` (a mode the spec offers) answers in wit.ai's format, whose
    # `entities` is an object keyed by entity name, not ParseResult's list. (LUIS and
    # Dialogflow answers share no key with ParseResult, which requires none.)
    schemas["WitParseResult"] = {
        "type": "object",
        "required": ["text", "intents", "entities"],
        "properties": {
            "text": {"type": "string", "nullable": True},
            "intents": {"type": "array", "items": {"type": "object"}},
            "entities": {"type": "object"},
        },
    }
    parse = spec["paths"]["/model/parse"]["post"]["responses"][200]["content"]
    parse["application/json"]["schema"] = {
        "anyOf": [
            {"$ref": "#/components/schemas/ParseResult"},
            {"$ref": "#/components/schemas/WitParseResult"},
        ]
    }
    # The three error shapes share no required key, so `oneOf` can never match one.
    errors = schemas["EvaluationItem"]["properties"]["errors"]["items"]
    errors["anyOf"] = errors.pop("oneOf")
    _apply_status_errata(spec)


def _apply_status_errata(spec: dict[str, Any]) -> None:
    """Statuses and media types Rasa sends (rasa-http-api.md, recorded) but leaves out."""
    responses = spec["components"]["responses"]
    responses["404NotFound"] = {
        "description": "The conversation, or the intent to trigger, does not exist.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    paths = spec["paths"]
    conversation = "/conversations/{conversation_id}"
    # ensure_conversation_exists guards story, execute and predict; trigger_intent answers
    # 404 for an intent the domain lacks.
    for path in ("story", "execute", "trigger_intent", "predict"):
        operation = paths[f"{conversation}/{path}"]
        method = "get" if path == "story" else "post"
        operation[method]["responses"][404] = {"$ref": "#/components/responses/404NotFound"}
    # ensure_loaded_agent guards both: 409 without a model.
    for path, method in (("/model/parse", "post"), ("/domain", "get")):
        paths[path][method]["responses"][409] = {"$ref": "#/components/responses/409Conflict"}
    # The story is sent as text/plain (Sanic's response.text), the domain as x-yaml.
    story = responses["200Story"]["content"]
    story["text/plain"] = story["text/yml"]
    domain = paths["/domain"]["get"]["responses"][200]["content"]
    domain["application/x-yaml"] = domain["application/yaml"]


# libyaml's parser reads the 65 kB spec in a seventh of the pure-Python one's CPU (0.02 s
# against 0.14 s), the same document; each xdist worker reads it as it collects.
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_spec(errata: bool = True) -> dict[str, Any]:
    spec = yaml.load(OPENAPI_SPEC.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)
    if errata:
        _apply_errata(spec)
    return spec


def write_spec(path: Path) -> Path:
    """The spec with its errata applied, for tools such as schemathesis."""
    path.write_text(yaml.safe_dump(load_spec(), sort_keys=False), encoding="utf-8")
    return path


def _to_json_schema(node: Any, spec: dict[str, Any], depth: int = 0) -> Any:
    """Inline $refs and turn OpenAPI 3.0 `nullable` into JSON Schema."""
    if depth > 40:
        return {}
    if isinstance(node, list):
        return [_to_json_schema(n, spec, depth + 1) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target: Any = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return _to_json_schema(copy.deepcopy(target), spec, depth + 1)
    out = {
        k: _to_json_schema(v, spec, depth + 1)
        for k, v in node.items()
        if k not in ("nullable", "example", "deprecated")
    }
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


class RasaSpec:
    """Validates response bodies against the spec's schema for (path, method, status)."""

    def __init__(self, spec: dict[str, Any] | None = None):
        self.spec = spec or load_spec()

    def response_schema(
        self, path: str, method: str, status: int, media_type: str = "application/json"
    ) -> dict[str, Any] | None:
        operation = self.spec["paths"][path][method.lower()]
        responses = operation["responses"]
        response = responses.get(status, responses.get(str(status)))
        assert response is not None, f"the spec has no {status} for {method} {path}"
        response = _to_json_schema(response, self.spec)
        content = response.get("content") or {}
        media = content.get(media_type)
        return media.get("schema") if media else None

    def validate(
        self,
        body: Any,
        path: str,
        method: str,
        status: int,
        media_type: str = "application/json",
    ) -> None:
        schema = self.response_schema(path, method, status, media_type)
        assert schema is not None, f"no JSON schema for {status} {method} {path}"
        jsonschema.validate(body, schema)
