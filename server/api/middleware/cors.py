"""CORS for `--cors`: Starlette's middleware, with Rasa's error body on a refused preflight
and no credentials for a wildcard origin; origins read as Rasa's sanic-cors reads them."""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Send

from server.api.errors import error_response
from server.errors import InvalidConfig

logger = logging.getLogger(__name__)

# sanic-cors (Rasa's) reads an origin holding one of these as a regular expression.
_PATTERN_CHARACTERS = ("*", "\\", "]", "?")
# Any origin: sanic-cors turns `*` into `.*` and takes `.*` for its wildcard.
WILDCARDS = ("*", ".*")
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#]+", re.IGNORECASE)


def is_pattern(origin: str) -> bool:
    """`https://.*\\.example\\.com`, `http://localhost:\\d+`: a regular expression, as in Rasa."""
    return origin not in WILDCARDS and any(c in origin for c in _PATTERN_CHARACTERS)


def compiled(pattern: str) -> re.Pattern[str]:
    """A `--cors` pattern as matched, ignoring case; each alone, as its own expression (its
    inline flags and group names are its own)."""
    return re.compile(pattern, re.IGNORECASE)


# Origins no one's site has (`.invalid` is reserved): a pattern admitting one admits any.
_ANY_ORIGIN_PROBES = ("https://any-site.invalid", "http://any-site.invalid")


def admits_any_origin(origin: str) -> bool:
    """`*`, `.*`, or a pattern as `https?://.*` that admits any site: read as `*` (any origin,
    never credentials)."""
    if origin in WILDCARDS:
        return True
    if not is_pattern(origin):
        return False
    pattern = compiled(origin)
    return any(pattern.fullmatch(probe) for probe in _ANY_ORIGIN_PROBES)


def check_origins(origins: Sequence[str]) -> None:
    """Refuses a `--cors` value that no browser's `Origin` could ever match (a path, no
    scheme), or a pattern that does not compile: Rasa starts with them, and the browser then
    refuses every call without a word on the server's side."""
    for origin in origins:
        if origin == "":
            raise InvalidConfig("--cors '': an empty origin allows nothing")
        if len(origin) > 1 and origin[0] == origin[-1] and origin[0] in "'\"":
            raise InvalidConfig(
                f"--cors {origin!r}: the quotes are part of the value (a command given as a "
                f"list passes them on): --cors {shlex.quote(origin[1:-1])}"
            )
        if origin.count("://") > 1 and re.search(r"[\s,]", origin):
            parts = [part for part in re.split(r"[\s,]+", origin) if part]
            raise InvalidConfig(
                f"--cors {origin!r}: one origin per value: --cors {shlex.join(parts)}"
            )
        if is_pattern(origin):
            try:
                compiled(origin)
            except re.error as exc:
                raise InvalidConfig(
                    f"--cors {origin!r}: not a valid regular expression ({exc})"
                ) from None
            if origin.endswith(":*") and not origin.endswith("\\:*"):
                meant = shlex.quote(origin[:-2] + ":\\d+")
                logger.warning(
                    "--cors %s: ':*' is a colon any number of times, not any port: write %s "
                    "(the pattern must match the whole origin; Rasa's matched its start)",
                    shlex.quote(origin),
                    meant,
                )
            if admits_any_origin(origin):
                logger.warning(
                    "--cors %r admits any site: it is read as '*' (every origin, never "
                    "credentials)",
                    origin,
                )
        elif origin not in (*WILDCARDS, "null") and not _ORIGIN.fullmatch(origin):
            scheme, separator, rest = origin.partition("://")
            if separator:
                meant = f"{scheme}://{re.split(r'[/?#]', rest, maxsplit=1)[0]}"
                raise InvalidConfig(
                    f"--cors {origin!r}: an origin has no path, and a browser's never matches "
                    f"it: {meant}"
                )
            raise InvalidConfig(
                f"--cors {origin!r}: an origin starts with its scheme, and a browser's never "
                f"matches it without one: http://{origin} or https://{origin}"
            )


class ApiCorsMiddleware(CORSMiddleware):
    """Browsers may call the API from `origins` (or from anywhere with `"*"`, `".*"` or a
    pattern admitting any site).

    With explicit origins, answers allow credentials for those origins only. With `"*"` they
    never do: Starlette then reflects any `Origin` with `Access-Control-Allow-Credentials:
    true`, which lets every site make credentialed requests (client certificates, a proxy's
    cookies or basic auth) and read the answers. The API's own token and JWT are not CORS
    credentials, so a browser client needs none.
    """

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        wildcard = any(admits_any_origin(origin) for origin in origins)
        # As sanic-cors: origins compared ignoring case, patterns matched ignoring case (but
        # the whole origin: sanic-cors matched its start, so `https://.*\\.example\\.com` let
        # in https://a.example.com.evil.net).
        self._plain = {origin.lower() for origin in origins if not is_pattern(origin)}
        self._patterns = [compiled(origin) for origin in origins if is_pattern(origin)]
        super().__init__(
            app,
            allow_origins=["*"] if wildcard else sorted(self._plain),
            allow_credentials=not wildcard,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["filename"],
        )

    def is_allowed_origin(self, origin: str) -> bool:
        return (
            super().is_allowed_origin(origin)
            or origin.lower() in self._plain
            or any(pattern.fullmatch(origin) for pattern in self._patterns)
        )

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        # An answer that made its own CORS decision (the socket.io channel's
        # `cors_allowed_origins`) keeps it: a second or overwritten Allow-Origin breaks it.
        if message["type"] == "http.response.start" and any(
            name == b"access-control-allow-origin" for name, _ in message.get("headers", ())
        ):
            await send(message)
            return

        async def credentials_with_an_origin_only(message: Message) -> None:
            # Starlette puts Allow-Credentials on every answer, to an origin not allowed too.
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "access-control-allow-origin" not in headers:
                    del headers["access-control-allow-credentials"]
            await send(message)

        await super().send(message, credentials_with_an_origin_only, request_headers)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        # Starlette answers a refused preflight in plain text ("Disallowed CORS origin").
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        headers = {
            name: value
            for name, value in response.headers.items()
            if name.startswith("access-control-") or name == "vary"
        }
        return error_response(
            400,
            "CorsRefused",
            f"The cross-origin request was refused: its {refused} is not allowed.",
            details={"refused": refused.split(", ")},
            headers=headers,
        )
