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
from server.api.query import FirstValueRoute
from server.api.schemas import Domain, ref
from server.api.services import Services, services_of
from server.auth import require_auth
from server.yaml_scalars import SafeDumper12

YAML_MEDIA_TYPE = "application/x-yaml"
_NOT_ACCEPTABLE = (
    'Invalid Accept header. Domain can be provided as json ("Accept: application/json") or'
    'yml ("Accept: application/x-yaml"). Make sure you\'ve set the appropriate Accept header.'
)


def preferred_format(accept: str | None) -> str | None:
    """`json`, `yaml`, or None when the Accept header allows neither.

    Each format takes the quality (`q=`) of the most specific range naming it: its own type
    (`…json`; `…yaml` or `…yml`), else `*/*` or `application/*` (both) or `text/*` (YAML).
    The higher quality wins; on a tie, the format listed first (JSON for a wildcard).
    """
    if accept is None or not accept.strip():
        return "json"
    # format -> (specificity, quality, position); specificity 1 = named, 0 = wildcard.
    best: dict[str, tuple[int, float, int]] = {}
    for position, item in enumerate(accept.split(",")):
        media, *params = (part.strip().lower() for part in item.split(";"))
        quality = _quality(params)
        if media.endswith("json"):
            ranges = [("json", 1)]
        elif media.endswith("yaml") or media.endswith("yml"):
            ranges = [("yaml", 1)]
        elif media in ("*/*", "application/*"):
            ranges = [("json", 0), ("yaml", 0)]
        elif media == "text/*":
            ranges = [("yaml", 0)]
        else:
            continue
        for name, specificity in ranges:
            known = best.get(name)
            if known is None or (specificity, quality) > known[:2]:
                best[name] = (specificity, quality, position)
    choices = [(q, -position, name == "json", name) for name, (_, q, position) in best.items()]
    if not choices or max(choices)[0] <= 0:
        return None
    return max(choices)[3]


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 1.0
    return 1.0


def domain_router() -> APIRouter:
    router = APIRouter(
        route_class=FirstValueRoute, tags=["Domain"], dependencies=[Depends(require_auth())]
    )

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
        text = yaml.dump(domain, Dumper=SafeDumper12, sort_keys=False, allow_unicode=True)
        return Response(text, media_type=YAML_MEDIA_TYPE)

    return router
