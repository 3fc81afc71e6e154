"""The SQL tracker store's SQLite access: the stdlib driver on one thread of its own.

Each store operation is one function run on that thread (one hop from the event loop, where
the async driver needs four or five per statement). The thread owns one connection, so the
process's writers queue there instead of in SQLite's busy handler.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        """Appends rows in one transaction: the conversation's last row id before, and the
        (id, data) of each new row, in order."""

        def insert(conn: sqlite3.Connection) -> tuple[int | None, list[tuple[int, str]]]:
            (previous,) = conn.execute(
                "SELECT max(id) FROM events WHERE sender_id = ?", (sender_id,)
            ).fetchone()
            return _int_or_none(previous), _insert(conn, rows)

        return await self.run(lambda conn: _write(conn, lambda: insert(conn)))

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
