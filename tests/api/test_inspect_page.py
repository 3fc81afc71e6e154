"""GET /inspect without a browser: the page's Content-Security-Policy lets its own inline
script and style run, and nothing else."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx

from server.api.app import create_app
from server.api.inspect import inspect_router
from server.api.settings import ApiSettings
from server.auth import AuthConfig


async def _inspect() -> httpx.Response:
    app = create_app(ApiSettings(), [inspect_router()])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/inspect")


def _policy(response: httpx.Response) -> dict[str, list[str]]:
    directives = response.headers["content-security-policy"].split(";")
    return {name: values for name, *values in (d.split() for d in directives if d.strip())}


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


async def test_the_policy_allows_no_inline_code_but_the_pages_own() -> None:
    response = await _inspect()
    assert response.status_code == 200
    policy = _policy(response)
    for directive in ("script-src", "style-src", "img-src"):
        assert "'unsafe-inline'" not in policy[directive]
        assert "*" not in policy[directive]
    page = response.text
    scripts = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    styles = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
    assert scripts and styles
    # What a browser runs: the inline blocks whose hash the policy lists.
    assert policy["script-src"] == [_hash(s) for s in scripts]
    assert policy["style-src"] == [_hash(s) for s in styles]
    # A style="" attribute or an on...="" handler would be refused: the page has none, and
    # its script sets no style attribute (it uses classes and CSSOM, which CSP allows).
    assert not re.search(r"\sstyle\s*=|\son[a-z]+\s*=", page.replace(scripts[0], ""))
    assert not re.search(r"\bstyle\s*:|setAttribute\(\s*[\"']style", scripts[0])
    assert policy["img-src"] == ["'self'", "https:", "data:"]


async def test_with_a_token_and_a_jwt_secret_a_browser_opens_the_page_without_the_token() -> None:
    """A browser cannot send a Bearer header as it opens a page: with --jwt-secret too, the
    page loads without `?token=` and asks for the JWT, as with --jwt-secret alone (it holds
    no data; each API call it makes is checked). Before, a JWT user got a 401 for good."""
    both = AuthConfig(token="t0ken-of-the-admin", jwt_secret="a-jwt-secret-long-enough-for-hs256")
    for auth, status in ((both, 200), (AuthConfig(token="t0ken-of-the-admin"), 401)):
        app = create_app(ApiSettings(auth=auth), [inspect_router()])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/inspect")).status_code == status
