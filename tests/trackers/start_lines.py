"""The lines an app logs about one of its stores while it starts and stops."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from server.api.server import ServerOptions, build_app


async def lines_at_start(
    endpoints: dict[str, Any], caplog: pytest.LogCaptureFixture, about: str
) -> list[logging.LogRecord]:
    """The records naming `about` ("lock store") logged while an app with `endpoints` (no
    model) starts and stops."""
    app = build_app(ServerOptions(model_path=None, enable_api=True, endpoints=endpoints))
    with caplog.at_level(logging.INFO):
        async with app.router.lifespan_context(app):
            pass
    return [r for r in caplog.records if about in r.getMessage()]
