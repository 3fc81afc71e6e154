"""`botserver run`: flags checked before anything starts, turned into `ServerOptions`, and the
app (API, channels, health probes, metrics, inspector) served by uvicorn in one or N processes.
"""

from __future__ import annotations

import argparse
import atexit
import errno
import gc
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from server import __version__
from server.api.collector import freeze_after_load
from server.api.health import health_router
from server.api.inspect import inspect_router
from server.api.metrics import ServerMetrics
from server.api.metrics_sharing import share_between_workers
from server.api.middleware import DEFAULT_MAX_BODY_BYTES
from server.api.middleware.cors import check_origins
from server.api.model_sync import follow_other_workers
from server.api.server import ServerOptions, build_app
from server.api.shutdown import (
    GracefulServer,
    TurnsInFlight,
    seconds_left,
    take_cancelled_requests,
)
from server.api.tls import ssl_options
from server.api.worker_files import run_beside
from server.auth import AuthConfig, install_log_redaction
from server.auth.config import jwt_audience, keep_auth_secrets_out_of_logs
from server.auth.log_redaction import (
    keep_configured_secrets_out_of_logs,
    keep_environment_secrets_out_of_logs,
)
from server.config import (
    read_credentials,
    read_endpoints,
    setting_lines,
    with_setting_lines,
    with_text_keys,
)
from server.errors import BotServerError, InvalidConfig, how_many
from server.logs import (
    SaidAtStart,
    announce,
    command_failed,
    configure_logging,
    saying_once,
    why_logging_failed,
)
from server.models.remote_storage import check_storage_settings
from server.outages import flush_repeats
from server.run_flags import DEFAULT_CREDENTIALS, check_run_flags, model_flag
from server.setting_values import graceful_shutdown_seconds
from server.tasks import finish_running_on, running_on, waits_in_grace
from server.trackers.lock import LockStore
from server.trackers.setup_loop import stop_by
from server.trackers.store import SetsUpOnFirstUse, TrackerStore
from server.training.yaml_io import read_yaml_file
from server.worker_claims import first_to_say, mark_stopped

if TYPE_CHECKING:
    import uvicorn

logger = logging.getLogger(__name__)

# The largest websocket message uvicorn reads (its default: 16 MB). The server's only
# websockets are socket.io's, whose engine.io refuses a packet over 1,000,000 characters
# (python-socketio's `max_http_buffer_size`), at most 4 bytes each: no packet it would take
# is cut, and a larger one is no longer read whole before engine.io refuses it.
WEBSOCKET_MAX_BYTES = 4 * 1_000_000
# Seconds uvicorn waits for requests in flight (turns included) after SIGTERM/Ctrl-C before
# it closes connections; the stores close only after that, in the app's lifespan.
GRACEFUL_SHUTDOWN_SECONDS = graceful_shutdown_seconds()
# Under these names the parent hands worker processes (`--workers N`) the run settings and
# the warnings it said as it checked the configuration, which the workers do not say again
# (`server.logs.SaidAtStart`): in `server.api.workers.handed`, not in their environment.
SPEC_ENV = "BOTSERVER_RUN_SPEC"
SAID_ENV = "BOTSERVER_SAID_AT_START"
# Interfaces only this machine reaches: an open API there is not warned about.
LOOPBACK_INTERFACES = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass
class RunSpec:
    """Everything a server process needs, as JSON-able values (sent to workers)."""

    model_path: str | None
    endpoints: dict[str, Any]
    credentials: dict[str, Any] | None
    connector: str | None = None
    credentials_file: str | None = None
    endpoints_file: str = "endpoints.yml"
    token: str | None = None
    jwt_secret: str | None = None
    jwt_method: str = "HS256"
    jwt_private_key: str | None = None
    jwt_audience: list[str] = field(default_factory=list)
    cors: list[str] = field(default_factory=list)
    response_timeout: float | None = None
    enable_api: bool = False
    remote_storage: str | None = None
    verify_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    metrics: bool = True
    listen_url: str = ""
    verbosity: int = 0
    log_file: str | None = None
    log_format: str = "text"
    logging_config_file: str | None = None
    syslog: tuple[str, int, str] | None = None

    def keep_secrets_out_of_logs(self) -> None:
        """Wherever a client or a library puts them (`?tokn=`, a header of its own, an error
        message), the secrets of the flags, endpoints.yml, credentials.yml and the
        environment stay out of the logs."""
        keep_auth_secrets_out_of_logs(self.options().auth)
        keep_configured_secrets_out_of_logs(self.endpoints)
        keep_configured_secrets_out_of_logs(self.credentials)
        keep_environment_secrets_out_of_logs(os.environ)

    def options(self) -> ServerOptions:
        return ServerOptions(
            model_path=self.model_path,
            endpoints=self.endpoints,
            credentials=self.credentials,
            credentials_file=self.credentials_file,
            endpoints_file=self.endpoints_file,
            connector=self.connector,
            auth=AuthConfig(
                token=self.token,
                jwt_secret=self.jwt_secret,
                jwt_method=self.jwt_method,
                jwt_private_key=self.jwt_private_key,
                jwt_audience=tuple(self.jwt_audience),
            ),
            cors=tuple(self.cors),
            response_timeout=self.response_timeout,
            enable_api=self.enable_api,
            remote_storage=self.remote_storage,
            verify_key=Path(self.verify_key) if self.verify_key else None,
            max_body_bytes=self.max_body_bytes,
            freeze_after_load=True,
        )


# -- the app -----------------------------------------------------------------------------------
def server_app(
    options: ServerOptions, metrics: bool = True, built: FastAPI | None = None
) -> FastAPI:
    """`build_app` (or the app it `built` already) plus the operations routes: health probes,
    /metrics, and /inspect."""
    app = build_app(options) if built is None else built
    state = app.state
    follow_other_workers(app, state.services)
    pings = {"tracker_store": state.tracker_store.ping}
    lock_ping = getattr(state.lock_store, "ping", None)
    if lock_ping is not None:  # a shared lock store: a turn cannot start without it
        pings["lock_store"] = lock_ping
    reports = {}
    broker_health = getattr(state.event_broker, "health", None)
    if broker_health is not None:  # a broker with a connection (RabbitMQ)
        reports["event_broker"] = broker_health
    app.include_router(health_router(lambda: state.holder.is_ready, pings, reports=reports))
    if metrics:
        server_metrics = ServerMetrics()
        server_metrics.instrument(state.processor, state.holder)
        state.metrics = server_metrics
        if hasattr(state.event_broker, "figures"):
            server_metrics.watch_broker(state.event_broker)
        app.include_router(server_metrics.router())
        run_beside(app, server_metrics.keep_folded)
        share_between_workers(app, server_metrics)
    if options.enable_api:
        app.include_router(inspect_router())
    _serve_lifecycle(app, options)
    return app


def app_from_environment() -> FastAPI:
    """The uvicorn factory a worker process runs (`--workers N`), from what its parent handed
    it (or, started otherwise, from the environment, whose variables are then unset: the
    worker's children do not inherit the secrets)."""
    from server.api.workers import handed

    raw = handed.get(SPEC_ENV) or os.environ.pop(SPEC_ENV, None)
    said = handed.get(SAID_ENV) or os.environ.pop(SAID_ENV, None)
    if not raw:
        raise RuntimeError(f"{SPEC_ENV} is not set: start workers with `botserver run`")
    fields = json.loads(raw)
    lines = fields.pop("setting_lines", None) or {}
    spec = RunSpec(**fields)
    spec.endpoints = with_setting_lines(spec.endpoints, lines.get("endpoints") or {})
    if spec.credentials is not None:
        spec.credentials = with_setting_lines(spec.credentials, lines.get("credentials") or {})

    # A list once through JSON.
    syslog = (spec.syslog[0], int(spec.syslog[1]), spec.syslog[2]) if spec.syslog else None
    try:
        configure_logging(
            spec.verbosity, spec.log_file, spec.log_format, spec.logging_config_file, syslog
        )
    except (OSError, BotServerError) as exc:
        # What the parent could open may be gone for its workers (a syslog server that
        # stopped listening, a log file's folder removed): one line on the stderr they share,
        # not a traceback; the parent then stops, saying that a worker did not start.
        why = why_logging_failed(exc, spec.log_file, syslog)
        print(f"worker pid {os.getpid()} cannot start: {why}", file=sys.stderr, flush=True)
        sys.exit(1)
    install_log_redaction()
    spec.keep_secrets_out_of_logs()
    with saying_once(SaidAtStart(json.loads(said or "[]"))):
        return server_app(spec.options(), spec.metrics)


def _without_model(enable_api: bool, pulls_again: bool, model_server: bool) -> str:
    """The start-up warning of a server without a model: what can still bring one."""
    once = (
        " (the model server is asked once: models.wait_time_between_pulls is null or 0)"
        if model_server and not pulls_again
        else ""
    )
    ways = [
        *(["PUT /model"] if enable_api else []),
        *(["the model server's next pull"] if pulls_again else []),
    ]
    if not ways:
        return (
            "The server starts without a model: /health/ready answers 503 and conversations "
            "fail with 409 for good: without --enable-api or a model server pulled on "
            f"schedule{once}, nothing can load one until a restart (fix the cause above, "
            "then restart)."
        )
    return (
        "The server starts without a model: /health/ready answers 503 and conversations fail "
        f"with 409 until one is loaded ({' or '.join(ways)}, or a restart){once}."
    )


def _up_line(listen_url: str, enable_api: bool, workers: int = 1) -> str:
    """The line that says where the server is up, said once its socket listens."""
    return (
        f"botserver {__version__} is up on {listen_url}"
        + (f" with {workers} workers" if workers > 1 else "")
        + (f" (inspector: {listen_url}/inspect)" if enable_api else "")
    )


def announcing_server(config: uvicorn.Config, listen_url: str, enable_api: bool) -> GracefulServer:
    """The server of `botserver run` (one process), which says where it is up once its socket
    listens: uvicorn binds it after the app's startup, and a port taken meanwhile ends the
    start with its error, never after an "is up on" line."""
    up = _up_line(listen_url, enable_api)
    return GracefulServer(config, on_serving=lambda: announce(logger, up))


def _serve_lifecycle(app: FastAPI, options: ServerOptions) -> None:
    """Warn of a server without a model once the lifespan has tried to load the startup model
    (the model holder logs which), and on shutdown let the turns in flight end before the
    stores close."""
    inner = app.router.lifespan_context
    turns = TurnsInFlight()
    turns.track(app.state.processor)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with inner(app) as state:
            if app.state.holder.info is None:
                # As Rasa, the server runs on; without the API or a model server pulled on
                # schedule (remote storage is read once, and so is a model server whose
                # wait_time_between_pulls is null or 0) only a restart can bring a model.
                without_model = _without_model(
                    options.enable_api,
                    app.state.model_source.pulls_again,
                    bool(app.state.services.models_endpoint),
                )
                if first_to_say(without_model):  # once for all workers
                    logger.warning(without_model)
            yield state
            await _finish_turns(turns)
            # The clean-ups of set-ups given up as the stores close wait no longer than the
            # period has left (a process made again in this one, a test's, starts afresh).
            stop_by(time.monotonic() + seconds_left(GRACEFUL_SHUTDOWN_SECONDS))
            store = app.state.tracker_store
            if isinstance(store, SetsUpOnFirstUse):  # what is left of the period, if any
                await store.setup_done(seconds_left(GRACEFUL_SHUTDOWN_SECONDS))
            flush_repeats()  # the last windows' counts (busy conversations, clients gone)
        stop_by(None)
        # And those of what failed as the stores closed: background turns cancelled, their
        # locks' releases (before, with Redis away, lost after the first line).
        flush_repeats()
        if not mark_stopped():  # with --workers N, the parent says it once all have
            logger.info("Stopped: the channels, event broker and stores are closed.")

    app.router.lifespan_context = lifespan


async def _finish_turns(turns: TurnsInFlight) -> None:
    """Turns no request waits for (a streamed turn whose client left, a socket.io turn) get
    what is left of the graceful period; the stores close after them."""
    left = 0
    if turns.count:
        seconds = seconds_left(GRACEFUL_SHUTDOWN_SECONDS)
        in_flight = f"{how_many(turns.count, 'turn')} in flight"
        cancelled = "it is cancelled" if turns.count == 1 else "they are cancelled"
        waits_in_grace(logger, seconds, in_flight, cancelled, until=" to finish")
        left = await turns.drain(seconds)
    if running_on():  # cut off by the response timeout, outside the channels' turns
        seconds = seconds_left(GRACEFUL_SHUTDOWN_SECONDS)
        in_flight = f"{how_many(running_on(), 'turn')} cut off by the response timeout"
        cancelled = "it is cancelled" if running_on() == 1 else "they are cancelled"
        waits_in_grace(logger, seconds, in_flight, cancelled, until=" to finish")
        left += await finish_running_on(seconds)
    requests = take_cancelled_requests()  # said here in place of uvicorn's ERROR line
    if left or requests:
        logger.warning(
            "%s still running at the end of the graceful shutdown period "
            "(BOTSERVER_GRACEFUL_SHUTDOWN_SECONDS=%g) %s cancelled%s",
            " and ".join(
                how_many(count, what)
                for count, what in ((left, "turn"), (requests, "request"))
                if count
            ),
            GRACEFUL_SHUTDOWN_SECONDS,
            "was" if left + requests == 1 else "were",
            ": their messages are not stored." if left else ".",
        )


# -- checks before anything starts -------------------------------------------------------------
def check_port_free(interface: str, port: int) -> None:
    """Bind once as uvicorn will, so a busy port is a clear error rather than a traceback."""
    if interface.startswith("[") and interface.endswith("]"):
        raise InvalidConfig(
            f"-i {interface}: write an IPv6 address without brackets: -i {interface[1:-1]}"
        )
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((interface, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise InvalidConfig(
                f"port {port} on {interface} is already in use (another botserver or Rasa "
                f"server?). Stop it, or choose another port with -p."
            ) from None
        raise InvalidConfig(f"cannot listen on {interface}:{port}: {exc.strerror}") from None
    finally:
        sock.close()


# Read when the flag is not given: a process's arguments are readable by every local user
# (`ps`, /proc/<pid>/cmdline), its environment only by its owner.
SECRET_VARIABLES = {"auth_token": "BOTSERVER_AUTH_TOKEN", "jwt_secret": "BOTSERVER_JWT_SECRET"}


def _check_secrets(args: argparse.Namespace) -> None:
    for dest, variable in SECRET_VARIABLES.items():
        if getattr(args, dest, None) is None and variable in os.environ:
            setattr(args, dest, os.environ[variable])
    # An empty value, typically an unset variable (`--auth-token "$TOKEN"`), would otherwise
    # switch authentication off without a word.
    for flag, value in (("--auth-token", args.auth_token), ("--jwt-secret", args.jwt_secret)):
        if value is not None and not value.strip():
            raise InvalidConfig(
                f"{flag} is empty (an unset environment variable?): give it a value, or leave "
                "the flag out to run without it"
            )


def _warn_if_open(args: argparse.Namespace) -> None:
    if not args.enable_api or args.auth_token or args.jwt_secret:
        return
    if args.interface in LOOPBACK_INTERFACES:
        return
    logger.warning(
        "The HTTP API is open: anyone who can reach port %d can read and change conversations "
        "and replace the model. Use --auth-token or --jwt-secret, or -i 127.0.0.1 "
        "(docs/security.md).",
        args.port,
    )


def check_model_source(args: argparse.Namespace) -> None:
    """--remote-storage names a storage we fetch from, --verify-key a file (`run` and
    `shell`)."""
    # A missing or unreadable model is not checked before the start: the start-up load says
    # why, and the server what follows (once each; a check here said it a second time).
    check_run_flags(args)  # (made before the server's imports too: cli.py)
    if args.remote_storage:
        # An unusable REMOTE_STORAGE_TIMEOUT or AZURE_ACCOUNT_KEY stops the start, once.
        check_storage_settings(args.remote_storage)


def _unshared_store(workers: int, lock_store: LockStore, tracker_store: TrackerStore) -> str:
    """Why `workers` processes cannot share these stores ("" if they can)."""
    if lock_store.process_local:
        return (
            f"--workers {workers} needs a lock store shared by the processes: with the "
            "in-memory lock, two workers could run turns of one conversation at the same time. "
            "Add `lock_store: {type: redis, url: ...}` to endpoints.yml, or use --workers 1."
        )
    if tracker_store.process_local:
        from server.trackers.sql_store import SqlTrackerStore  # loaded by now if the store is sql

        kept_by = (
            "an in-memory SQLite database (db: ':memory:') is each worker's own, keeping"
            if isinstance(tracker_store, SqlTrackerStore)
            else "the in-memory store keeps"
        )
        return (
            f"--workers {workers} needs a tracker store shared by the processes; {kept_by} "
            "each worker's conversations to itself. Use sql (on a file or a server), redis or "
            "dynamo in endpoints.yml, or --workers 1."
        )
    return ""


def _workers_asked(args: argparse.Namespace) -> int:
    """--workers, else Rasa's SANIC_WORKERS, read as Rasa reads it."""
    if args.workers is not None:
        if os.environ.get("SANIC_WORKERS", "1").strip() not in ("1", str(args.workers)):
            logger.warning(
                "SANIC_WORKERS=%s is not read: --workers %d was given and wins",
                os.environ["SANIC_WORKERS"],
                args.workers,
            )
        return int(args.workers)
    value = os.environ.get("SANIC_WORKERS")
    if value is None:
        return 1
    try:
        return max(int(value), 1)
    except ValueError:
        logger.warning("SANIC_WORKERS=%r is not a whole number: one server process runs", value)
        return 1


def workers_to_run(args: argparse.Namespace, spec: RunSpec) -> tuple[int, FastAPI | None]:
    """How many server processes run, and for more than one asked, the app built to check
    the stores: --workers N needs stores the processes share; Rasa's SANIC_WORKERS without
    them runs one process, said in a warning (Rasa says it at debug). The app's stores are
    the ones checked, built once (before, the check built them, then the app again)."""
    asked = _workers_asked(args)
    if asked == 1:
        return 1, None
    # Every setting is checked here, once, rather than in every worker.
    app = build_app(spec.options())
    why = _unshared_store(asked, app.state.lock_store, app.state.tracker_store)
    if args.workers is None:
        if why:
            logger.warning("SANIC_WORKERS=%d: one server process runs, as in Rasa: %s", asked, why)
            return 1, app
        logger.info("SANIC_WORKERS=%d: %d server processes run (as --workers %d)", *[asked] * 3)
    elif why:
        raise InvalidConfig(why)
    _warn_of_workers_on_sqlite(asked, app.state.tracker_store)
    return asked, app


def _warn_of_workers_on_sqlite(workers: int, tracker_store: TrackerStore) -> None:
    from server.trackers.sql_store import SqlTrackerStore  # loaded by now if the store is sql

    if (
        isinstance(tracker_store, SqlTrackerStore)
        and tracker_store.url.get_backend_name() == "sqlite"
    ):
        logger.warning(
            "--workers %d with the SQLite tracker store works, but the workers take turns at "
            "SQLite's single write lock: expect no more turns per second than one worker gives "
            "and a longer tail (docs/persistence.md). For more than one worker use PostgreSQL "
            "(tracker_store: {type: sql, dialect: postgresql, ...}).",
            workers,
        )


def _say_unread_credentials() -> None:
    """Warns of channels a ./credentials.yml names that the server will not serve: Rasa reads
    the file without --credentials, we do not (a sample file, as Rasa's moodbot's, may hold
    channels that cannot start), and a socket.io web chat must not fail without a word."""
    if not Path(DEFAULT_CREDENTIALS).is_file():
        return
    # Only its channel names: the settings of a file the server does not use are not
    # checked, nor their `${VAR}`s substituted (an unset one made the file "(unreadable)",
    # a quoted one gave a warning about a file that is not read).
    try:
        sections = read_yaml_file(DEFAULT_CREDENTIALS) or {}
    except BotServerError as exc:
        unread = [f"(unreadable: {exc})"]
    else:
        if isinstance(sections, dict):
            unread = [str(name) for name in sections if name != "rest"]
        else:
            unread = ["(unreadable: not a mapping of channel names)"]
    if unread:
        logger.warning(
            "%s is here but not read: only the REST channel is on, not %s. To serve its "
            "channels, add --credentials %s (Rasa reads it without the flag)",
            DEFAULT_CREDENTIALS,
            ", ".join(unread),
            DEFAULT_CREDENTIALS,
        )


def spec_from_args(args: argparse.Namespace, endpoints: dict[str, Any] | None = None) -> RunSpec:
    """Read and check the files the flags name; raises BotServerError with file and line.
    `endpoints`: the endpoints file as `cli.py` read it already (before the server's
    imports, to check that a model can come: `check_a_model_can_come`)."""
    if endpoints is None:
        endpoints = read_endpoints(args.endpoints)
    credentials_path = args.credentials
    if credentials_path is None and not args.connector:
        _say_unread_credentials()
    if credentials_path and not Path(credentials_path).exists():
        # Rasa's own default name (any other is refused by `check_run_flags`), as its guides
        # spell out the command: Rasa serves the REST channel alone then, and so do we (a
        # project without channels has no file).
        logger.warning(
            "--credentials %s: no such file; serving the REST channel only", credentials_path
        )
        credentials_path = None
    check_model_source(args)
    credentials = read_credentials(credentials_path) if credentials_path else None
    check_origins(args.cors or ())
    if args.response_timeout is not None and args.response_timeout < 0:
        raise InvalidConfig("--response-timeout must be 0 (none) or more seconds")
    _check_secrets(args)
    host = "localhost" if args.interface in ("0.0.0.0", "::") else args.interface
    scheme = "https" if args.ssl_certificate else "http"
    return RunSpec(
        model_path=model_flag(args),
        endpoints=endpoints,
        credentials=credentials,
        credentials_file=credentials_path,
        endpoints_file=args.endpoints,
        connector=args.connector,
        token=args.auth_token,
        jwt_secret=args.jwt_secret,
        jwt_method=args.jwt_method,
        jwt_private_key=args.jwt_private_key,
        jwt_audience=jwt_audience(args.jwt_audience),
        cors=list(args.cors or ()),
        response_timeout=args.response_timeout,
        enable_api=args.enable_api,
        remote_storage=args.remote_storage,
        verify_key=args.verify_key,
        max_body_bytes=(
            args.request_max_size if args.request_max_size is not None else DEFAULT_MAX_BODY_BYTES
        ),
        metrics=not getattr(args, "no_metrics", False),
        listen_url=f"{scheme}://{host}:{args.port}",
        verbosity=-1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0),
        log_file=getattr(args, "log_file", None),
        log_format=getattr(args, "log_format", "text"),
        logging_config_file=getattr(args, "logging_config_file", None),
        syslog=(args.syslog_address, args.syslog_port, args.syslog_protocol)
        if getattr(args, "use_syslog", False)
        else None,
    )


# -- running -----------------------------------------------------------------------------------
def run_server(args: argparse.Namespace, endpoints: dict[str, Any] | None = None) -> int:
    """Check everything, then serve until SIGINT/SIGTERM; returns the exit code. `endpoints`:
    as `spec_from_args` takes them."""
    import uvicorn

    from server.api.http_protocol import BoundedHttpToolsProtocol

    # The configuration's warnings once: the app the parent builds to check `--workers N`
    # says them, and the workers, which build from the same files, do not again.
    said = SaidAtStart(collect=True)
    with saying_once(said):
        spec = spec_from_args(args, endpoints)
        install_log_redaction()
        spec.keep_secrets_out_of_logs()
        args.workers, app = workers_to_run(args, spec)
    _warn_if_open(args)
    # Read into `spec`: no process this one starts (a worker, a shell a component opens)
    # inherits them.
    for variable in SECRET_VARIABLES.values():
        os.environ.pop(variable, None)
    # At exit the interpreter's last collections walk every object the process still holds:
    # 0.4-1.7 s of CPU after the last log line in a `--workers` parent, which never frees
    # its imports. Nothing left needs them: stores, broker and sockets are closed by then,
    # and the log handlers are flushed by the exit handler that runs after this one.
    atexit.register(gc.freeze)
    tls = ssl_options(args.ssl_certificate, args.ssl_keyfile, args.ssl_ca_file, args.ssl_password)
    check_port_free(args.interface, args.port)
    common: dict[str, Any] = {
        "host": args.interface,
        "port": args.port,
        "log_config": None,
        "access_log": spec.verbosity >= 1,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
        "server_header": False,
        "proxy_headers": False,
        "http": BoundedHttpToolsProtocol,
        "ws_max_size": WEBSOCKET_MAX_BYTES,
        **tls,
    }
    if args.workers > 1:
        from server.api.worker_files import WORKERS_DIR_ENV
        from server.api.workers import serve_workers

        # Keys as text, beside their lines, which JSON does not keep (warnings name them).
        fields = {**asdict(spec), "endpoints": with_text_keys(spec.endpoints)}
        fields["credentials"] = with_text_keys(spec.credentials)
        fields["setting_lines"] = {
            "endpoints": setting_lines(spec.endpoints),
            "credentials": setting_lines(spec.credentials),
        }
        given = {
            SPEC_ENV: json.dumps(fields, default=str),
            SAID_ENV: json.dumps(sorted(said.said)),
        }
        # The parent serves nothing: its imports and its checked app stay as they are while
        # it supervises the workers.
        freeze_after_load()
        logger.info("botserver %s is starting %d workers", __version__, args.workers)
        config = uvicorn.Config(
            "server.api.runner:app_from_environment",
            factory=True,
            workers=args.workers,
            **common,
        )
        with tempfile.TemporaryDirectory(prefix="botserver-workers-") as shared_dir:
            os.environ[WORKERS_DIR_ENV] = shared_dir
            try:
                # Once every worker serves, on the sockets this process listens on.
                up = _up_line(spec.listen_url, spec.enable_api, args.workers)
                code = serve_workers(config, lambda: announce(logger, up), given)
            finally:
                del os.environ[WORKERS_DIR_ENV]
        if code != 0:
            command_failed("a worker did not start; see the log above")
            return 1
        return 0
    app = server_app(spec.options(), spec.metrics, app)
    server = announcing_server(uvicorn.Config(app, **common), spec.listen_url, spec.enable_api)
    # uvicorn handles SIGTERM (finishing requests in flight), then raises it again with the
    # handler found at start: make that one a no-op so a graceful stop exits with 0.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    try:
        server.run()
    except SystemExit as exc:
        # uvicorn's exit when the app's startup or its listening socket failed (a port taken
        # since `check_port_free`, by a process started meanwhile): said above, then here.
        if server.started or exc.code in (None, 0):
            raise
    if not server.started:
        command_failed("the server did not start; see the log above")
        return 1
    return 0
