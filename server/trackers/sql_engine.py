"""Async SQLAlchemy engines built from Rasa's SQL endpoint keys.

Maps `dialect`/`url`/`host`/`port`/`db`/`username`/`password`/`query` to an async URL
(aiosqlite, asyncpg, aiomysql), and sets the pool and SQLite pragmas every SQL backend shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import os
import re
import socket
import ssl
import weakref
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from server.errors import InvalidConfig, first_line
from server.setting_values import env_seconds, host_and_port, sql_pool_sizes
from server.trackers.tcp_keepalive import dead_connection_timeout, guard_driver_connection
from server.trackers.tcp_keepalive import tcp_options as _tcp_options

logger = logging.getLogger(__name__)

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
}

CONNECT_TIMEOUT_SECONDS = 5.0
# A pooled connection this old is replaced before it is used (the PostgreSQL store closes
# its own idle this long): NAT gateways and load balancers drop an idle TCP connection
# without a word (AWS's NAT gateway after 350 s, Azure's load balancer after 240 s), and a
# statement on it got no answer until the statement timeout (the pre-ping, too), while a new
# connection (the silence check's) answered at once. Before: 3600 s.
POOL_RECYCLE_SECONDS = 180.0
SQLITE_BUSY_TIMEOUT_MS = 10_000
# FULL makes every commit survive a power loss too, at one fsync per turn.
SQLITE_SYNCHRONOUS = os.environ.get("SQLITE_SYNCHRONOUS", "NORMAL").upper()


def async_url(config: dict[str, Any], default_db: str) -> URL:
    """The async SQLAlchemy URL for a `tracker_store:`/`event_broker:` SQL section."""
    host = config.get("url") or config.get("host")
    if host and "://" in str(host):
        try:
            url = make_url(str(host))
        except ArgumentError as exc:
            raise InvalidConfig(f"Invalid SQL url '{host}': {exc}") from exc
        return url.set(drivername=_async_driver(url.drivername))

    dialect = str(config.get("dialect") or "sqlite")
    drivername = _async_driver(dialect)
    db = str(config.get("db") or default_db)
    if drivername.startswith("sqlite"):
        return URL.create(drivername, database=db)

    host, port = host_and_port(host, config.get("port"), "SQL")
    query = {str(k): str(v) for k, v in (config.get("query") or {}).items()}
    if host and str(host).startswith("/") and drivername.startswith("postgresql"):
        # A Unix socket's directory, as libpq (Rasa's psycopg2) takes it in `host`. In a URL's
        # host it would read as the database's path: asyncpg takes it from the query.
        query.setdefault("host", str(host))
        if port is not None:  # the socket's name (.s.PGSQL.<port>), beside it
            query.setdefault("port", str(port))
        host = port = None
    elif not host and "host" not in query:
        host = "localhost"
    return URL.create(
        drivername,
        username=config.get("username"),
        password=None if config.get("password") is None else str(config["password"]),
        host=str(host) if host else None,
        port=port,
        database=db,
        query=query,
    )


def check_sqlite_folder(sqlite_file: str) -> None:
    """Stops the start when a SQLite file cannot be made because its folder is not there, as
    Rasa's broker stops (it creates its table at start; Rasa's store logs "Could not create
    tables" and starts, each turn then failing). Before, the server started, and each use
    failed behind "unable to open database file", which names no file."""
    folder = os.path.dirname(os.path.abspath(sqlite_file))
    if os.path.isdir(folder):
        return
    if os.path.exists(folder):
        raise InvalidConfig(f"SQLite database '{sqlite_file}': '{folder}' is not a folder")
    # SQLite, as Rasa's SQLAlchemy, reads a path as written: `~` is a folder of that name.
    tilde = " (a `~` is not the home folder: give the full path)" if "~" in sqlite_file else ""
    raise InvalidConfig(
        f"SQLite database '{sqlite_file}': its folder '{folder}' does not exist{tilde}"
    )


def check_sqlite_file(sqlite_file: str) -> None:
    """Refuses a SQLite file that is not there where it is to be read, not written (`botserver
    export`, `prune`): a mistyped `db:` made an empty database there (as Rasa's `rasa export`
    does), nothing was found in it, and the next run found that empty file, not an error."""
    if not os.path.exists(sqlite_file):
        raise InvalidConfig(
            f"SQLite database '{sqlite_file}' ({os.path.abspath(sqlite_file)}) does not exist: "
            "check db (botserver run creates it)"
        )


def _async_driver(drivername: str) -> str:
    backend = drivername.split("+", 1)[0].lower()
    if backend not in _ASYNC_DRIVERS:
        raise InvalidConfig(
            f"SQL dialect '{drivername}' is not supported; use sqlite, postgresql or mysql"
        )
    return _ASYNC_DRIVERS[backend]


def describe(url: URL) -> str:
    """A password-free description of where a URL points, for error messages."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite database '{url.database}'"
    return f"{url.get_backend_name()} at {_address(url)}/{url.database}"


def _address(url: URL) -> str:
    """host:port, or a PostgreSQL Unix socket's directory (given as the query's `host`)."""
    if url.host is None and isinstance(url.query.get("host"), str):
        return f"{url.query['host']} (Unix socket)"
    host = f"[{url.host}]" if url.host and ":" in url.host else url.host
    return f"{host}:{url.port or 'default port'}"


_ENGINE_NAMES = {"postgresql": "PostgreSQL", "mysql": "MySQL/MariaDB", "oracle": "Oracle"}


def dependency(url: URL, role: str) -> str:
    """What and where, without the database's name or credentials, for the outage's lines in
    the log: "PostgreSQL at 127.0.0.1:5432 (the tracker store)"."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        return f"SQLite database '{url.database}' ({role})"
    name = _ENGINE_NAMES.get(backend, backend)
    return f"{name} at {_address(url)} ({role})"


def sqlite_synchronous() -> str:
    """SQLite's `synchronous` setting, from SQLITE_SYNCHRONOUS (NORMAL by default)."""
    if SQLITE_SYNCHRONOUS not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise InvalidConfig(
            f"SQLITE_SYNCHRONOUS={SQLITE_SYNCHRONOUS}: use OFF, NORMAL, FULL or EXTRA"
        )
    return SQLITE_SYNCHRONOUS


def lock_timeout_seconds() -> float:
    """How long a statement waits for a table or row lock another session holds (a DBA's
    ALTER TABLE, LOCK TABLES, VACUUM FULL) before it fails and the request is answered 503:
    `SQL_LOCK_TIMEOUT` seconds, 10 by default, as long as SQLite waits for its write lock.
    Before, every turn hung for as long as the lock was held."""
    return env_seconds("SQL_LOCK_TIMEOUT", SQLITE_BUSY_TIMEOUT_MS / 1000)


def statement_timeout_seconds() -> float:
    """How long a turn's statement (a load, an append, a replace, a delete) waits for the
    database's answer before the request is answered 503: `SQL_STATEMENT_TIMEOUT` seconds, 30
    by default. A database host that stops answering without closing its connections (hung,
    powered off, packets dropped) held every such turn, and its conversation's lock, until
    the kernel gave the connection up (about 15 minutes). Listing every conversation
    (`keys()`, prune), the export's batch reads and migrations are not bounded: on a large
    table they may take longer."""
    return env_seconds("SQL_STATEMENT_TIMEOUT", 30.0)


def group_wait_seconds() -> float:
    """How long PostgreSQL's next group of reads or appends waits for the one before it:
    `SQL_GROUP_WAIT` seconds, 0.5 by default. A group still without an answer by then holds
    only its own conversations; the next one goes out on another connection. Before, one
    group stuck on a connection the network dropped, or on a lock, held every turn of the
    process (up to DB_TCP_TIMEOUT, or SQL_STATEMENT_TIMEOUT)."""
    return env_seconds("SQL_GROUP_WAIT", 0.5)


def tcp_options() -> dict[int, int]:
    """The socket options for `dead_connection_timeout()` (see server.trackers.tcp_keepalive)."""
    return _tcp_options(dead_connection_timeout())


def statement_took_too_long(seconds: float) -> TimeoutError:
    """The error of a statement given up at `SQL_STATEMENT_TIMEOUT`, on a database that
    answers (a silent one is given up sooner: see server.trackers.silence); before, its 503
    said `TimeoutError (no answer)`."""
    return TimeoutError(f"a statement took more than {seconds:g} s (SQL_STATEMENT_TIMEOUT)")


def postgres_lock_timeout() -> str:
    """The statement that bounds lock waits on a new PostgreSQL connection. Sent after the
    connection opens rather than as a startup parameter, which PgBouncer refuses."""
    return f"SET lock_timeout = {max(1, round(lock_timeout_seconds() * 1000))}"


def create_engine(
    url: URL,
    sqlite_autocheckpoint: bool = True,
    prepared: bool = True,
    postgres_schema: bool = True,
) -> AsyncEngine:
    """An async engine with pre-ping (so it recovers after a database restart).
    `sqlite_autocheckpoint=False`: its SQLite commits never checkpoint (the caller does).
    PostgreSQL: `prepared=True` prepares each statement once per connection, by name, until
    `unprepared_from_now` sees a pooler in transaction mode; `prepared=False` never does
    (for an engine that runs a few statements once, as the schema's set-up).
    `postgres_schema=False`: POSTGRESQL_SCHEMA is not its `search_path` (Rasa's SQL broker
    does not read it)."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        sqlite_synchronous()
        # No pre-ping: a file has no connection to lose, and the ping is a query per checkout.
        engine = create_async_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        _set_sqlite_pragmas(engine, sqlite_autocheckpoint)
        return engine

    pool_size, max_overflow = sql_pool_sizes()
    connect_args: dict[str, Any]
    if backend == "postgresql":
        connect_args = {"timeout": CONNECT_TIMEOUT_SECONDS}
        schema = os.environ.get("POSTGRESQL_SCHEMA") if postgres_schema else None
        if schema:
            connect_args["server_settings"] = {"search_path": schema}
    else:
        # MySQL waits a year for a metadata lock and 50 s for a row lock by default.
        wait = max(1, round(lock_timeout_seconds()))
        connect_args = {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "init_command": f"SET SESSION lock_wait_timeout = {wait},"
            f" innodb_lock_wait_timeout = {wait}",
        }
    extra: dict[str, Any] = {}
    statements = _Statements(prepared)
    collation = None
    if backend == "mysql":
        extra["async_creator"], collation = _mysql_connector(url, connect_args)
    elif backend == "postgresql":
        extra["creator"] = _postgres_creator(url, connect_args, statements, lambda: engine)
    engine = create_async_engine(
        url,
        **extra,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=POOL_RECYCLE_SECONDS,
        # Every connection in use: wait as long as for a connect, then 503 (SQLAlchemy's
        # default waited 30 s, then an unexplained 500).
        pool_timeout=CONNECT_TIMEOUT_SECONDS,
        connect_args=connect_args,
    )
    if backend == "postgresql":
        _STATEMENTS[engine.sync_engine] = statements
        _run_on_connect(engine, postgres_lock_timeout())
        _guard_sockets(engine, tcp_options())
    if collation is not None:
        _set_collation_on_connect(engine, collation)
    return engine


class _Statements:
    """How a PostgreSQL engine's new connections run their statements."""

    def __init__(self, prepared: bool) -> None:
        self.prepared = prepared


_STATEMENTS: weakref.WeakKeyDictionary[Engine, _Statements] = weakref.WeakKeyDictionary()

# What PostgreSQL answers a connection whose statements a pooler in transaction mode
# (PgBouncer before 1.21, or without `max_prepared_statements`) sent to another server
# backend than the one that prepared them, or to one where another client's have the same
# name: always at Parse, Bind or Describe, before anything of the statement ran.
_NO_SUCH_STATEMENT = "26000"  # prepared statement "__asyncpg_stmt_1d__" does not exist
_DUPLICATE_STATEMENT = "42P05"  # prepared statement "__asyncpg_stmt_1d__" already exists
_PROTOCOL_VIOLATION = "08P01"  # bind message supplies 2 parameters, but prepared statement..


def transaction_pooled(exc: BaseException) -> bool:
    """Whether `exc` (a driver's error, or SQLAlchemy's around it) is PostgreSQL's answer to
    a prepared statement a pooler in transaction mode took to another server backend."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        code = getattr(error, "sqlstate", None)
        if code in (_NO_SUCH_STATEMENT, _DUPLICATE_STATEMENT):
            return True
        if code == _PROTOCOL_VIOLATION:
            return "prepared statement" in str(error)
        orig = getattr(error, "orig", None)
        error = orig if isinstance(orig, BaseException) else error.__cause__
    return False


async def unprepared_from_now(engine: AsyncEngine, exc: BaseException) -> bool:
    """True if `exc` is a pooler's in transaction mode (see `transaction_pooled`) and this
    engine prepared its statements by name until now: from now on its connections (new ones:
    the pool's are closed) prepare nothing by name and cache no statement, and the caller may
    send what failed again at once (nothing of it was written). Said once in the log."""
    statements = _STATEMENTS.get(engine.sync_engine)
    if statements is None or not statements.prepared or not transaction_pooled(exc):
        return False
    statements.prepared = False
    logger.warning(
        "PostgreSQL at %s answers as through a pooler in transaction mode (PgBouncer?): %s. "
        "Statements are no longer prepared by name. A pooler in session mode (or PgBouncer "
        "1.21+ with max_prepared_statements) keeps them.",
        _address(engine.url),
        first_line(getattr(exc, "orig", None) or exc),  # the driver's, not SQLAlchemy's
    )
    await engine.dispose()
    return True


def _postgres_creator(
    url: URL,
    connect_args: dict[str, Any],
    statements: _Statements,
    engine: Callable[[], AsyncEngine],
) -> Callable[[], Any]:
    """SQLAlchemy's `creator` for a PostgreSQL engine (its `async_creator` cannot set the
    dialect's statement cache). Prepared: each statement is prepared by name once per
    connection (SQLAlchemy's cache) and asyncpg's own statements (type look-ups, pings) too.
    Unprepared: no statement cache in either; asyncpg then prepares each statement unnamed
    and parses it again in the exchange that runs it, which a pooler cannot split between
    two server backends."""
    prepared = _postgres_connector(url, connect_args)
    unprepared = _postgres_connector(url, {**connect_args, "statement_cache_size": 0})
    options = _dialect_options(url)  # (read now: a wrong value is said at start)

    def creator() -> Any:
        dbapi = engine().sync_engine.dialect.dbapi
        assert dbapi is not None
        if statements.prepared:
            return dbapi.connect(async_creator_fn=prepared, **options)
        return dbapi.connect(async_creator_fn=unprepared, prepared_statement_cache_size=0)

    return creator


# SQLAlchemy's asyncpg dialect's own URL key: neither libpq's nor a server setting.
_DIALECT_KEYS = ("prepared_statement_cache_size",)


def postgres_dsn(url: URL) -> str:
    """The URL as asyncpg's DSN: its query read as libpq reads it (`sslmode`, `sslrootcert`,
    `host` for a Unix socket, `options`; any other name a server setting). SQLAlchemy's
    asyncpg URLs' `ssl` is read as `sslmode` (asyncpg takes the same values for both), and
    its `prepared_statement_cache_size` is left to the dialect (before, both went to the
    server as settings, which refused them)."""
    query = {k: v for k, v in url.query.items() if k not in _DIALECT_KEYS}
    ssl = query.pop("ssl", None)
    if ssl is not None:
        query.setdefault("sslmode", ssl)
    return url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)


def _dialect_options(url: URL) -> dict[str, Any]:
    """The URL's keys for SQLAlchemy's asyncpg dialect itself (not for the server)."""
    options: dict[str, Any] = {}
    for key in _DIALECT_KEYS:
        if key in url.query:
            try:
                options[key] = int(str(url.query[key]))
            except ValueError:
                raise InvalidConfig(f"PostgreSQL {key} must be a whole number") from None
    return options


def _postgres_connector(url: URL, connect_args: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
    """Opens an asyncpg connection from the URL's DSN, as the tracker store's own pool does:
    SQLAlchemy's dialect hands the URL's query to asyncpg as keywords, and a Rasa
    `query: {sslmode: require}` failed there ("unexpected keyword argument 'sslmode'")."""
    dsn = postgres_dsn(url)

    async def connect() -> Any:
        import asyncpg

        from server.trackers.postgres_database import UniquelyNamedStatements

        return await asyncpg.connect(dsn, connection_class=UniquelyNamedStatements, **connect_args)

    return connect


def _mysql_connector(
    url: URL, connect_args: dict[str, Any]
) -> tuple[Callable[[], Awaitable[Any]], str | None]:
    """Opens an aiomysql connection, handshake included, within the connect timeout:
    aiomysql bounds only the TCP connect, so a server that took the connection and never
    greeted (hung, or a proxy in front of a dead one) held the request for ever. With the
    collation the URL's `query:` asks for (set once SQLAlchemy has set its charset)."""
    from sqlalchemy.dialects.mysql.aiomysql import dialect

    args, kwargs = dialect().create_connect_args(url)
    kwargs.update(connect_args)
    tls = _pymysql_tls_options(kwargs)
    session = _pymysql_session_options(kwargs)
    _refuse_what_aiomysql_cannot_take(kwargs)
    if tls.pop("disabled", False):
        kwargs.pop("ssl", None)
    elif tls or isinstance(kwargs.get("ssl"), dict):
        kwargs["ssl"] = mysql_ssl_context({**(kwargs.get("ssl") or {}), **tls})
    options = tcp_options()
    if session.write_timeout is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
        # aiomysql never waits on a send (PyMySQL's write_timeout bounds that wait): data the
        # server leaves unacknowledged that long closes the connection instead.
        unacknowledged = max(1, round(session.write_timeout * 1000))
        user_timeout = options.get(socket.TCP_USER_TIMEOUT, unacknowledged)
        options[socket.TCP_USER_TIMEOUT] = min(user_timeout, unacknowledged)

    async def connect() -> Any:
        import aiomysql

        try:
            connection = await asyncio.wait_for(
                _open_mysql(aiomysql, args, kwargs, session), CONNECT_TIMEOUT_SECONDS
            )
        except TimeoutError:  # (no text: the 503 said only "TimeoutError (no answer)")
            raise TimeoutError(
                f"no answer to a new connection in {CONNECT_TIMEOUT_SECONDS:g} s"
            ) from None
        # A connection the network drops while in use is closed by the kernel, and replaced.
        guard_driver_connection(connection, options)
        return connection

    return connect, session.collation


# PyMySQL's `connect()` TLS keys that SQLAlchemy leaves out of its `ssl` dict, and aiomysql
# does not take: read here into the TLS context (before, each was "connect() got an
# unexpected keyword argument" at every connection).
_VERIFY_MODES = {
    **dict.fromkeys(("true", "1", "yes", "required"), ssl.CERT_REQUIRED),
    **dict.fromkeys(("false", "0", "no", "none"), ssl.CERT_NONE),
    "optional": ssl.CERT_OPTIONAL,
}
_TRUTHS = {"true": True, "1": True, "yes": True, "on": True}
_TRUTHS |= {"false": False, "0": False, "no": False, "off": False}


# MySQL's capability flag of a server offering TLS, and its client error for a TLS failure.
_CLIENT_SSL = 0x800
_CR_SSL_CONNECTION_ERROR = 2026
_CR_SERVER_LOST = 2013


async def _open_mysql(
    aiomysql: Any, args: Any, kwargs: Mapping[str, Any], session: _PyMySQLSession
) -> Any:
    """aiomysql's connection, with what PyMySQL does and aiomysql does not: with TLS asked
    for (`ssl_*` keys), it refuses a server not offering it before the login goes out, as
    PyMySQL 1.2 refuses ("SSL is required but the server doesn't support it"; aiomysql
    logged in and sent everything in the clear); each read waits `read_timeout` at most."""
    tls_required = kwargs.get("ssl") is not None
    read_timeout = session.read_timeout
    if not tls_required and read_timeout is None:
        return await aiomysql.connect(*args, **kwargs)

    class PyMySQLLike(aiomysql.Connection):  # type: ignore[misc,name-defined]
        async def _request_authentication(self) -> None:
            if tls_required and not self.server_capabilities & _CLIENT_SSL:
                raise aiomysql.OperationalError(
                    _CR_SSL_CONNECTION_ERROR,
                    "TLS is asked for (query: ssl_*) but the server does not offer it; "
                    "nothing was sent in the clear",
                )
            await super()._request_authentication()

        async def _read_bytes(self, num_bytes: int) -> bytes:
            if read_timeout is None:
                return await super()._read_bytes(num_bytes)
            # As PyMySQL's socket timeout: each wait for data, not the whole packet (a big
            # row arriving slowly is read while it keeps arriving).
            chunks: list[bytes] = []
            while num_bytes:
                try:
                    async with asyncio.timeout(read_timeout):
                        chunk = await self._reader.read(num_bytes)
                except TimeoutError:  # as PyMySQL: the connection is lost, and closed
                    self.close()
                    raise aiomysql.OperationalError(
                        _CR_SERVER_LOST,
                        "Lost connection to MySQL server during query (timed out: no "
                        f"answer in {read_timeout:g} s, query: read_timeout)",
                    ) from None
                except OSError as e:
                    self.close()
                    raise aiomysql.OperationalError(
                        _CR_SERVER_LOST, f"Lost connection to MySQL server during query ({e})"
                    ) from e
                if not chunk:
                    self.close()
                    raise aiomysql.OperationalError(
                        _CR_SERVER_LOST, "Lost connection to MySQL server during query"
                    )
                chunks.append(chunk)
                num_bytes -= len(chunk)
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    connection = PyMySQLLike(*args, **kwargs)
    await connection._connect()
    return connection


# PyMySQL's `connect()` keys aiomysql does not take, and no TLS: those honoured here. A
# collation is a name (it goes into SET NAMES as written).
_COLLATION = re.compile(r"[A-Za-z0-9_]+")


@dataclass
class _PyMySQLSession:
    collation: str | None = None
    read_timeout: float | None = None
    write_timeout: float | None = None


def _pymysql_session_options(kwargs: MutableMapping[str, Any]) -> _PyMySQLSession:
    """Takes PyMySQL's `collation`, `read_timeout` and `write_timeout` out of `kwargs`, and
    the keys that change nothing here: `max_allowed_packet` (PyMySQL sizes LOAD DATA LOCAL
    chunks by it, which the store never sends) and `binary_prefix` (aiomysql always marks
    bytes `_binary`). `bind_address` cannot be honoured (aiomysql opens its socket itself)
    and is refused, named."""
    if "bind_address" in kwargs:
        raise InvalidConfig(
            "MySQL query: 'bind_address' cannot be honoured: botserver's MySQL driver "
            "(aiomysql) opens its socket itself and cannot bind it to a local address; "
            "remove it (the system's routing then picks the address)"
        )
    kwargs.pop("max_allowed_packet", None)
    kwargs.pop("binary_prefix", None)
    session = _PyMySQLSession()
    collation = kwargs.pop("collation", None)
    if collation is not None:
        if not _COLLATION.fullmatch(str(collation)):
            raise InvalidConfig(
                f"MySQL query: collation: {str(collation)[:80]!r} is no collation name "
                "(letters, digits and _, such as utf8mb4_bin)"
            )
        session.collation = str(collation)
    for key in ("read_timeout", "write_timeout"):
        if key in kwargs:
            value = kwargs.pop(key)
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                seconds = math.nan
            if isinstance(value, bool) or not 0 < seconds < math.inf:
                raise InvalidConfig(
                    f"MySQL query: {key}: {str(value)[:40]!r} is no positive number of seconds"
                )
            setattr(session, key, seconds)
    return session


def _pymysql_tls_options(kwargs: MutableMapping[str, Any]) -> dict[str, Any]:
    """Takes PyMySQL's `ssl_verify_cert`, `ssl_verify_identity`, `ssl_key_password` and
    `ssl_disabled` out of `kwargs`, as `mysql_ssl_context` options (and `disabled`). Values
    are read as PyMySQL reads `ssl_verify_cert` (`true`, `false`, `optional`...), and the
    others as written (`ssl_disabled: "false"` is false; PyMySQL takes any non-empty text as
    true); a value that is none of these is refused."""
    options: dict[str, Any] = {}
    if "ssl_verify_cert" in kwargs:
        value = str(kwargs.pop("ssl_verify_cert")).lower()
        if value not in _VERIFY_MODES:
            raise InvalidConfig(
                f"MySQL query: ssl_verify_cert: '{value}' is none of true, false, optional"
            )
        options["verify_mode"] = _VERIFY_MODES[value]
    for key, option in (("ssl_verify_identity", "verify_identity"), ("ssl_disabled", "disabled")):
        if key in kwargs:
            value = str(kwargs.pop(key)).lower()
            if value not in _TRUTHS:
                raise InvalidConfig(f"MySQL query: {key}: '{value}' is neither true nor false")
            options[option] = _TRUTHS[value]
    if "ssl_key_password" in kwargs:
        options["password"] = str(kwargs.pop("ssl_key_password"))
    return options


def _refuse_what_aiomysql_cannot_take(kwargs: Mapping[str, Any]) -> None:
    """A query key neither SQLAlchemy nor aiomysql takes stops the start, named (before,
    every connection failed with "unexpected keyword argument")."""
    import aiomysql

    taken = inspect.signature(aiomysql.connect).parameters
    unknown = sorted(key for key in kwargs if key not in taken)
    if unknown:
        raise InvalidConfig(
            f"MySQL query: {', '.join(repr(key) for key in unknown)} is not a key botserver's "
            "MySQL driver (aiomysql) takes; PyMySQL's read too: collation, read_timeout, "
            "write_timeout, max_allowed_packet, binary_prefix; TLS: ssl_ca, ssl_capath, "
            "ssl_cert, ssl_key, ssl_key_password, ssl_cipher, ssl_check_hostname, "
            "ssl_verify_cert, ssl_verify_identity, ssl_disabled"
        )


def mysql_ssl_context(options: dict[str, Any]) -> ssl.SSLContext:
    """The TLS context of the URL's `ssl_*` keys (`ssl_ca`, `ssl_capath`, `ssl_cert`,
    `ssl_key`, `ssl_cipher`, `ssl_check_hostname`, and PyMySQL's `ssl_key_password`,
    `ssl_verify_cert`, `ssl_verify_identity` as `password`, `verify_mode`,
    `verify_identity`), read as Rasa's PyMySQL reads them: with a CA the server's certificate
    is verified, and its name unless `ssl_check_hostname` is false; without one the link is
    encrypted but not verified, unless `ssl_verify_cert` asks (against the system's CAs), or
    `ssl_verify_identity` (the name too).
    SQLAlchemy hands aiomysql PyMySQL's dict of them, which aiomysql cannot use: every
    connection failed with "'dict' object has no attribute 'wrap_bio'"."""
    ca, capath = options.get("ca"), options.get("capath")
    verified = ca is not None or capath is not None
    verify_mode = options.get("verify_mode", ssl.CERT_REQUIRED if verified else ssl.CERT_NONE)
    check_hostname = verified and bool(options.get("check_hostname", True))
    if "verify_identity" in options:
        check_hostname = options["verify_identity"]
        if check_hostname:
            verify_mode = ssl.CERT_REQUIRED  # as PyMySQL
    for key in ("ca", "capath", "cert", "key"):
        path = options.get(key)
        if path is not None and not os.path.exists(path):
            raise InvalidConfig(f"MySQL TLS key query: ssl_{key}: {path} does not exist")
    try:
        context = ssl.create_default_context(cafile=ca, capath=capath)
        # As PyMySQL: Python 3.13 turns strict X.509 checks on, which refuse the certificates
        # MySQL generates for itself (Rasa, on PyMySQL, accepts them).
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
        context.check_hostname = False  # (first: CERT_NONE refuses a name check)
        context.verify_mode = verify_mode
        context.check_hostname = check_hostname and verify_mode != ssl.CERT_NONE
        if "cert" in options:
            # An encrypted key without its password is refused, not asked for on a terminal.
            password = options.get("password", "")
            context.load_cert_chain(options["cert"], options.get("key"), lambda: password)
        if "cipher" in options:
            context.set_ciphers(options["cipher"])
    except OSError as exc:  # a file that is missing or no certificate; ssl.SSLError too
        keys = "query: ssl_ca, ssl_cert, ssl_key, ssl_key_password..."
        raise InvalidConfig(f"MySQL TLS keys ({keys}): {exc}") from None
    return context


def mysql_connects(url: URL) -> Callable[[], Awaitable[None]]:
    """A new connection, outside the pool, logs in and is closed (see SilenceWatch)."""
    connect, _ = _mysql_connector(url, {"connect_timeout": CONNECT_TIMEOUT_SECONDS})

    async def connects() -> None:
        # COM_QUIT first: a connection dropped is an "Aborted connection" line in its log.
        await (await connect()).ensure_closed()

    return connects


def postgres_connects(url: URL) -> Callable[[], Awaitable[None]]:
    """A new asyncpg connection, outside any pool, logs in and is closed (see SilenceWatch):
    the server answers. No statement: one waiting behind a busy pooler (PgBouncer) would read
    as silence. Used by the PostgreSQL tracker store and the SQL event broker."""
    dsn = postgres_dsn(url)
    schema = os.environ.get("POSTGRESQL_SCHEMA")

    async def connects() -> None:
        import asyncpg

        conn = await asyncpg.connect(
            dsn,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings={"search_path": schema} if schema else None,
        )
        await conn.close()  # (said goodbye: a dropped one is a line in the server's log)

    return connects


def connects(url: URL) -> Callable[[], Awaitable[None]] | None:
    """The silence check's new connection for `url`'s database (None: SQLite, a file)."""
    backend = url.get_backend_name()
    if backend == "mysql":
        return mysql_connects(url)
    if backend == "postgresql":
        return postgres_connects(url)
    return None


def _run_on_connect(engine: AsyncEngine, statement: str) -> None:
    """`statement` (a PostgreSQL session setting) on each new connection, by asyncpg itself:
    outside a transaction, and unprepared. Through SQLAlchemy's cursor it ran inside the
    transaction the dialect opens, and the first rollback (a failed insert, the pre-ping's)
    undid it: the broker's connections lost their `lock_timeout`."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.run_async(lambda connection: connection.execute(statement))


def _set_collation_on_connect(engine: AsyncEngine, collation: str) -> None:
    """PyMySQL's `SET NAMES <charset> COLLATE <collation>` on each new connection, after
    SQLAlchemy's own `SET NAMES <charset>`, which resets the collation (Rasa's `collation`
    changed nothing for that reason). The server refuses a collation of another charset,
    naming both, as it refuses PyMySQL's."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        charset = dbapi_connection.character_set_name()
        statement = f"SET NAMES {charset} COLLATE {collation}"
        dbapi_connection.run_async(lambda connection: connection.query(statement))


def _guard_sockets(engine: AsyncEngine, options: dict[int, int]) -> None:
    """TCP keepalive and user timeout on each new connection (see server.trackers.tcp_keepalive)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        guard_driver_connection(dbapi_connection.driver_connection, options)


def _set_sqlite_pragmas(engine: AsyncEngine, autocheckpoint: bool = True) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            _sqlite_pragmas(cursor, autocheckpoint)
        except BaseException:
            # The pool drops a connection whose set-up failed ("database is locked": WAL
            # cannot be set while another program reads in a rollback journal) with the
            # statement still open on it: its file stayed open until the process ended.
            with contextlib.suppress(Exception):
                cursor.close()
                dbapi_connection.close()
            raise
        cursor.close()


def _sqlite_pragmas(cursor: Any, autocheckpoint: bool) -> None:
    # WAL lets readers in other processes run while one process writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # In WAL mode NORMAL never corrupts and survives a process crash; only an OS crash or
    # power loss can drop the last commits. It saves an fsync (4 ms here) per turn.
    cursor.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
    if not autocheckpoint:
        # SQLite's automatic checkpoint runs inside the commit that crosses 1,000 WAL
        # pages, and leaves the first commit into the restarted WAL (which fsyncs the
        # WAL's header) to whichever writer comes next.
        cursor.execute("PRAGMA wal_autocheckpoint=0")


async def ensure_postgres_database(url: URL, login_db: str) -> None:
    """Create `url.database` through `login_db` if it does not exist (Rasa's `login_db`)."""
    login_url = url.set(database=login_db)
    # Two statements, once: unprepared, which a pooler in transaction mode carries too.
    login_engine = create_async_engine(
        login_url,
        isolation_level="AUTOCOMMIT",
        creator=_postgres_creator(
            login_url,
            {"timeout": CONNECT_TIMEOUT_SECONDS},
            _Statements(False),
            lambda: login_engine,
        ),
    )
    exists = text("SELECT 1 FROM pg_database WHERE datname = :name")
    try:
        async with login_engine.connect() as conn:
            if not await conn.scalar(exists, {"name": url.database}):
                quoted = login_engine.dialect.identifier_preparer.quote(str(url.database))
                try:
                    await conn.execute(text(f"CREATE DATABASE {quoted}"))
                except DBAPIError:
                    # Another process (a worker starting with this one) created it meanwhile:
                    # the loser's CREATE failed with a duplicate key, and its first turn, 500.
                    if not await conn.scalar(exists, {"name": url.database}):
                        raise
    finally:
        await login_engine.dispose()


def mysql_column_charsets(sync_connection: Any, table: str) -> dict[str, tuple[Any, Any]]:
    """MySQL/MariaDB: each column of `table` -> (character set, collation); None for
    columns without text."""
    rows = sync_connection.execute(
        text(
            "SELECT COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME "
            "FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :table"
        ),
        {"table": table},
    )
    return {str(row[0]).lower(): (row[1], row[2]) for row in rows}


def ensure_mysql_utf8mb4(sync_connection: Any, table: str) -> None:
    """MySQL/MariaDB: convert `table` to utf8mb4 if a text column is in another character set
    (latin1, an older server's default, cannot hold most of Unicode: an emoji fails the
    insert). Rebuilds the table once; nothing on other dialects."""
    if sync_connection.dialect.name != "mysql":
        return
    charsets = mysql_column_charsets(sync_connection, table)
    if any(charset not in (None, "utf8mb4") for charset, _ in charsets.values()):
        quoted = sync_connection.dialect.identifier_preparer.quote(table)
        sync_connection.execute(text(f"ALTER TABLE {quoted} CONVERT TO CHARACTER SET utf8mb4"))


def mysql_lock_not_had(answer: Any, lock: str, seconds: float) -> str:
    """Why MySQL's `GET_LOCK` did not give `lock` (described, as "the schema migration lock
    ('x')") when it gave `answer` rather than 1: 0, another session held it for the wait's
    `seconds`; NULL, an error, which no wait for that session would have cured."""
    if answer is None:
        return (
            f"waiting for {lock} ended in an error (GET_LOCK answered NULL: the statement "
            "was killed, or the server found a deadlock or ran out of memory)"
        )
    return f"another session held {lock} for {seconds:g} s"


# Room in a MySQL statement for all but an event's JSON: the other columns (up to 255
# characters each, escaped), the SQL around them.
_MYSQL_STATEMENT_ROOM = 16 * 1024
# Characters the MySQL driver escapes with a backslash: each takes two bytes.
_MYSQL_ESCAPED = ("\\", "\x00", "\n", "\r", "\x1a", "'", '"')


async def mysql_max_packet(connection: Any) -> int:
    """MySQL/MariaDB: the largest statement the server takes (`max_allowed_packet`); one
    larger makes it drop the connection, which reads as an outage however often retried."""
    return int(await connection.scalar(text("SELECT @@max_allowed_packet")))


def mysql_oversize(value: str, max_packet: int) -> int | None:
    """The bytes a statement holding `value` takes, if more than `max_packet`; else None."""
    if len(value) * 8 + _MYSQL_STATEMENT_ROOM <= max_packet:  # 4 bytes a character, escaped
        return None
    size = len(value.encode("utf-8", "surrogatepass")) + _MYSQL_STATEMENT_ROOM
    size += sum(value.count(char) for char in _MYSQL_ESCAPED)
    return size if size > max_packet else None
