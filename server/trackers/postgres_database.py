"""The SQL tracker store's PostgreSQL access: asyncpg's own pool, one round trip per call.

Appends and a turn's reads (of newer rows or of a whole session, in the same groups) are
grouped: those made while the previous group of their kind ran (or in the same event loop
iteration) go out as one statement (for appends one transaction, each append still all or
nothing); a group without an answer after SQL_GROUP_WAIT holds only its own conversations,
the next one goes out on another connection; every statement is prepared once per
connection. There is no ping per checkout: a connection the server closed is replaced when
the pool hands it out, and a statement that finds its connection gone is retried once where
that cannot write twice (reads, or a write that never reached the server).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg
from sqlalchemy.engine import URL

from server.errors import first_line
from server.setting_values import sql_pool_sizes
from server.trackers.session_start import ACTION_SESSION_START
from server.trackers.setup_loop import clean_up_seconds
from server.trackers.silence import SilenceWatch, Watched
from server.trackers.sql_engine import (
    group_wait_seconds,
    postgres_connects,
    postgres_dsn,
    postgres_lock_timeout,
    statement_timeout_seconds,
    statement_took_too_long,
    tcp_options,
    transaction_pooled,
)
from server.trackers.sql_schema import SESSION_ACTION_WHERE, SESSION_STARTED_WHERE
from server.trackers.store import RowBudget
from server.trackers.tcp_keepalive import guard_driver_connection

T = TypeVar("T")
logger = logging.getLogger(__name__)

Row = tuple[str, str | None, float | None, str | None, str | None, str]
IdData = tuple[int, str]

_COLUMNS = "sender_id, type_name, timestamp, intent_name, action_name, data"
# Rows travel as one array of a row type each connection makes for itself (a temporary type:
# nothing in the database's schema): asyncpg encodes each row tuple as it is, where six
# arrays of columns cost it a Python call or two per value (its checks of each element for a
# nested array: 60 of a turn's ~750 Python calls).
_ROW_TYPE = "pg_temp.botserver_event_row"
_CREATE_ROW_TYPE = (
    f"CREATE TYPE {_ROW_TYPE} AS (sender_id varchar, type_name varchar, timestamp float8,"
    " intent_name varchar, action_name varchar, data text)"
)
_ROWS = f"SELECT * FROM unnest($1::{_ROW_TYPE}[]) WITH ORDINALITY AS r({_COLUMNS}, n)"
# Where the role may not create temporary objects (TEMP revoked on the database), six arrays.
_ROWS_AS_ARRAYS = (
    "SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::float8[], $4::varchar[],"
    " $5::varchar[], $6::text[]) WITH ORDINALITY AS r(" + _COLUMNS + ", n)"
)


@dataclass(frozen=True, slots=True)
class _AppendStatements:
    """The appends' statements, for rows as `rows` (SQL) whose parameters end at `last`."""

    insert: str
    group_insert: str
    insert_only: str
    rows_typed: bool  # rows as one parameter (the row type), else six (column arrays)

    @classmethod
    def of(cls, rows: str, last: int, rows_typed: bool) -> _AppendStatements:
        sender = f"${last + 1}"
        new = f" new AS (INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} FROM ({rows}) AS r"
        return cls(
            # Every part of one statement sees the same snapshot: `previous` is the last id
            # before it.
            f"WITH previous AS (SELECT max(id) AS id FROM events WHERE sender_id = {sender}),"
            f"{new} ORDER BY n RETURNING id)"
            " SELECT (SELECT id FROM previous), (SELECT array_agg(id ORDER BY id) FROM new)",
            # A group's appends in one statement: each conversation's last id before (in the
            # order of the senders' array) and every new row's id, in order.
            "WITH previous AS (SELECT k, (SELECT max(id) FROM events WHERE sender_id ="
            f" s.sender_id) AS id FROM unnest({sender}::varchar[]) WITH ORDINALITY AS"
            f" s(sender_id, k)),{new} ORDER BY n RETURNING id)"
            " SELECT (SELECT array_agg(id ORDER BY k) FROM previous),"
            " (SELECT array_agg(id ORDER BY id) FROM new)",
            f"INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} FROM ({rows}) AS r ORDER BY n",
            rows_typed,
        )

    def rows(self, rows: Sequence[Row]) -> Sequence[Any]:
        """The rows' parameters."""
        return (rows,) if self.rows_typed else _columns(rows)


_APPENDS = _AppendStatements.of(_ROWS, 1, rows_typed=True)
_APPENDS_AS_ARRAYS = _AppendStatements.of(_ROWS_AS_ARRAYS, 6, rows_typed=False)
# What a role without the TEMP privilege (or a read-only server) answers CREATE TYPE with.
_NO_ROW_TYPE_ERRORS = (
    asyncpg.exceptions.InsufficientPrivilegeError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)


def _row_type_lost(exc: BaseException) -> bool:
    """Whether a statement failed because its session has no row type (any more): a pooler
    in transaction mode handed it another server backend, or `DISCARD TEMP` / `DISCARD ALL`
    ran in the session. Nothing of the statement was written."""
    if isinstance(exc, asyncpg.exceptions.UndefinedObjectError):
        return "botserver_event_row" in str(exc)
    if isinstance(exc, asyncpg.exceptions.InvalidSchemaNameError):
        return "pg_temp" in str(exc)  # a backend that never made a temporary object
    # A statement prepared while the type existed: its plan names the dropped type's id.
    return isinstance(exc, asyncpg.exceptions.InternalServerError) and (
        "cache lookup failed for type" in str(exc)
    )


class UniquelyNamedStatements(asyncpg.Connection):  # type: ignore[misc]
    """Prepared statements named as no other client names its own. asyncpg numbers them from
    1 in every process (`__asyncpg_stmt_1__`...): behind a pooler in transaction mode, where
    a statement may be sent to another server backend, another worker's (or application's)
    statement there under the same name and parameter types ran in its place (a conversation
    read by one worker was deleted by another's replace statement) before the first error
    showed the pooler. Under a name of its own, a statement that is not on its backend fails
    ("does not exist"), which moves the store to unprepared statements."""

    __slots__ = ()

    def _get_unique_id(self, prefix: str) -> str:
        return f"__botserver_{prefix}_{secrets.token_hex(8)}__"  # (once per statement)


def _transaction_pooled(exc: BaseException) -> bool:
    """Whether a connection failed as one through a pooler in transaction mode does
    (PgBouncer before 1.21, or without `max_prepared_statements`): each transaction may run
    on another server backend, so this connection's prepared statements are not there and
    another client's are; its temporary row type, likewise. Each of these errors comes
    before anything is written (Parse, Bind, or the connection's own set-up)."""
    if transaction_pooled(exc):  # a prepared statement missing, or another client's
        return True
    # The set-up's CREATE TYPE on a backend where another client's session made it.
    return isinstance(exc, asyncpg.exceptions.DuplicateObjectError) and (
        "botserver_event_row" in str(exc)
    )


# Retention: a batch of stale conversations, in sender id order, from the first or after $3.
_STALE_FIRST = (
    "SELECT sender_id FROM events GROUP BY sender_id "
    "HAVING max(timestamp) < $1 ORDER BY sender_id LIMIT $2"
)
_STALE_AFTER = (
    "SELECT sender_id FROM events WHERE sender_id > $3 GROUP BY sender_id "
    "HAVING max(timestamp) < $1 ORDER BY sender_id LIMIT $2"
)
# Retention: the conversations of $1 whose newest event is older than $2, deleted.
_DELETE_STALE = (
    "WITH stale AS (SELECT sender_id FROM events WHERE sender_id = ANY($1::varchar[]) "
    "GROUP BY sender_id HAVING max(timestamp) < $2), "
    "gone AS (DELETE FROM events WHERE sender_id = ANY(ARRAY(SELECT sender_id FROM stale)) "
    "RETURNING sender_id) SELECT count(DISTINCT sender_id) FROM gone"
)
_ROWS_FROM = "SELECT id, data FROM events WHERE sender_id = $1 AND id >= $2 ORDER BY id"
# The current session's rows in one statement: it starts at the last action_session_start,
# or at a later session_started (at the row before it when that is action_session_start).
# The first two seek the partial indexes, which a generic plan uses only with the literals.
_SESSION_ROWS = (
    "WITH marks AS MATERIALIZED (SELECT"
    f" (SELECT max(id) FROM events WHERE sender_id = $1 AND {SESSION_ACTION_WHERE}) AS action,"
    f" (SELECT max(id) FROM events WHERE sender_id = $1 AND {SESSION_STARTED_WHERE})"
    "  AS started),"
    " start AS (SELECT CASE WHEN started IS NOT NULL AND (action IS NULL OR action < started)"
    "  THEN coalesce((SELECT CASE WHEN type_name = 'action' AND action_name = $2 THEN id END"
    "   FROM events WHERE sender_id = $1 AND id < started ORDER BY id DESC LIMIT 1), started)"
    "  ELSE coalesce(action, 0) END AS id FROM marks)"
    " SELECT id, data FROM events WHERE sender_id = $1 AND id >= (SELECT id FROM start)"
    " ORDER BY id"
)
# Where the current session of `q.sender_id` starts (as in _SESSION_ROWS), for one read of a
# group; evaluated only for the reads that need it (COALESCE stops at the first non-null).
_SESSION_START_OF_Q = (
    "(SELECT CASE WHEN m.started IS NOT NULL AND (m.action IS NULL OR m.action < m.started)"
    "  THEN coalesce((SELECT CASE WHEN type_name = 'action'"
    f"   AND action_name = '{ACTION_SESSION_START}' THEN id END"
    "   FROM events WHERE sender_id = q.sender_id AND id < m.started ORDER BY id DESC LIMIT 1),"
    "   m.started)"
    "  ELSE coalesce(m.action, 0) END"
    " FROM (SELECT (SELECT max(id) FROM events"
    f"   WHERE sender_id = q.sender_id AND {SESSION_ACTION_WHERE}) AS action,"
    "  (SELECT max(id) FROM events"
    f"   WHERE sender_id = q.sender_id AND {SESSION_STARTED_WHERE}) AS started OFFSET 0) AS m)"
)
# A group's reads, of newer rows (first_id given) and of whole sessions (first_id null)
# alike: (k, id, data), k the read's place (from 1) in the arrays.
_GROUP_READS = (
    "SELECT q.k, e.id, e.data"
    " FROM unnest($1::varchar[], $2::bigint[]) WITH ORDINALITY AS q(sender_id, first_id, k)"
    f" CROSS JOIN LATERAL (SELECT coalesce(q.first_id, {_SESSION_START_OF_Q}) AS id) AS start"
    " CROSS JOIN LATERAL (SELECT id, data FROM events"
    "  WHERE sender_id = q.sender_id AND id >= start.id ORDER BY id) AS e"
    " ORDER BY q.k, e.id"
)

CONNECT_TIMEOUT_SECONDS = 5.0
# A pooled connection idle this long is closed, and none is kept as a floor: NAT gateways and
# load balancers drop an idle TCP connection without a word (AWS's NAT gateway after 350 s,
# Azure's load balancer after 240 s), and a statement sent on it then gets no answer until
# the statement timeout, while a new connection (the silence check's) answers at once.
IDLE_SECONDS = 180.0
# Every statement here is prepared once per connection and planned once: left to choose,
# PostgreSQL plans a group statement anew on every run when the connection's first runs
# had small groups (its custom plans, sized to the arrays, then look cheaper than the
# generic one), about 0.8 M instructions per statement, more than the appends themselves.
_GENERIC_PLANS = "SET plan_cache_mode = force_generic_plan"
# Errors that mean "the database cannot be reached or the connection is gone".
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, starting up
    asyncpg.exceptions.TooManyConnectionsError,
    # A connection whose server went away while it sat idle can be left mid-protocol.
    asyncpg.exceptions.InternalClientError,
)
# The connection is gone (closed by the server, or by the kernel once the network dropped it).
_LOST_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
)
# The connection was unusable before the statement went out: nothing was written.
_NOT_SENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InternalClientError,
)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection needs before it goes back to the pool: nothing more than asyncpg's
    own rollback of a transaction left open. Its default reset (advisory unlock, CLOSE ALL,
    UNLISTEN, RESET ALL) is one more round trip per statement, and none of it applies: the
    store holds no cursor, listens to nothing, and its one session setting (`lock_timeout`,
    set when the connection opens) must stay, where RESET ALL would undo it."""


def _columns(rows: Sequence[Row]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


Written = tuple[int | None, list[IdData], None]
# A call's item: its conversation first (what a group holds), then its arguments.
Item = TypeVar("Item", bound=tuple[str, Any])
Result = TypeVar("Result")


@dataclass(slots=True)
class _Call(Generic[Item, Result]):
    item: Item
    outcome: asyncio.Future[Result]


class _Groups(Generic[Item, Result]):
    """Calls of one kind, run as groups: the calls made while a group runs (or in the event
    loop iteration of the first) form the next one, so the busier the store, the larger its
    groups and the fewer its statements and transactions. The next group waits for the one
    before for up to `wait` seconds only: a group without an answer by then (its connection
    dropped by the network, a statement waiting on a lock) holds only the calls of its own
    conversations (their items' first element), which wait for it, in order; the others go
    out on another connection. At most `most` groups are under way: when every group waits
    (on a table lock, a slow server), the others' statements still find a connection in the
    pool."""

    def __init__(
        self,
        run: Callable[[list[_Call[Item, Result]]], Awaitable[None]],
        wait: float,
        most: int,
    ) -> None:
        self._run = run  # settles every call's outcome
        self._wait = wait
        self._most = most
        self._pending: list[_Call[Item, Result]] = []
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()  # groups under way
        self._held: dict[str, int] = {}  # conversations of the groups under way
        self._changed = asyncio.Event()  # a call came, or a group ended

    async def __call__(self, item: Item) -> Result:
        outcome: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append(_Call(item, outcome))
        self._changed.set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._run_groups())
        return await outcome

    async def _run_groups(self) -> None:
        try:
            while True:
                group = self._next_group() if len(self._running) < self._most else []
                if group:
                    task = asyncio.ensure_future(self._run_group(group))
                    self._running.add(task)
                    await asyncio.wait((task,), timeout=self._wait)
                    continue
                if not self._pending and not self._running:
                    return
                self._changed.clear()  # nothing to send: wait for a call, or a group's end
                await self._changed.wait()
        finally:
            self._task = None
            for call in self._pending:  # only when this task itself was cancelled
                call.outcome.cancel()
            self._pending = []
            for task in self._running:
                task.cancel()

    def _next_group(self) -> list[_Call[Item, Result]]:
        """The pending calls not held by a group under way (cancelled ones dropped)."""
        group: list[_Call[Item, Result]] = []
        held: list[_Call[Item, Result]] = []
        for call in self._pending:
            if not call.outcome.done():
                (held if call.item[0] in self._held else group).append(call)
        self._pending = held
        return group

    async def _run_group(self, group: list[_Call[Item, Result]]) -> None:
        keys = {call.item[0] for call in group}
        for key in keys:
            self._held[key] = self._held.get(key, 0) + 1
        try:
            await self._run(group)
        except Exception as exc:  # a bug: its callers see it, later groups still run
            for call in group:
                _fail(call, exc)
        except BaseException:  # cancelled: so are its calls
            for call in group:
                call.outcome.cancel()
            raise
        finally:
            for key in keys:
                self._held[key] -= 1
                if not self._held[key]:
                    del self._held[key]
            if (task := asyncio.current_task()) is not None:
                self._running.discard(task)
            self._changed.set()

    async def drain(self) -> None:
        """Waits until the calls already made are settled."""
        if self._task is not None:
            with suppress(Exception):
                await self._task


def _settle(call: _Call[Item, Result], result: Result) -> None:
    if not call.outcome.done():  # its caller may have been cancelled meanwhile
        call.outcome.set_result(result)


def _fail(call: _Call[Item, Result], exc: BaseException) -> None:
    if not call.outcome.done():
        call.outcome.set_exception(exc)


class PostgresDatabase:
    """Rasa's `events` table in PostgreSQL through an asyncpg pool (created on first use)."""

    def __init__(self, url: URL) -> None:
        self._dsn = postgres_dsn(url)
        self._max_size = sum(sql_pool_sizes())
        schema = os.environ.get("POSTGRESQL_SCHEMA")
        self._server_settings = {"search_path": schema} if schema else None
        self._on_connect = postgres_lock_timeout()
        self._statement_timeout = statement_timeout_seconds()
        self._tcp_options = tcp_options()
        self._silence = SilenceWatch(postgres_connects(url))
        self._pool: asyncpg.Pool | None = None
        # Rows as the row type each connection makes, until one may not make it.
        self._append_sql = _APPENDS
        # Statements prepared once per connection, until a pooler in transaction mode shows.
        self._prepares = True
        self._old_pools: set[asyncio.Task[None]] = set()
        wait = group_wait_seconds()
        # Groups of each kind under way at once: a quarter of the pool, and at least two.
        most = max(2, self._max_size // 4)
        self._appends = _Groups(self._write, wait, most)
        # Reads of newer rows and of whole sessions share their groups: with two workers
        # each process's groups are smaller, and one kind fewer is one statement fewer.
        self._reads = _Groups(self._read, wait, most)

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=0,
                max_size=self._max_size,
                timeout=CONNECT_TIMEOUT_SECONDS,
                server_settings=self._server_settings,
                init=self._init_connection,
                max_inactive_connection_lifetime=IDLE_SECONDS,
                reset=_keep_session,
                connection_class=UniquelyNamedStatements,
                # 0: no named statements; asyncpg then parses each statement again in the
                # same exchange, which a pooler cannot split between two server backends.
                **({} if self._prepares else {"statement_cache_size": 0}),
            )
            if self._pool is None:
                self._pool = pool
            else:  # another task made one meanwhile
                await pool.close()
        return self._pool

    async def _init_connection(self, conn: asyncpg.Connection) -> None:
        # A connection the network drops while in use is closed by the kernel, and replaced.
        guard_driver_connection(conn, self._tcp_options)
        settings = f"{self._on_connect}; {_GENERIC_PLANS}"
        if self._append_sql.rows_typed:
            try:
                await conn.execute(f"{settings}; {_CREATE_ROW_TYPE}")  # one round trip
                return
            except _NO_ROW_TYPE_ERRORS:  # (its settings were undone with it)
                self._append_sql = _APPENDS_AS_ARRAYS
        await conn.execute(settings)

    async def _with_rows(self, statements: Callable[[_AppendStatements], Awaitable[T]]) -> T:
        """`statements(sql)` with the appends' statements in use; when the session lost the
        row type (`_row_type_lost`: the statement wrote nothing, a transaction it ran in is
        rolled back), the process moves to column arrays, which need nothing of the session,
        and runs them again once."""
        sql = self._append_sql
        try:
            return await statements(sql)
        except (
            asyncpg.exceptions.UndefinedObjectError,
            asyncpg.exceptions.InvalidSchemaNameError,
            asyncpg.exceptions.InternalServerError,
        ) as exc:
            if not sql.rows_typed or not _row_type_lost(exc):
                raise
            if self._append_sql.rows_typed:
                logger.warning(
                    "A PostgreSQL session lost its row type (a pooler in transaction mode, or "
                    "DISCARD TEMP): appends send their rows as column arrays from now on: %s",
                    exc,
                )
                self._append_sql = _APPENDS_AS_ARRAYS
            return await statements(_APPENDS_AS_ARRAYS)

    async def _run(
        self,
        operation: Callable[[asyncpg.Connection], Awaitable[T]],
        writes: bool = False,
        bounded: bool = True,
    ) -> T:
        """`operation(connection)`; retried once on a fresh connection when the first one
        turned out to be gone (for a write only if the statement never went out). `bounded`:
        each attempt gives up after `SQL_STATEMENT_TIMEOUT` (TimeoutError). Bounded or not,
        it gives up sooner (DatabaseSilent) when the database stops answering."""
        if not bounded:
            with self._silence() as watched:
                return await self._attempt_twice(operation, writes, watched)
        deadline = asyncio.timeout(self._statement_timeout)
        try:
            async with deadline:
                with self._silence() as watched:
                    return await self._attempt_twice(operation, writes, watched)
        except TimeoutError:
            if deadline.expired():
                raise statement_took_too_long(self._statement_timeout) from None
            raise

    async def _attempt_twice(
        self,
        operation: Callable[[asyncpg.Connection], Awaitable[T]],
        writes: bool,
        watched: Watched,
    ) -> T:
        retriable = _NOT_SENT_ERRORS if writes else UNAVAILABLE_ERRORS
        prepares = self._prepares
        pool = await self._get_pool()
        try:
            async with pool.acquire(timeout=CONNECT_TIMEOUT_SECONDS) as conn:
                return await _unless_silent(operation(conn), conn, watched)
        except Exception as exc:
            # First: a pooler's refusal is no lost connection, though one of them (a Bind's
            # protocol violation, SQLSTATE 08P01) is a PostgresConnectionError.
            if prepares and _transaction_pooled(exc):
                self._stop_preparing(exc)  # nothing was written: once more, unprepared
                pool = await self._get_pool()
            elif isinstance(exc, retriable):
                # The server dropped this connection, so likely every other idle one too (a
                # restart, pg_terminate_backend): the retry must not be handed another of them.
                await pool.expire_connections()
                if self._prepares != prepares:
                    # Another call met a pooler meanwhile: its new pool, not the old one
                    # (closing: "pool is closing").
                    pool = await self._get_pool()
            else:
                if isinstance(exc, _LOST_ERRORS):
                    # A write that may have reached the server is not sent again; but the next
                    # call must not be handed another connection dropped with this one (each
                    # waited DB_TCP_TIMEOUT for its own 503).
                    await pool.expire_connections()
                raise
        async with pool.acquire(timeout=CONNECT_TIMEOUT_SECONDS) as conn:
            return await _unless_silent(operation(conn), conn, watched)

    def _stop_preparing(self, exc: BaseException) -> None:
        """From now on, connections of a new pool that prepare nothing by name and make no
        row type (rows go as column arrays): what a pooler in transaction mode can carry.
        The old pool closes once the calls using it are done."""
        if not self._prepares:
            return
        logger.warning(
            "PostgreSQL answers as through a pooler in transaction mode (PgBouncer?): %s. "
            "Statements are no longer prepared by name, and rows go as column arrays. A "
            "pooler in session mode (or PgBouncer 1.21+ with max_prepared_statements) keeps "
            "both, and the connections' settings.",
            first_line(exc),  # (not asyncpg's hint, which says as much)
        )
        self._prepares = False
        self._append_sql = _APPENDS_AS_ARRAYS
        old, self._pool = self._pool, None
        if old is not None:
            task = asyncio.get_running_loop().create_task(old.close())
            self._old_pools.add(task)
            task.add_done_callback(self._old_pools.discard)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.fetchval("SELECT 1"))

    async def close(self) -> None:
        await self._appends.drain()  # the appends already made are written first
        await self._reads.drain()
        self._silence.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            # A graceful close waits for each connection's goodbye: on a database fallen
            # silent (a pooled connection of the start-up check, say) that held the stop for
            # ever. Bounded as the set-up's clean-up; asyncpg terminates the pool when its
            # close is cancelled.
            with suppress(TimeoutError):
                await asyncio.wait_for(pool.close(), clean_up_seconds())
        if self._old_pools:
            await asyncio.gather(*self._old_pools)

    def read_mark(self) -> tuple[int, int] | None:
        return None  # every load reads

    async def insert(
        self, sender_id: str, rows: Sequence[Row], known: tuple[int | None, int] | None = None
    ) -> Written:
        """Appends rows, all or nothing: the conversation's last row id before, and the
        (id, data) of each new row, in order (no epoch: see SqliteDatabase.epoch). The
        append joins the next group; a group's appends commit together, in one statement."""
        return await self._appends((sender_id, rows))

    async def _write(self, group: list[_Call[tuple[str, Sequence[Row]], Written]]) -> None:
        if len(group) == 1:
            await self._write_one(group[0])
            return
        senders = list(dict.fromkeys([call.item[0] for call in group]))
        rows = [row for call in group for row in call.item[1]]

        async def insert(conn: asyncpg.Connection) -> Any:
            return await self._with_rows(
                lambda sql: conn.fetchrow(sql.group_insert, *sql.rows(rows), senders)
            )

        try:
            previous, ids = await self._run(insert, writes=True)
        except UNAVAILABLE_ERRORS as exc:  # the group may or may not have been written
            for call in group:
                _fail(call, exc)
            return
        except Exception:
            # Refused, so nothing of it was written: each append alone, so that only the one
            # the database refuses fails.
            for call in group:
                if not call.outcome.done():
                    await self._write_one(call)
            return
        last = dict(zip(senders, previous, strict=True))
        start = 0
        for call in group:
            sender_id, append_rows = call.item
            end = start + len(append_rows)
            _settle(call, _written(last[sender_id], ids[start:end], append_rows))
            if end > start:  # a conversation's next append in the group follows this one
                last[sender_id] = ids[end - 1]
            start = end

    async def _write_one(self, call: _Call[tuple[str, Sequence[Row]], Written]) -> None:
        sender_id, rows = call.item

        async def insert(conn: asyncpg.Connection) -> Any:
            return await self._with_rows(
                lambda sql: conn.fetchrow(sql.insert, *sql.rows(rows), sender_id)
            )

        try:
            previous, ids = await self._run(insert, writes=True)
        except Exception as exc:
            _fail(call, exc)
            return
        _settle(call, _written(previous, ids, rows))

    async def replace(self, sender_id: str, rows: Sequence[Row]) -> None:
        async def replace_with(conn: asyncpg.Connection, sql: _AppendStatements) -> None:
            async with conn.transaction():
                await conn.execute("DELETE FROM events WHERE sender_id = $1", sender_id)
                if rows:
                    await conn.execute(sql.insert_only, *sql.rows(rows))

        async def replace(conn: asyncpg.Connection) -> None:
            await self._with_rows(lambda sql: replace_with(conn, sql))

        await self._run(replace, writes=True)

    async def delete_senders(self, sender_ids: Sequence[str]) -> None:
        sql = "DELETE FROM events WHERE sender_id = ANY($1::varchar[])"
        await self._run(lambda conn: conn.execute(sql, list(sender_ids)), writes=True)

    async def delete_stale(self, sender_ids: Sequence[str], cutoff_timestamp: float) -> int:
        """Deletes those of `sender_ids` whose newest event is still older than the cutoff,
        in one statement: a row committed before it started makes its conversation recent,
        one committed after is not in its snapshot and is not deleted."""
        value = await self._run(
            lambda conn: conn.fetchval(_DELETE_STALE, list(sender_ids), cutoff_timestamp),
            writes=True,
        )
        return int(value)

    async def rows_from(self, sender_id: str, first_id: int) -> list[IdData]:
        """(id, data) of the conversation's rows from `first_id` on, in order; the reads
        made together go out as one statement."""
        return await self._reads((sender_id, first_id))

    async def session_rows(self, sender_id: str) -> list[IdData]:
        """(id, data) of the current session's rows, in order (one round trip); the reads
        made together go out as one statement."""
        return await self._reads((sender_id, None))

    async def _read(self, group: list[_Call[tuple[str, int | None], list[IdData]]]) -> None:
        """Settles a group of reads (first_id None: the whole current session)."""
        if len(group) == 1:
            await self._read_one(group[0])
            return
        senders = [call.item[0] for call in group]
        first_ids = [call.item[1] for call in group]
        try:
            records = await self._run(lambda conn: conn.fetch(_GROUP_READS, senders, first_ids))
        except UNAVAILABLE_ERRORS as exc:  # already retried once
            for call in group:
                _fail(call, exc)
            return
        except Exception:  # each alone, so that only a read the database refuses fails
            for call in group:
                if not call.outcome.done():
                    await self._read_one(call)
            return
        found: list[list[IdData]] = [[] for _ in group]
        for record in records:
            found[record[0] - 1].append((record[1], record[2]))
        for call, rows in zip(group, found, strict=True):
            _settle(call, rows)

    async def _read_one(self, call: _Call[tuple[str, int | None], list[IdData]]) -> None:
        sender_id, first_id = call.item
        args: tuple[str, str | int]
        if first_id is None:
            sql, args = _SESSION_ROWS, (sender_id, ACTION_SESSION_START)
        else:
            sql, args = _ROWS_FROM, (sender_id, first_id)
        try:
            records = await self._run(lambda conn: conn.fetch(sql, *args))
        except Exception as exc:
            _fail(call, exc)
            return
        _settle(call, [(record[0], record[1]) for record in records])

    async def all_data(self, sender_id: str) -> list[str]:
        sql = "SELECT data FROM events WHERE sender_id = $1 ORDER BY id"
        records = await self._run(lambda conn: conn.fetch(sql, sender_id))
        return [record[0] for record in records]

    async def all_data_of(
        self, sender_ids: Sequence[str], max_bytes: int | None = None
    ) -> tuple[list[tuple[str, str]], bool]:
        # (In code point order, whatever the database's collation: see RowBudget.)
        sql = (
            "SELECT sender_id, data FROM events WHERE sender_id = ANY($1::text[]) "
            'ORDER BY sender_id COLLATE "C", id'
        )

        async def read(conn: asyncpg.Connection) -> tuple[list[tuple[str, str]], bool]:
            budget = RowBudget(max_bytes)
            async with conn.transaction(readonly=True):  # (a cursor's)
                cursor = await conn.cursor(sql, list(sender_ids))
                while records := await cursor.fetch(budget.rows_to_fetch()):
                    for record in records:
                        if not budget.take(record[0], record[1]):
                            return budget.rows, False
            return budget.rows, True

        # (Unbounded, as the listings: a batch of long conversations may take a while.)
        return await self._run(read, bounded=False)

    async def senders(self) -> list[str]:
        records = await self._run(
            lambda conn: conn.fetch("SELECT DISTINCT sender_id FROM events"), bounded=False
        )
        return [record[0] for record in records]

    async def senders_older_than(
        self, cutoff_timestamp: float, after: str | None, limit: int
    ) -> list[str]:
        """Up to `limit` stale senders above `after` (None: from the first), in order
        (through ix_events_sender_id_id)."""
        sql, args = (_STALE_FIRST, []) if after is None else (_STALE_AFTER, [after])
        records = await self._run(
            lambda conn: conn.fetch(sql, cutoff_timestamp, limit, *args), bounded=False
        )
        return [record[0] for record in records]


async def _unless_silent(statement: Awaitable[T], conn: asyncpg.Connection, watched: Watched) -> T:
    """`statement`, whose connection is dropped when it is cancelled for a silent database:
    asyncpg would cancel it through a new connection to that server, and wait for it (5 s
    more, then a TimeoutError in place of the reason)."""
    try:
        return await statement
    except asyncio.CancelledError:
        if watched.silenced:
            conn.terminate()
        raise


def _written(previous: int | None, ids: Sequence[int], rows: Sequence[Row]) -> Written:
    return previous, [(row_id, row[5]) for row_id, row in zip(ids, rows, strict=True)], None
