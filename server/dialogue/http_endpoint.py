"""An outbound HTTP endpoint from endpoints.yml or credentials.yml (url, token, headers, TLS).

Owns the one pooled `httpx.AsyncClient` per endpoint and the reading of Rasa's
`EndpointConfig` keys; callers only say what to POST.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from server.errors import InvalidConfig

DEFAULT_TIMEOUT = 10.0


def safe_url(url: str) -> str:
    """The URL without credentials or query string, fit for a log line."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class HttpEndpoint:
    """Where and how to reach one external HTTP service; holds one pooled client."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_name: str = "token",
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        basic_auth: dict[str, str] | None = None,
        cafile: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not url or not isinstance(url, str):
            raise InvalidConfig("an endpoint needs a 'url'")
        self.url = url
        self.safe_url = safe_url(url)
        self.timeout = float(timeout)
        self._params = {k: str(v) for k, v in (params or {}).items()}
        if token is not None:
            self._params[token_name or "token"] = str(token)
        self._headers = {str(k): str(v) for k, v in (headers or {}).items()}
        self._auth: httpx.BasicAuth | None = None
        if basic_auth:
            try:
                self._auth = httpx.BasicAuth(basic_auth["username"], basic_auth["password"])
            except (KeyError, TypeError) as e:
                raise InvalidConfig("basic_auth needs 'username' and 'password'") from e
        self._cafile = cafile
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> HttpEndpoint:
        """Builds an endpoint from Rasa's keys: url, token, token_name, params, headers..."""
        try:
            timeout = float(config.get("timeout", timeout))
        except (TypeError, ValueError) as e:
            raise InvalidConfig(f"'timeout' must be a number of seconds: {e}") from e
        if timeout <= 0:
            raise InvalidConfig("'timeout' must be a positive number of seconds")
        return cls(
            config.get("url") or "",
            token=config.get("token"),
            token_name=config.get("token_name") or "token",
            params=config.get("params"),
            headers=config.get("headers"),
            basic_auth=config.get("basic_auth"),
            cafile=config.get("cafile"),
            timeout=timeout,
            transport=transport,
        )

    def _verify(self) -> ssl.SSLContext | bool:
        if self._cafile:
            return ssl.create_default_context(cafile=self._cafile)
        return True

    def client(self) -> httpx.AsyncClient:
        """The endpoint's pooled client, created on first use."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                params=self._params,
                headers=self._headers,
                auth=self._auth,
                verify=self._verify(),
                timeout=httpx.Timeout(self.timeout),
                transport=self._transport,
                follow_redirects=False,
            )
        return self._client

    async def post_json(self, body: Any) -> httpx.Response:
        """POSTs `body` as JSON to the endpoint's URL; httpx errors propagate to the caller."""
        return await self.client().post(self.url, json=body)

    async def aclose(self) -> None:
        """Closes the pooled client; the endpoint can be used again afterwards."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
