"""Fixtures for the API route tests: a moodbot model trained once, and apps built with
`build_app` on an in-memory tracker store."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from fastapi import FastAPI

from server.api.server import ServerOptions, build_app
from tests.api.rasa_spec import RasaSpec
from tests.brokers.test_rabbitmq_broker import AMQP_URL
from tests.shared_archives import SharedExtractions
from tests.trackers.persistence_fixtures import (
    RABBITMQ,
    require_service,
    tracker_store_config,
    unique_name,
)

MEMORY_STORE = {"tracker_store": {"type": "in_memory"}}

warnings.filterwarnings("ignore", message="The HMAC key is")


@pytest.fixture(scope="session")
def moodbot_model(moodbot_copy: Callable[[str], Path]) -> Path:
    """A moodbot model archive (the session's one training), alone in its folder."""
    return moodbot_copy("moodbot-models")


@pytest.fixture(scope="session")
def shared_extractions(tmp_path_factory: pytest.TempPathFactory) -> SharedExtractions:
    """The archives the apps of `make_client` load as they start, extracted once a process."""
    return SharedExtractions(tmp_path_factory.mktemp("extracted-models"))


@pytest.fixture(scope="session")
def rasa_spec() -> RasaSpec:
    return RasaSpec()


@pytest.fixture
async def rabbitmq_names() -> AsyncIterator[dict[str, str]]:
    """A queue and an exchange of this test's own on the shared RabbitMQ, deleted after."""
    require_service("RabbitMQ", RABBITMQ)
    chosen = {"queue": unique_name("bs_ready_q"), "exchange": unique_name("bs_ready_x")}
    yield chosen
    connection = await aio_pika.connect(f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/")
    channel = await connection.channel()
    await channel.queue_delete(chosen["queue"])
    await channel.exchange_delete(chosen["exchange"])
    await connection.close()


@pytest.fixture
async def rabbitmq() -> AsyncIterator[dict[str, Any]]:
    """An `event_broker:` section for a queue and exchange of this test's own, deleted after
    the app (set up first, so torn down last: name it before `make_client`)."""
    require_service("RabbitMQ", RABBITMQ)
    queue, exchange = unique_name("api_q"), unique_name("api_x")
    yield {
        "type": "pika",
        "url": RABBITMQ[0],
        "port": RABBITMQ[1],
        "username": "guest",
        "password": "guest",
        "queues": [queue],
        "exchange_name": exchange,
    }
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    await channel.queue_delete(queue)
    await channel.exchange_delete(exchange)
    await connection.close()


@pytest.fixture
async def tracker_store() -> AsyncIterator[Callable[..., Any]]:
    """`await tracker_store(kind, tmp_path)`: a fresh store's config, removed after the app
    (set up first, so torn down last: name it before `make_client`)."""
    async with AsyncExitStack() as stack:

        async def make(kind: str, tmp_path: Path) -> dict[str, Any]:
            return await stack.enter_async_context(tracker_store_config(kind, tmp_path))

        yield make


AppFactory = Callable[..., Any]


async def open_client(
    stack: AsyncExitStack,
    moodbot_model: Path,
    folder: Path,
    shared: SharedExtractions | None = None,
    **overrides: Any,
) -> httpx.AsyncClient:
    """An httpx client on a started app (lifespan run) serving moodbot from the memory store,
    with `overrides` of its `ServerOptions`; both closed with `stack`. With `shared`, the
    start's model comes from an archive extracted once a process (a model of its own, built
    from it); a model loaded later (PUT /model, a pull) is extracted as the server does."""
    options: dict[str, Any] = {
        "model_path": moodbot_model,
        "enable_api": True,
        "endpoints": MEMORY_STORE,
        "models_dir": folder / "models",
    }
    options.update(overrides)
    app: FastAPI = build_app(ServerOptions(**options))
    with shared.sharing() if shared is not None else contextlib.nullcontext():
        await stack.enter_async_context(app.router.lifespan_context(app))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    await stack.enter_async_context(client)
    return client


@pytest.fixture
async def make_client(
    moodbot_model: Path, tmp_path: Path, shared_extractions: SharedExtractions
) -> AsyncIterator[Callable[..., Any]]:
    """`await make_client(**options)`: an httpx client on a started app (lifespan run)."""
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> httpx.AsyncClient:
            return await open_client(
                stack, moodbot_model, tmp_path, shared_extractions, **overrides
            )

        yield make


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> httpx.AsyncClient:
    """An open API (no auth) with the moodbot model loaded."""
    return await make_client()
