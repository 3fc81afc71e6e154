"""The SQL tracker store's SQLite access: the stdlib driver on one thread of its own.

Each store operation is one function run on that thread (one hop from the event loop, where
the async driver needs four or five per statement). The thread owns one connection, so the
process's writers queue there instead of in SQLite's busy handler.

Appends are group-committed: those that arrive while the thread is busy go in together, in
one transaction, each in a savepoint of its own (one conversation's failure rolls back only
its rows). BEGIN and COMMIT were most of an append's cost, and the one writer thread was what
capped a process's turns per second under concurrent conversations.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import pathlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from server.trackers.session_start import ACTION_SESSION_START

T = TypeVar("T")

Row = tuple[str, str | None, float | None, str | None, str | None, str]

_COLUMNS = "sender_id, type_name, timestamp, intent_name, action_name, data"
_INSERT_ONE = f"({', '.join('?' * 6)})"
# SQLite limits a statement to 32,766 parameters (999 before 3.32): stay far below.
_ROWS_PER_INSERT = 150


class SqliteDatabase:
    """Rasa's `events` table in one SQLite file, reached from one dedicated thread."""

    def __init__(self, path: str, busy_timeout_ms: int, synchronous: str) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._local = threading.local()
        self._readers = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._closed = False
        self._pending: list[_Append] = []  # appends waiting for the next group commit
        self._flushing: asyncio.Task[None] | None = None
        self.group_commits = 0  # transactions that committed appends (for tests and stats)

    async def run(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `function(connection)` on the store's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, function)

    def _call(self, function: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return function(conn)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout_ms / 1000, isolation_level=None,
            cached_statements=64,
        )
        # WAL lets readers in other processes run while one process writes; in WAL mode
        # synchronous=NORMAL never corrupts and survives a process crash.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        return conn

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection; busy at once rather than waiting."""
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            if self._closed:
                raise sqlite3.OperationalError("the store is closed")
            uri = f"{pathlib.Path(self.path).absolute().as_uri()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=0")
            self._readers.conn = conn
            self._reader_connections.append(conn)
        return conn

    async def close(self) -> None:
        def close() -> None:
            conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
            if conn is not None:
                conn.close()
                self._local.conn = None

        if self._closed:
            return
        if self._flushing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flushing)
        self._closed = True
        for reader in self._reader_connections:
            # sqlite3 refuses to close another thread's connection; those end with the process.
            with contextlib.suppress(sqlite3.ProgrammingError):
                reader.close()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, close)
        finally:
            self._executor.shutdown(wait=False)

    # -- operations (each one hop) ---------------------------------------------------------

    async def ping(self) -> None:
        await self.run(lambda conn: conn.execute("SELECT 1").fetchall())

    async def insert(
        self, sender_id: str, rows: Sequence[Row]
    ) -> tuple[int | None, list[tuple[int, str]]]:
        """Appends rows atomically (all or none): the conversation's last row id before, and
        the (id, data) of each new row, in order. Committed with the other appends pending."""
        loop = asyncio.get_running_loop()
        append = _Append(sender_id, rows, loop.create_future())
        self._pending.append(append)
        if self._flushing is None:
            self._flushing = loop.create_task(self._flush())
        return await append.future

    async def _flush(self) -> None:
        """Commits the pending appends, a group at a time, until none is left."""
        try:
            while self._pending:
                group, self._pending = self._pending, []
                try:
                    outcomes = await self.run(functools.partial(_commit_group, group))
                except BaseException as error:  # nothing of the group committed
                    for append in group:
                        _settle(append.future, error)
                    if not isinstance(error, Exception):
                        raise
                    continue
                self.group_commits += 1
                for append, outcome in zip(group, outcomes, strict=True):
                    _settle(append.future, outcome)
        finally:
            self._flushing = None
            for append in self._pending:  # only when the loop is going away
                _settle(append.future, sqlite3.OperationalError("the store is closing"))
            self._pending = []

    async def replace(self, sender_id: str, rows: Sequence[Row]) -> None:
        def replace(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM events WHERE sender_id = ?", (sender_id,))
            if rows:
                _insert(conn, rows)

        await self.run(lambda conn: _write(conn, lambda: replace(conn)))

    async def delete_senders(self, sender_ids: Sequence[str]) -> None:
        marks = ", ".join("?" * len(sender_ids))
        sql = f"DELETE FROM events WHERE sender_id IN ({marks})"
        await self.run(lambda conn: _write(conn, lambda: conn.execute(sql, tuple(sender_ids))))

    async def rows_from(self, sender_id: str, first_id: int) -> list[tuple[int, str]]:
        """(id, data) of the conversation's rows with id >= first_id, in order.

        This is the read of every turn on a cached session: a few index-seeked rows, read
        on the caller's thread from a WAL snapshot, which waits for no writer. Should SQLite
        still answer busy (a checkpoint being reset), the read goes to the store's thread.
        """
        sql = "SELECT id, data FROM events WHERE sender_id = ? AND id >= ? ORDER BY id"
        try:
            rows: list[tuple[int, str]] = (
                self._reader().execute(sql, (sender_id, first_id)).fetchall()
            )
            return rows
        except sqlite3.OperationalError:
            return await self.run(
                lambda conn: conn.execute(sql, (sender_id, first_id)).fetchall()
            )

    async def session_rows(self, sender_id: str) -> list[tuple[int, str]]:
        """(id, data) of the current session's rows, in order."""
        return await self.run(lambda conn: _session_rows(conn, sender_id))

    async def all_data(self, sender_id: str) -> list[str]:
        sql = "SELECT data FROM events WHERE sender_id = ? ORDER BY id"
        rows = await self.run(lambda conn: conn.execute(sql, (sender_id,)).fetchall())
        return [row[0] for row in rows]

    async def senders(self) -> list[str]:
        rows = await self.run(
            lambda conn: conn.execute("SELECT DISTINCT sender_id FROM events").fetchall()
        )
        return [row[0] for row in rows]

    async def senders_older_than(self, cutoff_timestamp: float) -> list[str]:
        sql = "SELECT sender_id FROM events GROUP BY sender_id HAVING max(timestamp) < ?"
        rows = await self.run(lambda conn: conn.execute(sql, (cutoff_timestamp,)).fetchall())
        return [row[0] for row in rows]


def _write(conn: sqlite3.Connection, body: Callable[[], T]) -> T:
    """`body` in one write transaction (taken at once, so it never upgrades and deadlocks)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


class _Append:
    __slots__ = ("sender_id", "rows", "future")

    def __init__(
        self, sender_id: str, rows: Sequence[Row], future: asyncio.Future[_AppendResult]
    ) -> None:
        self.sender_id, self.rows, self.future = sender_id, rows, future


_AppendResult = tuple[int | None, list[tuple[int, str]]]


def _commit_group(
    group: Sequence[_Append], conn: sqlite3.Connection
) -> list[_AppendResult | Exception]:
    return _write(conn, lambda: _appends(conn, group))


def _appends(
    conn: sqlite3.Connection, group: Sequence[_Append]
) -> list[_AppendResult | Exception]:
    """Each append in its own savepoint, inside the caller's transaction."""
    outcomes: list[_AppendResult | Exception] = []
    for append in group:
        conn.execute("SAVEPOINT append")
        try:
            (previous,) = conn.execute(
                "SELECT max(id) FROM events WHERE sender_id = ?", (append.sender_id,)
            ).fetchone()
            outcomes.append((_int_or_none(previous), _insert(conn, append.rows)))
        except sqlite3.OperationalError:
            raise  # locked, disk full, I/O: the whole transaction fails
        except Exception as error:  # this append's rows only
            conn.execute("ROLLBACK TO append")
            outcomes.append(error)
        conn.execute("RELEASE append")
    return outcomes


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():  # its caller was cancelled: the outcome is the store's alone
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _insert(conn: sqlite3.Connection, rows: Sequence[Row]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        values = ", ".join([_INSERT_ONE] * len(chunk))
        params = [value for row in chunk for value in row]
        sql = f"INSERT INTO events ({_COLUMNS}) VALUES {values} RETURNING id"
        # RETURNING's order is unspecified; rowids are handed out in the order of VALUES.
        ids = sorted(row[0] for row in conn.execute(sql, params).fetchall())
        out.extend((row_id, row[5]) for row_id, row in zip(ids, chunk, strict=True))
    return out


def _session_rows(conn: sqlite3.Connection, sender_id: str) -> list[tuple[int, str]]:
    start_id = _session_start_id(conn, sender_id)
    if start_id is None:
        sql = "SELECT id, data FROM events WHERE sender_id = ? ORDER BY id"
        return conn.execute(sql, (sender_id,)).fetchall()
    sql = "SELECT id, data FROM events WHERE sender_id = ? AND id >= ? ORDER BY id"
    return conn.execute(sql, (sender_id, start_id)).fetchall()


def _session_start_id(conn: sqlite3.Connection, sender_id: str) -> int | None:
    """Row id where the current session starts (None: no session start stored)."""
    (last_action,) = conn.execute(
        "SELECT max(id) FROM events WHERE sender_id = ? AND type_name = 'action'"
        " AND action_name = ?",
        (sender_id, ACTION_SESSION_START),
    ).fetchone()
    (last_started,) = conn.execute(
        "SELECT max(id) FROM events WHERE sender_id = ? AND type_name = 'session_started'",
        (sender_id,),
    ).fetchone()
    if last_started is None or (last_action is not None and last_action > last_started):
        return _int_or_none(last_action)
    previous: Any = conn.execute(
        "SELECT id, type_name, action_name FROM events WHERE sender_id = ? AND id < ?"
        " ORDER BY id DESC LIMIT 1",
        (sender_id, last_started),
    ).fetchone()
    if previous is not None and previous[1] == "action" and previous[2] == ACTION_SESSION_START:
        return int(previous[0])
    return int(last_started)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
