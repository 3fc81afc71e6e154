"""The two ASGI apps `bench/http_turns.py` serves with the same uvicorn settings: the bare
endpoint (a fixed JSON reply, the practical limit of the HTTP stack) and the whole server.

    uvicorn --factory --app-dir bench http_apps:bare_app
    BENCH_MODEL=models/x.tar.gz BENCH_ENDPOINTS='{"tracker_store": ...}' \
        uvicorn --factory --app-dir bench http_apps:server_app
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

# What moodbot answers to "hello": the bare endpoint sends a reply of the same size.
BARE_REPLY = json.dumps(
    [{"recipient_id": "bare", "text": "Hey! How are you?"}], separators=(",", ":")
).encode()


def bare_app() -> FastAPI:
    """A FastAPI app with the webhook's path answering a fixed JSON list, nothing else."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/webhooks/rest/webhook")
    async def webhook() -> Response:
        return Response(BARE_REPLY, media_type="application/json")

    @app.get("/")
    async def root() -> Response:
        return Response(b"Hello from the bare endpoint", media_type="text/plain")

    return app


def server_app() -> Any:
    """`botserver run` as the benchmark starts it: logging and log redaction as by default, the
    REST channel, the HTTP API on, the health probes, the Prometheus metrics and the inspector
    (`server.api.runner.server_app`, what `botserver run` serves), the model from BENCH_MODEL,
    endpoints.yml's sections from BENCH_ENDPOINTS.
    """
    from server.api.runner import server_app as runner_app
    from server.api.server import ServerOptions
    from server.auth import install_log_redaction
    from server.logs import configure_logging

    configure_logging(0)
    install_log_redaction()
    endpoints: dict[str, Any] = json.loads(os.environ.get("BENCH_ENDPOINTS") or "{}")
    options = ServerOptions(
        model_path=os.environ["BENCH_MODEL"],
        endpoints=endpoints,
        enable_api=os.environ.get("BENCH_ENABLE_API", "1") == "1",
        freeze_after_load=True,
    )
    return runner_app(options, metrics=True)
