"""The outgoing HTTP clients (action server, NLG, callback, Rocket.Chat, model server, Duckling).

Built here so that each ignores the proxy settings of the environment (`HTTP_PROXY`,
`HTTPS_PROXY`, `ALL_PROXY`), as Rasa's aiohttp clients do: an endpoint's token travels in its
URL, and a proxy set for other programs is not one the operator chose for botserver.
`SSL_CERT_FILE` and `SSL_CERT_DIR` are still honoured, as OpenSSL honours them for Rasa.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import httpx


def _verify(verify: Any) -> Any:
    """`verify=True` as httpx reads it with `trust_env`: the CA bundle the environment names."""
    if verify is not True:
        return verify
    cafile = os.environ.get("SSL_CERT_FILE") or None
    capath = os.environ.get("SSL_CERT_DIR") or None
    if cafile is None and capath is None:
        return True
    return ssl.create_default_context(cafile=cafile, capath=capath)


def async_client(*, verify: Any = True, **options: Any) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` that takes no proxy from the environment."""
    return httpx.AsyncClient(trust_env=False, verify=_verify(verify), **options)


def sync_client(*, verify: Any = True, **options: Any) -> httpx.Client:
    """An `httpx.Client` that takes no proxy from the environment."""
    return httpx.Client(trust_env=False, verify=_verify(verify), **options)
