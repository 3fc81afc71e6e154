"""CORS for `--cors`: Starlette's middleware, with Rasa's error body on a refused preflight
and no credentials for a wildcard origin."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Send

from server.api.errors import error_response


class ApiCorsMiddleware(CORSMiddleware):
    """Browsers may call the API from `origins` (or from anywhere with `"*"`).

    With explicit origins, answers allow credentials for those origins only. With `"*"` they
    never do: Starlette then reflects any `Origin` with `Access-Control-Allow-Credentials:
    true`, which lets every site make credentialed requests (client certificates, a proxy's
    cookies or basic auth) and read the answers. The API's own token and JWT are not CORS
    credentials, so a browser client needs none.
    """

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        wildcard = "*" in origins
        super().__init__(
            app,
            allow_origins=["*"] if wildcard else list(origins),
            allow_credentials=not wildcard,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["filename"],
        )

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        # An answer that made its own CORS decision (the socket.io channel's
        # `cors_allowed_origins`) keeps it: a second or overwritten Allow-Origin breaks it.
        if message["type"] == "http.response.start" and any(
            name == b"access-control-allow-origin" for name, _ in message.get("headers", ())
        ):
            await send(message)
            return
        await super().send(message, send, request_headers)

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
