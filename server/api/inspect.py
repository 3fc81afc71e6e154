"""GET /inspect: a plain page with a web chat and the live tracker of any conversation.

The page holds no data; everything it shows comes from the API with the caller's
credentials. With `--auth-token` the page itself needs `?token=` (which it carries to its API
calls). With JWT only, a browser cannot send the Bearer header when it navigates, so the page
loads and asks for the JWT, and every API call it makes is checked as usual.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from server.auth.dependency import authenticate_request, authenticator_of

PAGE = Path(__file__).with_name("static") / "inspect.html"

_HEADERS = {
    "Cache-Control": "no-store",
    # The page's URL may carry ?token=: never send it to another site.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "img-src * data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
}


@lru_cache(maxsize=1)
def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


def inspect_router() -> APIRouter:
    router = APIRouter(tags=["Inspector"])

    @router.get(
        "/inspect",
        response_class=HTMLResponse,
        operation_id="getInspector",
        summary="Web chat and conversation inspector (HTML)",
        include_in_schema=False,
    )
    async def inspect(request: Request) -> HTMLResponse:
        authenticator = authenticator_of(request)
        if authenticator.config.uses_token:
            authenticate_request(request)
        return HTMLResponse(_page(), headers=_HEADERS)

    return router
