"""The whole HTTP server, assembled: stores, broker, action server and NLG clients, the
agent, the live model and its source, the channels and the API routers.

`build_app(ServerOptions(...))` only builds objects (nothing connects); the app's lifespan
loads the startup model and, on shutdown, closes everything in reverse order.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI

from server.api.app import create_app, prepare_routes, warm_thread_pool
from server.api.collector import freeze_after_load
from server.api.conversations import conversations_router
from server.api.domain import domain_router
from server.api.middleware import DEFAULT_MAX_BODY_BYTES, DEFAULT_RESPONSE_TIMEOUT_SECONDS
from server.api.model import model_router
from server.api.services import APP_STATE_KEY, Services
from server.api.settings import ApiSettings
from server.api.status import info_router, status_router
from server.api.worker_files import first_to_claim
from server.auth import AuthConfig, keep_endpoint_secrets_out_of_logs
from server.brokers.factory import create_event_broker
from server.channels import InputChannel, load_channels
from server.dialogue.agent import Agent, OutputFactory
from server.dialogue.http_endpoint import HttpEndpoint
from server.dialogue.processor import DialogueModel, Processor
from server.errors import InvalidConfig, StoreFailed, StoreUnavailable, clause
from server.http_clients import check_environment_bundle
from server.models.holder import ModelHolder
from server.models.loading import load_model, with_remote_nlu
from server.models.model_server import ModelServerConfig
from server.models.source import ModelSource
from server.nlu.remote import RemoteNLU
from server.setting_values import warn_of_unknown_keys
from server.trackers.factory import (
    DEFAULT_TRACKER_STORE,
    create_lock_store,
    create_tracker_store,
    reading_section,
)
from server.trackers.repository import TrackerRepository

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerOptions:
    """What `botserver run` is told: Rasa's `rasa run` flags, plus our limits.

    `endpoints` and `credentials` are the already-read sections of endpoints.yml and
    credentials.yml (`server.config`). With no `tracker_store:` the conversations go to the
    SQLite file `botserver.db` in the working directory; with no `lock_store:` the lock is
    in memory. With no credentials, the REST channel is on, as in Rasa.
    """

    model_path: str | Path | None = "models"
    endpoints: dict[str, Any] = field(default_factory=dict)
    credentials: dict[str, Any] | None = None
    credentials_file: str | None = None  # named in errors about its settings
    endpoints_file: str = "endpoints.yml"  # named in errors about its settings
    connector: str | None = None
    auth: AuthConfig = field(default_factory=AuthConfig)
    cors: Sequence[str] = ()
    response_timeout: float | None = DEFAULT_RESPONSE_TIMEOUT_SECONDS
    enable_api: bool = False
    remote_storage: str | None = None
    verify_key: bytes | Path | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    models_dir: Path = Path("models")
    # A server process (not a test): exempt what exists after the first load from the GC.
    freeze_after_load: bool = False
    default_tracker_store: dict[str, Any] = field(
        default_factory=lambda: dict(DEFAULT_TRACKER_STORE)
    )


# The keys of `action_endpoint:` and `nlg:` botserver reads (Rasa ignores any other).
_ACTION_ENDPOINT_KEYS = HttpEndpoint.SETTINGS_KEYS | {"enable_selective_domain"}
_NLG_KEYS = HttpEndpoint.SETTINGS_KEYS | {"type", "store_type"}


def _action_client(config: dict[str, Any] | None, source: str) -> Any:
    if not config:
        return None
    warn_of_unknown_keys(config, _ACTION_ENDPOINT_KEYS, f"{source}: action_endpoint")
    if not config.get("url"):
        # `url: ${ACTION_SERVER_URL}` with the variable empty, say.
        logger.warning(
            "%s: action_endpoint has no 'url': custom actions fail until one is set", source
        )
        return None
    from server.dialogue.action_client import ActionServerClient

    return ActionServerClient(config)


def _load_channels(options: ServerOptions) -> list[InputChannel]:
    credentials = options.credentials
    connector = options.connector
    source = options.credentials_file or "credentials.yml"
    if credentials is None and not connector:
        # As `rasa run`: with no credentials file and no connector, the REST channel is on.
        connector = "rest"
    elif not credentials and not connector:
        # As `rasa run`: a credentials file naming no channel serves none. The REST webhook
        # needs no token, so an API-only server must be able to leave it off.
        logger.warning(
            "%s names no channel: no channel is served (add `rest:` for the REST webhook)",
            source,
        )
    return list(load_channels(credentials or {}, connector, source))


# How long the start waits for a shared lock store's answer (it starts regardless).
LOCK_STORE_CHECK_SECONDS = 3.0


async def _check_lock_store(lock_store: Any) -> None:
    """One readiness check of a shared (Redis) lock store while the server starts (its
    `ping`: a write that changes nothing, which a read-only replica or a full Redis refuses
    as it refuses the turns' leases), so the log says at once what every turn would meet:
    before, a lock store Redis refuses (a `db` beyond its databases, a user without
    permission) started without a word and every turn answered 500. Never raises: Redis
    may come back, or be fixed, while the server runs. With `--workers N`, the first worker
    to start checks for all: they share the one Redis, and N identical lines said no more
    than one."""
    ping = getattr(lock_store, "ping", None)
    if ping is None or not first_to_claim("lock-store-check"):
        return
    try:
        await asyncio.wait_for(ping(), LOCK_STORE_CHECK_SECONDS)
    except StoreFailed as exc:  # (its text names the lock store and its Redis)
        logger.error("%s; every turn fails (500) until this is fixed", clause(exc))
    except StoreUnavailable as exc:
        from server.trackers.redis_client import (  # (only Redis's pings)
            CANNOT_TAKE_COMMANDS,
            login_refused,
        )

        if login_refused(exc.__cause__):  # waiting does not mend it
            logger.error("%s; turns answer 503 until this is fixed", clause(exc))
        elif CANNOT_TAKE_COMMANDS in exc.reason:  # (a read-only replica, say)
            logger.warning("%s; turns answer 503 until it takes them", clause(exc))
        else:
            logger.warning("%s; turns answer 503 until it is reachable", clause(exc))
    except TimeoutError:
        logger.warning(
            "The lock store%s gave no answer within %g s; turns answer 503 while it does not",
            _where(lock_store),
            LOCK_STORE_CHECK_SECONDS,
        )
    else:  # (before, a Redis evicting leases said nothing: two turns at once)
        evicts = getattr(lock_store, "eviction_risk", None)
        if evicts is not None:
            with suppress(TimeoutError):
                risk = await asyncio.wait_for(evicts(), LOCK_STORE_CHECK_SECONDS)
                if risk:
                    logger.warning("%s", risk)


async def _check_tracker_store_server(tracker_store: Any) -> None:
    """The tracker store's check of its server while the server starts, so the log says at
    once what every turn would meet (as `_check_lock_store`): a Redis Cluster node, where
    every turn would fail (its `refuse_a_cluster`); a database server (PostgreSQL,
    MySQL/MariaDB) or Redis that cannot be reached. Before, the server started without a
    word, and the first line came with the first turn's 503. Never raises: the database may
    come back while the server runs; the first worker checks for all."""
    checks: list[Callable[[], Awaitable[Any]]] = []
    refuse = getattr(tracker_store, "refuse_a_cluster", None)
    if refuse is not None:
        checks.append(refuse)
    answers = None
    backend = getattr(getattr(tracker_store, "url", None), "get_backend_name", None)
    if backend is not None and backend() != "sqlite":  # (SQLite: a file, no server)
        # Whether the server answers, then its schema (a migration, if one is due): a
        # migration past the wait (another process's holding the lock, a first start on a
        # loaded host) is no outage.
        answers = getattr(tracker_store, "answers", None)
        checks += [answers, tracker_store.ping] if answers is not None else [tracker_store.ping]
    if not checks or not first_to_claim("tracker-store-check"):
        return
    answered = False
    deadline = asyncio.get_running_loop().time() + LOCK_STORE_CHECK_SECONDS
    try:
        for check in checks:
            left = deadline - asyncio.get_running_loop().time()
            await asyncio.wait_for(check(), max(left, 0))
            answered = answered or check == answers
    except StoreFailed as exc:  # (its text names the setting to change)
        logger.error("%s; every turn fails (500) until this is fixed", clause(exc))
    except StoreUnavailable as exc:
        logger.warning(
            "%s; the server starts regardless: turns answer 503 and /health/ready is not "
            "ready until it answers",
            clause(exc),
        )
    except TimeoutError:
        if answered:
            logger.info(
                "The tracker store%s answers; its schema's check or migration takes more "
                "than %g s (perhaps waiting for another process's) and goes on",
                _where(tracker_store),
                LOCK_STORE_CHECK_SECONDS,
            )
        else:
            logger.warning(
                "The tracker store%s gave no answer within %g s; turns answer 503 while it "
                "does not",
                _where(tracker_store),
                LOCK_STORE_CHECK_SECONDS,
            )


def _where(store: Any) -> str:
    """ " (postgresql at db.internal:5432/rasa)": where a store's server is, for a line that
    has no error of the server's to name it (a check given up); "" for a store that cannot
    say."""
    describe = getattr(store, "describe", None)
    return f" ({describe()})" if describe is not None else ""


async def _close(what: str, close: Callable[[], Awaitable[Any]] | None) -> None:
    if close is None:
        return
    try:
        await close()
    except Exception:  # one failing close must not keep the others open
        logger.exception("Error while closing the %s", what)


async def _drop_reminders(processor: Processor) -> None:
    """Drops the pending reminders, saying how many: they live in process memory, as in Rasa."""
    dropped = await processor.reminders.stop()
    if not dropped:
        return
    conversations = len({sender_id for sender_id, _ in dropped})
    logger.warning(
        "stopping drops %d pending reminder%s of %d conversation%s: reminders are kept in "
        "this process's memory, as in Rasa, and do not outlive it",
        len(dropped),
        "" if len(dropped) == 1 else "s",
        conversations,
        "" if conversations == 1 else "s",
    )


@functools.cache
def _shared_api_routers() -> tuple[APIRouter, ...]:
    """The conversation, /model and /domain routes, made once per process for every app built
    in it: they hold nothing of an app's own (their services come from `app.state` per
    request, and FastAPI includes a router whole rather than copying its routes). Making them
    (FastAPI's analysis of each endpoint's parameters, done again for each app that includes
    them) was about half of an app's build and start: 30 of 60 ms of CPU."""
    return (conversations_router(), model_router(), domain_router())


def build_app(options: ServerOptions) -> FastAPI:
    """The server's ASGI app; run it with uvicorn. Raises InvalidConfig for bad settings."""
    check_environment_bundle()
    endpoints = options.endpoints or {}
    endpoints_file = options.endpoints_file
    tracker_store = create_tracker_store(
        endpoints.get("tracker_store") or options.default_tracker_store, endpoints_file
    )
    lock_store = create_lock_store(endpoints.get("lock_store"), endpoints_file)
    broker = create_event_broker(endpoints.get("event_broker"), endpoints_file)
    with reading_section("action_endpoint", endpoints_file):
        action_client = _action_client(endpoints.get("action_endpoint"), endpoints_file)
    with reading_section("nlg", endpoints_file):
        from server.dialogue.nlg_client import nlg_client_for

        warn_of_unknown_keys(endpoints.get("nlg") or {}, _NLG_KEYS, f"{endpoints_file}: nlg")
        nlg_client = nlg_client_for(endpoints.get("nlg"))
    models_endpoint = endpoints.get("models") or None
    if isinstance(models_endpoint, dict):
        warn_of_unknown_keys(
            models_endpoint, ModelServerConfig.SETTINGS_KEYS, f"{endpoints_file}: models"
        )
        # A section no pull can use stops the start, as an action_endpoint's does: before,
        # the server started without a model and never pulled one.
        with reading_section("models", endpoints_file):
            ModelServerConfig.from_endpoint(models_endpoint)

    loader: Callable[[Path, dict[str, Any]], DialogueModel] = load_model
    if endpoints.get("nlu"):
        if isinstance(endpoints["nlu"], dict):
            warn_of_unknown_keys(
                endpoints["nlu"], RemoteNLU.SETTINGS_KEYS, f"{endpoints_file}: nlu"
            )
        loader = with_remote_nlu(load_model, RemoteNLU(endpoints["nlu"]))
    holder: ModelHolder[DialogueModel] = ModelHolder(loader, verify_key=options.verify_key)
    source = ModelSource(holder)
    processor = Processor(
        TrackerRepository(tracker_store),
        lock_store,
        broker=broker,
        action_server=action_client,
        nlg_endpoint=nlg_client,
    )
    channels = _load_channels(options)
    for channel in channels:
        channel.use_endpoints(endpoints)
    output_channels: dict[str, OutputFactory] = {
        channel.name: channel.get_output_channel for channel in channels
    }
    holder.on_replaced = processor.forget_model
    agent = Agent(processor, lambda: holder.current, output_channels)
    services = Services(
        agent=agent,
        holder=holder,
        source=source,
        models_dir=Path(options.models_dir),
        models_endpoint=models_endpoint,
    )

    for endpoint in (
        services.models_endpoint,
        *(endpoints.get(k) for k in ("action_endpoint", "nlg", "nlu")),
    ):
        keep_endpoint_secrets_out_of_logs(endpoint)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        start_broker = getattr(broker, "start", None)
        if start_broker is not None:  # says at once whether it is reachable; bounded
            await start_broker()
        # The stores are asked while the model loads, both at once (neither check
        # raises): a healthy PostgreSQL's schema check (about 1 s of a loaded host's wall
        # time, most of it importing Alembic) does not hold the start up, and stores on a
        # host that stopped answering hold it 3 s, not 3 s each.
        checks = asyncio.gather(
            _check_lock_store(lock_store), _check_tracker_store_server(tracker_store)
        )
        try:
            await source.load_initial(options.model_path, models_endpoint, options.remote_storage)
            await asyncio.to_thread(prepare_routes, app)
        except BaseException:
            checks.cancel()
            raise
        await checks
        await warm_thread_pool()
        if options.freeze_after_load:
            freeze_after_load()
        try:
            yield
        finally:
            await services.cancel_background()
            await _close("model source", source.stop)
            await _drop_reminders(processor)
            for channel in channels:
                await _close(f"{channel.name} channel", getattr(channel, "aclose", None))
            if broker is not None:
                await _close("event broker", broker.close)
            if action_client is not None:
                await _close("action server client", action_client.aclose)
            if nlg_client is not None:
                await _close("NLG client", nlg_client.aclose)
            await _close("lock store", lock_store.close)
            await _close("tracker store", tracker_store.close)

    routers: list[APIRouter] = [info_router()]
    if options.enable_api:
        routers += [status_router(holder, source), *_shared_api_routers()]
    settings = ApiSettings(
        auth=options.auth,
        enable_api=options.enable_api,
        cors_origins=tuple(options.cors),
        response_timeout=options.response_timeout,
        max_body_bytes=options.max_body_bytes,
    )
    app = create_app(
        settings,
        routers,
        lifespan=lifespan,
        state={
            APP_STATE_KEY: services,
            "agent": agent,
            "processor": processor,
            "holder": holder,
            "model_source": source,
            "tracker_store": tracker_store,
            "lock_store": lock_store,
            "event_broker": broker,
            "channels": channels,
        },
    )
    mounted: dict[str, str] = {}  # path: the channel whose app is mounted there
    for channel in channels:
        app.include_router(channel.router(agent.handle_message))
        mount = channel.asgi_mount(agent.handle_message)
        if mount is not None:
            path, asgi = mount
            first = mounted.setdefault(path, channel.name)
            if first != channel.name:  # the first mounted would take every request
                raise InvalidConfig(
                    f"{options.credentials_file or 'credentials.yml'}: channels '{first}' and "
                    f"'{channel.name}' are both served at {path}: only the first would be "
                    "reached; give one another `socketio_path`"
                )
            app.mount(path, asgi)
    return app
