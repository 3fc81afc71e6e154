"""GET /inspect: a plain page with a web chat and the live tracker of any conversation.

The page holds no data; everything it shows comes from the API with the caller's
credentials. With `--auth-token` alone the page itself needs `?token=` (which it carries to its
API calls). With a JWT secret (alone or with the token), a browser cannot send the Bearer
header when it navigates, so the page loads and asks for the JWT (or takes `?token=`), and
every API call it makes is checked as usual.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from server.api.query import FirstValueRoute
from server.auth.dependency import authenticate_request, authenticator_of

PAGE = Path(__file__).with_name("static") / "inspect.html"

# Inline code runs only when its hash is in the policy, so an injected script or style does
# not; `.style.width` from the page's own script is CSSOM, which style-src allows.
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def _sources(page: str, tag: str) -> str:
    hashes = (
        base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        for name, body in _INLINE.findall(page)
        if name == tag
    )
    return " ".join(f"'sha256-{digest}'" for digest in hashes) or "'none'"


@lru_cache(maxsize=1)
def _page() -> tuple[str, dict[str, str]]:
    page = PAGE.read_text(encoding="utf-8")
    headers = {
        "Cache-Control": "no-store",
        # The page's URL may carry ?token=: never send it to another site.
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        # Images are the bot's own (a response's `image` URL): any https URL, or data:.
        "Content-Security-Policy": (
            f"default-src 'none'; script-src {_sources(page, 'script')}; "
            f"style-src {_sources(page, 'style')}; img-src 'self' https: data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
    }
    return page, headers


def inspect_router() -> APIRouter:
    router = APIRouter(route_class=FirstValueRoute, tags=["Inspector"])

    @router.get(
        "/inspect",
        response_class=HTMLResponse,
        operation_id="getInspector",
        summary="Web chat and conversation inspector (HTML)",
        include_in_schema=False,
    )
    async def inspect(request: Request) -> HTMLResponse:
        config = authenticator_of(request).config
        # With a JWT secret too, the page loads as with JWT alone: a browser cannot send the
        # Bearer header as it opens it.
        if config.uses_token and not config.uses_jwt:
            authenticate_request(request)
        page, headers = _page()
        return HTMLResponse(page, headers=headers)

    return router
