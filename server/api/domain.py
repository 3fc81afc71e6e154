"""GET /domain: the loaded model's domain as JSON or YAML, chosen by the Accept header.

`*/*` or no Accept header gives JSON (Rasa answers 406 to `*/*`, which breaks curl).
"""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from server.api.errors import ApiError
from server.api.openapi import error_responses
from server.api.schemas import Domain, ref
from server.api.services import Services, services_of
from server.auth import require_auth

YAML_MEDIA_TYPE = "application/x-yaml"
_NOT_ACCEPTABLE = (
    'Invalid Accept header. Domain can be provided as json ("Accept: application/json") or'
    'yml ("Accept: application/x-yaml"). Make sure you\'ve set the appropriate Accept header.'
)


def preferred_format(accept: str | None) -> str | None:
    """`json`, `yaml`, or None when the Accept header allows neither."""
    if accept is None or not accept.strip():
        return "json"
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media.endswith("json") or media in ("*/*", "application/*"):
            return "json"
        if media.endswith("yaml") or media.endswith("yml"):
            return "yaml"
        if media == "text/*":
            return "yaml"
    return None


def domain_router() -> APIRouter:
    router = APIRouter(tags=["Domain"], dependencies=[Depends(require_auth())])

    @router.get(
        "/domain",
        operation_id="getDomain",
        summary="Retrieve the loaded domain",
        responses={
            200: {
                "description": "The domain; YAML is sent as application/x-yaml, as Rasa does.",
                "content": {
                    media: {"schema": ref(Domain)}
                    for media in ("application/json", "application/yaml", YAML_MEDIA_TYPE)
                },
            },
            **error_responses(406, 409),
        },
    )
    async def get_domain(request: Request, services: Services = Depends(services_of)) -> Response:
        model = services.agent.model()
        wanted = preferred_format(request.headers.get("accept"))
        if wanted is None:
            raise ApiError(406, "NotAcceptable", _NOT_ACCEPTABLE)
        domain: dict[str, Any] = model.domain.as_dict()
        if wanted == "json":
            return JSONResponse(domain)
        text = yaml.safe_dump(domain, sort_keys=False, allow_unicode=True)
        return Response(text, media_type=YAML_MEDIA_TYPE)

    return router
