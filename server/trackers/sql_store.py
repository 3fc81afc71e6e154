"""The SQL tracker store (SQLite, PostgreSQL, MySQL/MariaDB) on Rasa's `events` table.

Saving appends rows in one transaction. Loading reads only the current session, and a
per-process cache then reads only rows with an id above the last one it saw.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import partial
from operator import itemgetter
from typing import Any, Protocol, TypeVar

import orjson
from sqlalchemy import (
    String,
    bindparam,
    collate,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.errors import (
    BotServerError,
    StoreFailed,
    StoreRefusedData,
    StoreUnavailable,
    first_line,
)
from server.json_values import OFF_LOOP_JSON_BYTES, loads_exact
from server.outages import OUTAGES
from server.tasks import waits_in_grace
from server.trackers.events import OFF_LOOP_EVENTS, off_loop_for
from server.trackers.freeing import free_off_loop, release_off_loop
from server.trackers.session_start import (
    ACTION_SESSION_START,
    latest_session_start,
    session_start_after,
)
from server.trackers.silence import SilenceWatch
from server.trackers.snapshot import Snapshot
from server.trackers.sql_engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    async_url,
    check_sqlite_file,
    check_sqlite_folder,
    create_engine,
    dependency,
    describe,
    ensure_postgres_database,
    mysql_connects,
    mysql_max_packet,
    mysql_oversize,
    sqlite_synchronous,
    statement_timeout_seconds,
    statement_took_too_long,
)
from server.trackers.sql_errors import REFUSED_DATA, UNAVAILABLE, SqlErrorKind, sql_error_kind
from server.trackers.sql_schema import (
    SESSION_ACTION_WHERE,
    SESSION_START_WHERE,
    SESSION_STARTED_WHERE,
    events_table,
    inspect_events,
    migrate,
    migrate_in_place,
    readable_as_it_is,
)
from server.trackers.sqlite_database import SqliteDatabase
from server.trackers.store import (
    DEFAULT_CACHE_EVENTS,
    NAME_COLUMN_LENGTH,
    Hold,
    cache_events_setting,
    holding,
    stored_events,
)
from server.trackers.weight import KIB, Heavy, Probation, after, evict_least_recent, extra_of

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Conversations deleted per statement by `delete_older_than` (a bound on bound parameters).
DELETE_BATCH = 500

Row = tuple[str, str | None, float | None, str | None, str | None, str]
IdData = tuple[int, str]
_ID_DATA = itemgetter(1)
_KIB_LESS_ONE = KIB - 1
# Rows holding more KiB of JSON than this are parsed in a thread, however few.
_OFF_LOOP_KIB = OFF_LOOP_JSON_BYTES // KIB


class _Database(Protocol):
    """The statements the store runs, one awaited call each."""

    async def ping(self) -> None: ...
    def read_mark(self) -> tuple[int, int] | None: ...
    async def insert(
        self, sender_id: str, rows: Sequence[Row], known: tuple[int | None, int] | None = None
    ) -> tuple[int | None, list[IdData] | None, int | None]: ...
    async def replace(self, sender_id: str, rows: Sequence[Row]) -> None: ...
    async def delete_senders(self, sender_ids: Sequence[str]) -> None: ...
    async def delete_stale(self, sender_ids: Sequence[str], cutoff_timestamp: float) -> int: ...
    async def rows_from(self, sender_id: str, first_id: int) -> list[IdData]: ...
    async def session_rows(self, sender_id: str) -> list[IdData]: ...
    async def all_data(self, sender_id: str) -> list[str]: ...
    async def all_data_of(
        self, sender_ids: Sequence[str], max_bytes: int | None = None
    ) -> tuple[list[tuple[str, str]], bool]:
        """The conversations' rows, each one's together and in id order, conversations in
        code point order, until about `max_bytes` (RowBudget; on MySQL, whole groups of
        conversations); and whether all of them came."""
        ...

    async def senders(self) -> list[str]: ...
    async def senders_older_than(
        self, cutoff_timestamp: float, after: str | None, limit: int
    ) -> list[str]: ...
    async def close(self) -> None: ...


class _Unknown(Enum):
    """Not looked for yet (a session start)."""

    UNKNOWN = "unknown"


UNKNOWN = _Unknown.UNKNOWN


@dataclass
class _CachedSession:
    events: list[dict[str, Any]]
    last_id: int
    # The raw JSON of row `last_id`: if a replace reused that id, the text differs.
    last_data: str
    # The database's epoch at which these were the session's rows (None: not known): while
    # it lasts, a load needs no read (see SqliteDatabase.epoch).
    synced: int | None = None
    # Its events of 1 KiB of JSON or more, and their weight beyond 1 each (see weight.py).
    heavy: Heavy | None = None
    extra: int = 0
    # The id of its first row: a replace of the conversation, by any process, gives every
    # row a new id (above the old ones), so this tells the sessions apart where their
    # events' count and last event are the same (the hot trackers' `generation`).
    first_id: int = 0

    def weigh(self, heavy: Heavy | None) -> None:
        """`heavy`: the heavy events among `events` (which it had none of before)."""
        if heavy:
            self.heavy = heavy
            self.extra = extra_of(heavy)


# How many conversations found without rows are kept for their first append.
_EMPTY_KEPT = 1024


class _SessionCache:
    """The current sessions this process saw last, bounded by their events' total weight
    (an event weighs 1, plus 1 per KiB of its JSON: see weight.py)."""

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self.weight = 0
        self._sessions: OrderedDict[str, _CachedSession] = OrderedDict()
        # Those read from the store and not loaded again since: they go first (weight.py).
        self._probation = Probation()
        # Conversations a load found without rows, and the epoch of that read: their first
        # append needs no SELECT for its previous row id while the epoch holds (a new
        # conversation's first turn). Taken by that append; dropped with any pop.
        self._empty: dict[str, int] = {}

    def get(self, sender_id: str) -> _CachedSession | None:
        return self._sessions.get(sender_id)

    def put(self, sender_id: str, session: _CachedSession, read: bool = False) -> None:
        """Keeps `session`, most recently used; `read`: read from the store (on probation
        until loaded again, see weight.py), not started by this process."""
        self.pop(sender_id)
        self._sessions[sender_id] = session
        self.weight += _session_weight(session)
        if read:
            self._probation.read(sender_id, _session_weight(session))
        self._evict()

    def pop(self, sender_id: str, only: _CachedSession | None = None) -> None:
        if self._empty:
            self._empty.pop(sender_id, None)
        session = self._sessions.get(sender_id)
        if session is not None and (only is None or session is only):
            del self._sessions[sender_id]
            self._probation.used(sender_id)
            self.weight -= _session_weight(session)
            _let_go(session)

    def found_empty(self, sender_id: str, epoch: int) -> None:
        """A load found no rows of `sender_id`, by a read current at `epoch`."""
        if len(self._empty) >= _EMPTY_KEPT:  # loads of conversations never appended to
            self._empty.clear()
        self._empty[sender_id] = epoch

    def take_empty(self, sender_id: str) -> int | None:
        """The epoch at which a load found no rows of `sender_id`, if it is still the last
        thing known of it (an append of it takes this)."""
        return self._empty.pop(sender_id, None) if self._empty else None

    def touch(self, sender_id: str) -> None:
        """`sender_id` was loaded from the cache: most recently used, off probation."""
        if sender_id in self._sessions:
            self._sessions.move_to_end(sender_id)
            if sender_id in self._probation.read_once:
                self._probation.used(sender_id)

    def extend(
        self,
        sender_id: str,
        session: _CachedSession,
        events: list[dict[str, Any]],
        rows: Sequence[IdData],
        found: int | None | _Unknown = UNKNOWN,
        heavy: Heavy | None = None,
    ) -> None:
        """Newer rows of a cached session (which may start a new session): `events` and
        their `rows`; `found`: where a session starts among `events` alone, when it was
        looked for already; `heavy`: the heavy events among `events` (see weight.py)."""
        before = len(session.events)
        weight = before + session.extra
        if heavy:
            heavy = [(before + position, extra) for position, extra in heavy]
            session.weigh(session.heavy + heavy if session.heavy else heavy)
        session.events.extend(events)
        if found is UNKNOWN:
            start = latest_session_start(session.events, search_from=before)
        else:
            start = session_start_after(session.events, before, found)
        if start:  # a new list: snapshots of the old one stay as they were
            # (A session start action may be the last of the rows seen before.)
            session.first_id = rows[start - before][0] if start >= before else session.last_id
            old = session.events
            session.events = old[start:]
            if len(old) > OFF_LOOP_EVENTS:
                release_off_loop(old)
            del old
            if session.heavy:
                session.heavy = after(session.heavy, start)
                session.extra = extra_of(session.heavy)
        session.last_id, session.last_data = rows[-1]
        if self._sessions.get(sender_id) is session:
            self.weight += len(session.events) + session.extra - weight  # (inline: each turn)
            self._sessions.move_to_end(sender_id)
            if self.weight > self.max_events:  # (no call on most turns)
                self._evict()

    def appended(
        self,
        sender_id: str,
        events: list[dict[str, Any]],
        written: tuple[int | None, list[IdData] | None, int | None],
        synced: bool,
        found: int | None | _Unknown = UNKNOWN,
        heavy: Heavy | None = None,
    ) -> int:
        """Rows this process just wrote: the cache follows when it was current. `synced`:
        no other append of the conversation is under way, so the epoch of this one holds.
        `found`: where a session starts among `events`, when it was looked for already.
        `heavy`: the heavy ones among `events` (see weight.py). Returns what `events`
        weigh beyond 1 each."""
        previous, rows, epoch = written
        if not rows:
            return extra_of(heavy) if heavy else 0
        session = self._sessions.get(sender_id)
        if session is not None and previous == session.last_id:
            self.extend(sender_id, session, events, rows, found, heavy)
            session.synced = epoch if synced else None
        elif session is None and previous is None:
            start = (latest_session_start(events) if found is UNKNOWN else found) or 0
            last_id, last_data = rows[-1]
            synced_at = epoch if synced else None
            session = _CachedSession(
                events[start:], last_id, last_data, synced_at, first_id=rows[start][0]
            )
            if heavy:
                session.weigh(after(heavy, start))
            self.put(sender_id, session)
        return extra_of(heavy) if heavy else 0

    def _evict(self) -> None:
        """The least recently used go while the weight is over the bound. The last one left
        stays unless its heavy events alone weigh more than the bound (a long conversation's
        turns read no rows, a few events of a KiB in it or not); if they do, its loads read
        the store."""
        self.weight = evict_least_recent(
            self._sessions,
            self.weight,
            self.max_events,
            _session_weight,
            _session_extra,
            _let_go,
            self._probation,
        )


def _snapshot(session: _CachedSession) -> Snapshot[dict[str, Any]]:
    """The session as a load hands it out: its `generation` is its first row's id."""
    return Snapshot(session.events, extra=session.extra, generation=session.first_id)


def _session_weight(session: _CachedSession) -> int:
    return len(session.events) + session.extra


def _session_extra(session: _CachedSession) -> int:
    return session.extra


def _let_go(session: _CachedSession) -> None:
    """A long session the cache no longer holds is freed off the loop (100,000 event dicts
    held it 14 ms), unless a snapshot of it is still being read."""
    if len(session.events) > OFF_LOOP_EVENTS:
        release_off_loop(session)


class SqlTrackerStore:
    """Tracker store on any SQL database: SQLite through the stdlib driver on a thread of its
    own, PostgreSQL through asyncpg's pool, MySQL/MariaDB through SQLAlchemy's async driver.
    SQLAlchemy creates and migrates the schema for all of them."""

    process_local = False

    def __init__(
        self,
        url: URL,
        login_db: str | None = None,
        cache_events: int = DEFAULT_CACHE_EVENTS,
        create_missing: bool = True,
        read_only: bool = False,
    ) -> None:
        """`create_missing`: a SQLite file that is not there is made (at the server's first
        start); without it (commands that read or prune what is stored) it is an error.
        `read_only` (`botserver export`): the schema is read as it is, never created nor
        migrated (nor a PostgreSQL `login_db`'s database created); a database without an
        `events` table holds no conversation."""
        self.url = url
        self.read_only = read_only
        self._dependency = dependency(url, "the tracker store")
        self._login_db = login_db
        # The schema's set-up gets an engine of its own, on the set-up loop (`migrate`);
        # PostgreSQL's runs unprepared (a pooler in transaction mode carries it), and the
        # store's own pool runs the turns. MySQL's turns run on this one; made for every
        # database, so its settings are checked at start.
        self._schema_engine = partial(
            create_engine, url, prepared=url.get_backend_name() != "postgresql"
        )
        self._engine = self._schema_engine()
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._migration: asyncio.Future[None] | None = None
        self._db: _Database
        # The driver's own "cannot reach the server" errors, beside SQLAlchemy's and OSError.
        self._unreachable_errors: tuple[type[BaseException], ...] = ()
        # An in-memory SQLite database is its engine's own: migrated on it (`_migrated`).
        self._in_memory = url.get_backend_name() == "sqlite" and url.database in (
            None,
            "",
            ":memory:",
        )
        # ... and so each process's own: `--workers N` refuses it as it does the in-memory store.
        self.process_local = self._in_memory
        if url.get_backend_name() == "sqlite" and not self._in_memory:
            check_sqlite_folder(str(url.database))
            if not create_missing:
                check_sqlite_file(str(url.database))
            self._db = SqliteDatabase(
                str(url.database),
                SQLITE_BUSY_TIMEOUT_MS,
                sqlite_synchronous(),
                read_only=read_only,
            )
        elif url.get_backend_name() == "postgresql":
            # asyncpg (about 12 MB) only for a PostgreSQL store.
            from server.trackers.postgres_database import UNAVAILABLE_ERRORS, PostgresDatabase

            self._db = PostgresDatabase(url)
            self._unreachable_errors = UNAVAILABLE_ERRORS
        else:
            self._db = _AsyncDatabase(self._engine, exact_senders=read_only)
        self._no_table = False  # read-only, and the database holds no `events` table
        self.cache_events = cache_events
        self._cache = _SessionCache(cache_events)
        # Appends under way per conversation: a read meanwhile may miss their rows.
        self._appending: dict[str, int] = {}
        # The last append of a conversation that is building its rows in a thread (or
        # waits behind one): done once its insert is over.
        self._queued: dict[str, asyncio.Future[None]] = {}

    # The `tracker_store:` keys read: Rasa's SQLTrackerStore arguments, and `cache_events`.
    SETTINGS = frozenset(
        {"dialect", "url", "host", "port", "db", "username", "password", "login_db", "query"}
        | {"cache_events"}
    )

    @classmethod
    def from_config(
        cls, config: dict[str, Any], create_missing: bool = True, read_only: bool = False
    ) -> SqlTrackerStore:
        """From a Rasa `tracker_store:` section of `type: sql`."""
        url = async_url(config, default_db="rasa.db")
        login_db = config.get("login_db")
        if login_db and url.get_backend_name() != "postgresql":
            logger.warning("tracker_store.login_db is only used with PostgreSQL; ignoring it")
            login_db = None
        return cls(url, login_db, cache_events_setting(config), create_missing, read_only)

    # -- lifecycle -------------------------------------------------------------------------

    async def _ensure_ready(self) -> None:
        if self._ready:
            return
        async with self._ready_lock:
            if self._ready:
                return
            with self._map_errors():
                try:
                    if self.read_only:
                        self._no_table = not readable_as_it_is(*await self._events_schema())
                        self._ready = True
                        return
                    if self._login_db:
                        await ensure_postgres_database(self.url, self._login_db)
                    await self._migrated()
                except RuntimeError as exc:  # the database holds another `events` table
                    raise StoreFailed(f"{describe(self.url)}: {exc}") from exc
            self._ready = True

    async def _events_schema(self) -> tuple[set[str] | None, str | None]:
        """The `events` table's columns and the schema's revision, read without writing."""
        if isinstance(self._db, SqliteDatabase):
            return await self._db.events_schema()
        engine = self._schema_engine()
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(inspect_events)
        finally:
            await engine.dispose()

    async def _migrated(self) -> None:
        """The schema's migration, which runs on the set-up loop: a caller that gives up (a
        readiness probe's timeout) does not stop it, so the next caller joins the attempt
        under way instead of queueing another behind it (one at a time per process): on a
        database host that never answers, each probe given up added a connect timeout to the
        wait of the next turn. One that succeeded after its callers gave up is not run again."""
        migration = self._migration
        if migration is not None and migration.done() and not migration.cancelled():
            if migration.exception() is None:
                return  # it succeeded after its callers gave up on it
        if (
            migration is None
            or migration.done()
            or migration.get_loop() is not asyncio.get_running_loop()
        ):
            migrating = (
                migrate_in_place(self._engine) if self._in_memory else migrate(self._schema_engine)
            )
            migration = self._migration = asyncio.ensure_future(migrating)
            # The error of an attempt whose callers all gave up is not logged at its end.
            migration.add_done_callback(lambda done: done.cancelled() or done.exception())
        await asyncio.shield(migration)

    async def ping(self) -> None:
        await self._ensure_ready()
        with self._map_errors():
            await self._db.ping()

    async def answers(self) -> None:
        """StoreUnavailable unless its database server answers (`SELECT 1`), the schema
        neither read nor set up: the start-up check tells a server away from a migration
        taking long. A database to create first (`login_db`) is asked in `ping` only."""
        if self._login_db and not self._ready:
            return
        with self._map_errors():
            await self._db.ping()

    def describe(self) -> str:
        """Where its database is, without credentials: "postgresql at db:5432/rasa"."""
        return describe(self.url)

    async def setup_done(self, timeout: float) -> bool:
        migration = self._migration
        if migration is None or migration.done():
            return True
        name = self._migration_name()
        if not waits_in_grace(logger, timeout, name, "it is given up at once"):
            return False
        await asyncio.wait([migration], timeout=timeout)
        return migration.done()

    def _migration_name(self) -> str:
        return f"the schema migration of {self._dependency}"

    async def close(self) -> None:
        migration = self._migration
        if migration is not None and not migration.done():
            # Its connection is dropped: PostgreSQL and SQLite undo it whole (one
            # transaction); every revision looks before it changes anything, so MySQL's,
            # whose changes commit one by one, goes on from where it stopped.
            logger.warning(
                "Stopping with %s unfinished: it is given up, and the next start runs it again",
                self._migration_name(),
            )
            migration.cancel()
            if migration.get_loop() is asyncio.get_running_loop():
                # Until its connection is gone (up to setup_loop.CLEAN_UP_SECONDS): before,
                # it outlived the close, its session still waiting for (or holding) the lock.
                await asyncio.wait([migration])
        await self._db.close()
        await self._engine.dispose()

    # -- writes ----------------------------------------------------------------------------

    async def append(self, sender_id: str, events: list[dict[str, Any]]) -> int | None:
        if not events:
            return 0
        ahead = self._queued.get(sender_id)
        if ahead is None and len(events) <= OFF_LOOP_EVENTS:
            # Converted here, with no await before the insert: a later append of the
            # conversation cannot overtake this one. The session start is found in the same
            # pass (the cache needs it), not by a second scan of the events.
            rows, start, heavy = _rows_and_start(sender_id, events)
            return await self._insert(sender_id, events, rows, start, heavy)
        # A bulk append builds its rows (and finds its session start) in a thread: 100,000
        # held the loop 50-60 ms. It takes its place in the conversation's queue first, so
        # that an append made meanwhile waits for its insert instead of overtaking it.
        place = asyncio.get_running_loop().create_future()
        self._queued[sender_id] = place
        try:
            if len(events) > OFF_LOOP_EVENTS:
                rows, start, heavy = await asyncio.to_thread(_rows_and_start, sender_id, events)
            else:
                rows, start, heavy = _rows_and_start(sender_id, events)
            if ahead is not None:
                await asyncio.wait([ahead])  # (its outcome is its own caller's)
            extra = await self._insert(sender_id, events, rows, start, heavy)
        finally:
            place.set_result(None)
            if self._queued.get(sender_id) is place:
                del self._queued[sender_id]
        await free_off_loop(rows)
        return extra

    async def _insert(
        self,
        sender_id: str,
        events: list[dict[str, Any]],
        rows: list[Row],
        start: int | None | _Unknown,
        heavy: Heavy | None,
    ) -> int:
        """Inserts the rows of `events`; `start`: where a session starts among them, when
        it was looked for already; `heavy`: the heavy ones among them (see weight.py).
        Returns what they weigh beyond 1 each."""
        if not self._ready:  # (no coroutine once ready: two of these a turn)
            await self._ensure_ready()
        cached = self._cache.get(sender_id)
        known: tuple[int | None, int] | None = None
        if cached is not None:
            synced = cached.synced
            if synced is not None and sender_id not in self._appending:
                known = (cached.last_id, synced)  # the database checks the epoch still holds
            cached.synced = None  # until this append's outcome is known (it may be cancelled)
        else:
            empty = self._cache.take_empty(sender_id)
            if empty is not None and sender_id not in self._appending:
                known = (None, empty)  # no rows at that epoch: the same check
        appending = self._appending
        appending[sender_id] = appending.get(sender_id, 0) + 1
        # What `with self._map_errors()` does, without its object and two calls (every turn).
        sent = OUTAGES.opened
        try:
            written = await self._db.insert(sender_id, rows, known)
        except BaseException as exc:
            _raise_mapped(exc, self.url, self._unreachable_errors, self._dependency)
            raise
        else:
            OUTAGES.reached(self._dependency, sent)
        finally:
            left = appending[sender_id] - 1
            alone = left == 0
            if alone:
                del appending[sender_id]
            else:
                appending[sender_id] = left
        return self._cache.appended(sender_id, events, written, alone, start, heavy)

    async def replace(self, sender_id: str, events: list[dict[str, Any]]) -> None:
        rows = await asyncio.to_thread(_rows, sender_id, events)
        self._cache.pop(sender_id)
        await self._ensure_ready()
        with self._map_errors():
            await self._db.replace(sender_id, rows)
        self._cache.pop(sender_id)
        await free_off_loop(rows)

    async def delete(self, sender_id: str) -> None:
        self._cache.pop(sender_id)
        await self._ensure_ready()
        with self._map_errors():
            await self._db.delete_senders([sender_id])
        self._cache.pop(sender_id)

    async def delete_older_than(
        self,
        cutoff_timestamp: float,
        hold: Hold | None = None,
        deleted_some: Callable[[int], None] | None = None,
    ) -> int:
        await self._ensure_ready()
        deleted, after = 0, None  # not "": an empty sender id sorts first
        while True:
            # One batch at a time, in sender id order: memory stays bounded however many.
            with self._map_errors():
                batch = await self._db.senders_older_than(cutoff_timestamp, after, DELETE_BATCH)
            if not batch:
                break
            # Looked at again as they are deleted: a turn may have come since the listing.
            async with holding(hold, batch) as idle:
                if held := await idle.still_held():
                    with self._map_errors():
                        gone = await self._db.delete_stale(held, cutoff_timestamp)
                    deleted += gone
                    if deleted_some is not None:
                        deleted_some(gone)
            for sender_id in batch:
                self._cache.pop(sender_id)
            after = batch[-1]
        return deleted

    # -- reads -----------------------------------------------------------------------------

    async def keys(self) -> list[str]:
        await self._ensure_ready()
        if self._no_table:
            return []
        with self._map_errors():
            return await self._db.senders()

    async def load_all(self, sender_id: str) -> list[dict[str, Any]] | None:
        await self._ensure_ready()
        if self._no_table:
            return None
        with self._map_errors():
            data = await self._db.all_data(sender_id)
        if not data:
            return None
        events = await _parse(sender_id, data)
        await free_off_loop(data)
        return events

    async def load_all_of(
        self, sender_ids: Sequence[str], max_bytes: int | None = None
    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        await self._ensure_ready()
        if self._no_table:
            return
        rest = sorted(sender_ids)
        while rest:
            with self._map_errors():
                rows, complete = await self._db.all_data_of(rest, max_bytes)
            texts: dict[str, list[str]] = {sender_id: [] for sender_id in rest}
            for sender_id, row_data in rows:
                # (Where migration 0003 found no binary collation that pads nothing, MySQL's
                # utf8mb4_bin also matches ids that differ in trailing spaces.)
                if sender_id in texts:
                    texts[sender_id].append(row_data)
            # Cut short: the ids up to the last one read are done (in the rows' order).
            last = None if complete or not rows else max(sender_id for sender_id, _ in rows)
            del rows
            done = rest if last is None else [i for i in rest if i <= last]
            rest = [] if last is None else rest[len(done) :]
            for sender_id in done:
                data = texts.pop(sender_id, None)
                if data:
                    yield sender_id, await _parse(sender_id, data)
            del texts

    async def load(self, sender_id: str) -> Sequence[dict[str, Any]] | None:
        if not self._ready:
            await self._ensure_ready()
        cached = self._cache.get(sender_id)
        if cached is not None:
            mark = self._db.read_mark()
            if mark is not None and cached.synced == mark[0]:  # nobody else wrote since
                self._cache.touch(sender_id)  # no read, and no coroutine for one (most turns)
                return Snapshot(cached.events, 0, None, cached.extra, cached.first_id)
            events = await self._load_newer(sender_id, cached, mark)
            if events is not None:
                return events
        return await self._load_session(sender_id)

    async def _load_newer(
        self, sender_id: str, cached: _CachedSession, mark: tuple[int, int] | None
    ) -> Sequence[dict[str, Any]] | None:
        """The cached session plus newer rows, read after `mark` (the database's read mark,
        whose epoch is not the session's); None if the cache no longer matches the DB."""
        seen_id = cached.last_id
        with self._map_errors():
            rows = await self._db.rows_from(sender_id, seen_id)
        if not rows or rows[0][0] != seen_id or rows[0][1] != cached.last_data:
            # Rows we saw are gone: replaced or deleted, maybe by another process.
            self._cache.pop(sender_id, only=cached)
            return None
        # Another load or append in this process may have advanced the cache meanwhile.
        new_rows = [row for row in rows if row[0] > cached.last_id]
        if new_rows:
            events, heavy = await _parse_rows(sender_id, new_rows)
            self._cache.extend(sender_id, cached, events, new_rows, heavy=heavy)
        cached.synced = self._read_at(sender_id, mark)
        self._cache.touch(sender_id)
        return _snapshot(cached)

    async def _load_session(self, sender_id: str) -> Sequence[dict[str, Any]] | None:
        mark = self._db.read_mark()
        with self._map_errors():
            rows = await self._db.session_rows(sender_id)
        if not rows:
            self._cache.pop(sender_id)
            synced = self._read_at(sender_id, mark)
            if synced is not None:
                self._cache.found_empty(sender_id, synced)
            return None
        synced = self._read_at(sender_id, mark)
        events, heavy = await _parse_rows(sender_id, rows)
        last_id, last_data = rows[-1]
        session = _CachedSession(events, last_id, last_data, synced, first_id=rows[0][0])
        session.weigh(heavy)
        self._cache.put(sender_id, session, read=True)
        if len(rows) > OFF_LOOP_EVENTS:
            # 200,000 rows (a tuple and a JSON string each) freed as this returned held the
            # loop at a conversation's first turn after a restart.
            release_off_loop(rows)
        return _snapshot(session)

    def generation(self, sender_id: str) -> int | None:
        """The `generation` of the session of `sender_id` this store holds (after its
        append: what its next load hands out, unless another process wrote meanwhile);
        None when it holds none."""
        session = self._cache.get(sender_id)
        return None if session is None else session.first_id

    def _read_at(self, sender_id: str, mark: tuple[int, int] | None) -> int | None:
        """The epoch of a read that started at `mark`: known if nobody, this store included,
        committed before it ended (a read that waited on the store's thread may have missed
        an append made meanwhile) and no append of this process was under way."""
        if mark is None or sender_id in self._appending or self._db.read_mark() != mark:
            return None
        return mark[0]

    def _map_errors(self) -> _ErrorMapper:
        # One per call, not one per store: it keeps the call's mark for the outage log.
        return _ErrorMapper(self.url, self._unreachable_errors, self._dependency)


class _ErrorMapper:
    """Maps the database's errors to ours, at the one place the store meets them: the
    database cannot be reached (StoreUnavailable, 503), it refuses the values themselves
    (StoreRefusedData, 400), or it failed on its own (StoreFailed, 500, logged)."""

    def __init__(
        self, url: URL, driver_errors: tuple[type[BaseException], ...], dependency: str
    ) -> None:
        self._url = url
        self._driver_errors = driver_errors
        self._dependency = dependency

    def __enter__(self) -> None:
        self._sent = OUTAGES.opened
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            OUTAGES.reached(self._dependency, self._sent)
            return
        _raise_mapped(exc, self._url, self._driver_errors, self._dependency)


def _raise_mapped(
    exc: BaseException, url: URL, driver_errors: tuple[type[BaseException], ...], dependency: str
) -> None:
    """Raises ours for a database error `exc` (from it); returns for any other exception."""
    where = f"The tracker store ({describe(url)})"
    if isinstance(exc, StoreUnavailable) and not exc.dependency:
        # Raised where the store is not known (a migration's lock): said as the others are.
        reason = str(exc)
        raise StoreUnavailable(f"{where} is unavailable: {reason}", dependency, reason) from exc
    if isinstance(exc, BotServerError):
        return
    if isinstance(exc, driver_errors):
        kind: SqlErrorKind | None = UNAVAILABLE
    else:
        kind = sql_error_kind(exc)
    if kind is None:
        return
    # A timeout has no message: its name then says what happened (before: an IndexError,
    # answered 500, where the database did not answer).
    reason = first_line(
        getattr(exc, "orig", None) or exc, default=f"{type(exc).__name__} (no answer)"
    )
    if kind is UNAVAILABLE:
        raise StoreUnavailable(f"{where} is unavailable: {reason}", dependency, reason) from exc
    if kind is REFUSED_DATA:
        # The client's own values: the answer names the database's reason, not where it is.
        raise StoreRefusedData(f"The tracker store cannot hold these events: {reason}") from exc
    raise StoreFailed(f"{where} failed: {reason}") from exc


class _AsyncDatabase:
    """The statements on SQLAlchemy's async engine: MySQL/MariaDB, and an in-memory SQLite.

    A call whose connection turns out to be gone (killed by the server, dropped by the
    network, found closed mid-statement) is made again once on a new connection: a read
    always, a write when the connection was lost before its COMMIT was sent (the server
    rolls an uncommitted transaction back with its connection, so the rows cannot be
    written twice). One lost during the COMMIT is not retried: it may have committed."""

    def __init__(self, engine: AsyncEngine, exact_senders: bool = False) -> None:
        """`exact_senders`: the listing tells ids apart by their bytes, as the table's
        collation may not (Rasa's MySQL table, which a read-only store does not migrate,
        holds `Ana` and `ana` as one id, and `ana ` too)."""
        self._engine = engine
        dialect = engine.dialect
        self._returning = bool(dialect.insert_returning and dialect.use_insertmanyvalues)
        self._mysql = dialect.name == "mysql"
        self._exact_senders = exact_senders and self._mysql  # (CAST AS BINARY: MySQL's)
        # The `sender_id` column's (character set, collation), read on the first exact read.
        self._sender_collation: tuple[str, str] | None = None
        self._max_packet: int | None = None  # MySQL's, read on the first write
        # (plain, returning) INSERTs, set on the first write: on MariaDB, Rasa's `events_seq`
        # gives the ids where Rasa made the table (see _ids_from_rasas_sequence).
        self._inserts: tuple[Any, Any] | None = (
            None if self._mysql else (_INSERT, _INSERT_RETURNING)
        )
        self._statement_timeout = statement_timeout_seconds()
        self._silence = SilenceWatch(mysql_connects(engine.url) if self._mysql else None)

    async def _run(
        self,
        operation: Callable[[AsyncConnection], Awaitable[T]],
        writes: bool = False,
        bounded: bool = True,
    ) -> T:
        """`operation(connection)` (in a transaction if it `writes`), retried once on a new
        connection as the class says. Both tries give up after `SQL_STATEMENT_TIMEOUT`
        together (TimeoutError) if `bounded`, and sooner (DatabaseSilent) when the database
        stops answering; SQLAlchemy then discards the connection."""
        deadline = asyncio.timeout(self._statement_timeout if bounded else None)
        try:
            async with deadline:
                with self._silence():
                    committing = [False]
                    try:
                        return await self._attempt(operation, writes, committing)
                    except DBAPIError as exc:
                        if committing[0] or not exc.connection_invalidated:
                            raise
                    # (SQLAlchemy invalidated the pool's older connections with this one.)
                    return await self._attempt(operation, writes, [False])
        except TimeoutError:
            if deadline.expired():
                raise statement_took_too_long(self._statement_timeout) from None
            raise

    async def _attempt(
        self,
        operation: Callable[[AsyncConnection], Awaitable[T]],
        writes: bool,
        committing: list[bool],
    ) -> T:
        async with self._engine.connect() as conn:
            if not writes:
                return await operation(conn)
            async with conn.begin():
                result = await operation(conn)
                committing[0] = True  # the block's end sends the COMMIT
            return result

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute(text("SELECT 1")))

    async def close(self) -> None:
        self._silence.close()

    def read_mark(self) -> tuple[int, int] | None:
        return None  # every load reads

    async def insert(
        self, sender_id: str, rows: Sequence[Row], known: tuple[int | None, int] | None = None
    ) -> tuple[int | None, list[IdData] | None, int | None]:
        params = [dict(zip(_COLUMNS, row, strict=True)) for row in rows]

        async def insert(conn: AsyncConnection) -> tuple[int | None, list[int] | None]:
            if self._mysql:
                await self._check_sizes(conn, rows)
            plain, returning = self._inserts or await self._ids_from_rasas_sequence(conn)
            if not self._returning:
                await self._insert_rows(conn, plain, params)
                return None, None
            previous = await conn.scalar(_LAST_ID, {"sender_id": sender_id})
            result = await conn.execute(returning, params)
            return previous, [row[0] for row in result]

        previous, ids = await self._run(insert, writes=True)
        if ids is None:
            return None, None, None
        rows_written = [(row_id, row[5]) for row_id, row in zip(ids, rows, strict=True)]
        return previous, rows_written, None

    async def _ids_from_rasas_sequence(self, conn: AsyncConnection) -> tuple[Any, Any]:
        """The INSERTs of this database. On MariaDB 10.3 and later Rasa's model gives `id` a
        sequence, `events_seq`, and Rasa's SQLAlchemy takes every row's id from it, not from
        AUTO_INCREMENT: rows botserver wrote with AUTO_INCREMENT ids were handed out again, and
        Rasa's saves failed ("Duplicate entry for key 'PRIMARY'"), beside botserver or after
        going back to Rasa. Where the sequence exists our ids come from it too, and it is
        first moved past the ids already used (an earlier botserver's rows)."""
        inserts = (_INSERT, _INSERT_RETURNING)
        if await conn.scalar(_RASA_SEQUENCE_EXISTS):
            last = await conn.scalar(select(func.max(_C.id)))
            if last is not None:  # (SETVAL takes a number, not a query; it never goes back)
                await conn.execute(text(f"SELECT SETVAL(events_seq, {int(last)})"))
            inserts = (_INSERT_FROM_SEQUENCE, _INSERT_FROM_SEQUENCE_RETURNING)
        # Only now: a look cut short (a timeout, a lost connection) is made again by the next
        # write, rather than leaving this process on AUTO_INCREMENT ids for good.
        self._inserts = inserts
        return inserts

    async def _insert_rows(
        self, conn: AsyncConnection, plain: Any, params: list[dict[str, Any]]
    ) -> None:
        """The rows, in as few statements as the driver folds an executemany into. aiomysql
        folds one into a multi-row INSERT only where its VALUES hold parameters alone: with
        `NEXT VALUE FOR events_seq` there it sent one INSERT a row, so those are made
        multi-row here, each under half of max_allowed_packet (aiomysql keeps to ~1 MB)."""
        if plain is not _INSERT_FROM_SEQUENCE or len(params) == 1:
            await conn.execute(plain, params)
            return
        budget = (self._max_packet or _SEQUENCE_BATCH_BYTES) // 2
        batch: list[dict[str, Any]] = []
        size = 0
        for row in params:
            # 4 bytes a character, escaped, for every text column; and room for the rest.
            row_size = 8 * sum(len(value) for value in row.values() if isinstance(value, str))
            if batch and size + row_size + 100 > budget:
                await conn.execute(insert(events_table).values(batch))
                batch, size = [], 0
            batch.append({**row, "id": _NEXT_ID})
            size += row_size + 100
        await conn.execute(insert(events_table).values(batch))

    async def _check_sizes(self, conn: AsyncConnection, rows: Sequence[Row]) -> None:
        """Refuses an event larger than MySQL takes: it would drop the connection (503 for
        ever) instead of refusing the statement."""
        if self._max_packet is None:
            self._max_packet = await mysql_max_packet(conn)
        for row in rows:
            size = mysql_oversize(row[5], self._max_packet)
            if size is not None:
                raise StoreRefusedData(
                    f"The tracker store cannot hold these events: a '{row[1]}' event takes "
                    f"{size:,} bytes, more than the database takes in one statement "
                    f"({self._max_packet:,} bytes, its max_allowed_packet)."
                )

    async def replace(self, sender_id: str, rows: Sequence[Row]) -> None:
        async def replace(conn: AsyncConnection) -> None:
            if self._mysql:
                await self._check_sizes(conn, rows)
            await conn.execute(delete(events_table).where(events_table.c.sender_id == sender_id))
            if rows:
                plain, _ = self._inserts or await self._ids_from_rasas_sequence(conn)
                params = [dict(zip(_COLUMNS, row, strict=True)) for row in rows]
                await self._insert_rows(conn, plain, params)

        await self._run(replace, writes=True)

    async def delete_senders(self, sender_ids: Sequence[str]) -> None:
        statement = delete(events_table).where(events_table.c.sender_id.in_(list(sender_ids)))
        await self._run(lambda conn: conn.execute(statement), writes=True)

    async def delete_stale(self, sender_ids: Sequence[str], cutoff_timestamp: float) -> int:
        """Deletes those of `sender_ids` whose newest event is still older than the cutoff.

        The locking read holds (InnoDB next-key locks) every row of these conversations and
        the gap after each one's last row, so a turn appending meanwhile waits for the delete
        instead of having its rows deleted under it; and only rows up to the last id read are
        deleted, which keeps a row appended meanwhile under READ COMMITTED (no gap locks)."""

        async def delete_stale(conn: AsyncConnection) -> int:
            result = await conn.execute(
                select(_C.sender_id, _C.timestamp, _C.id)
                .where(_C.sender_id.in_(list(sender_ids)))
                .with_for_update()
            )
            rows = result.all()
            stale = _stale_senders([(row[0], row[1]) for row in rows], cutoff_timestamp)
            if stale:
                last_read = max(row[2] for row in rows)
                await conn.execute(
                    delete(events_table).where(_C.sender_id.in_(stale), _C.id <= last_read)
                )
            return len(stale)

        return await self._run(delete_stale, writes=True)

    async def rows_from(self, sender_id: str, first_id: int) -> list[IdData]:
        params = {"sender_id": sender_id, "first_id": first_id}
        return await self._run(lambda conn: _id_data(conn, _ROWS_FROM, params))

    async def session_rows(self, sender_id: str) -> list[IdData]:
        async def session_rows(conn: AsyncConnection) -> list[IdData]:
            start_id = await _session_start_id(conn, sender_id)
            params = {"sender_id": sender_id, "first_id": start_id or 0}
            return await _id_data(conn, _ROWS_FROM, params)

        return await self._run(session_rows)

    async def all_data(self, sender_id: str) -> list[str]:
        async def all_data(conn: AsyncConnection) -> list[str]:
            chosen = events_table.c.sender_id == sender_id
            if self._exact_senders:
                (held,) = await self._as_column_holds(conn, [sender_id])
                chosen = (_C.sender_id == held) & (_HEX_SENDER_ID == _utf8_hex(sender_id))
            query = select(_C.data).where(chosen).order_by(_C.id)
            return await _first_column(conn, query)

        return await self._run(all_data)

    async def _as_column_holds(self, conn: AsyncConnection, sender_ids: Sequence[str]) -> list[Any]:
        """The ids, to match `sender_id` by its index, in the column's own character set
        and collation (an id it cannot hold becomes one with `?`, which the exact match
        then leaves out): Rasa's MySQL table in latin1 cannot hold `中`, and MySQL refused
        a query comparing the column with it ('Illegal mix of collations'), which stopped
        an export asking for it among others."""
        if self._sender_collation is None:
            row = (await conn.execute(_SENDER_COLLATION)).one_or_none()
            # (A binary column's are NULL: before, 'None' was taken for a character set.)
            named = row is not None and all(
                n is not None and re.fullmatch(r"\w+", str(n)) for n in row
            )
            self._sender_collation = (str(row[0]), str(row[1])) if named and row else ("", "")
        charset, collation = self._sender_collation
        if not charset:  # (a binary column, or none found: compared as given)
            return [literal(i, String) for i in sender_ids]
        return [
            collate(
                func.convert(literal(i, String).op("USING")(literal_column(charset))), collation
            )
            for i in sender_ids
        ]

    async def all_data_of(
        self, sender_ids: Sequence[str], max_bytes: int | None = None
    ) -> tuple[list[tuple[str, str]], bool]:
        # (ix_events_sender_id_id's order, no sort, where the column compares bytes, as
        # migration 0003 makes it; else by bytes, so that ids one in the collation are apart.)
        key: Any = _BINARY_SENDER_ID if self._exact_senders else _C.sender_id

        async def of(conn: AsyncConnection, group: list[str]) -> Any:
            chosen = _C.sender_id.in_(group)  # (by the index)
            if self._exact_senders:
                # Only theirs: the collation's match of `ana` holds `Ana`'s and `ana `'s
                # rows, which took the budget (and a read of `ana` alone went round for ever).
                held = await self._as_column_holds(conn, group)
                chosen = _C.sender_id.in_(held) & _HEX_SENDER_ID.in_([_utf8_hex(i) for i in group])
            return select(_C.sender_id, _C.data).where(chosen).order_by(key, _C.id)

        async def read(conn: AsyncConnection) -> tuple[list[tuple[str, str]], bool]:
            # Whole conversations a query, as many as the budget has room for at their mean
            # size so far (one first): each row is gone through once. (Pages of rows, each
            # after the last row read, went through the batch's rows again each page.)
            rest = sorted(sender_ids)  # (the key's order: code points, as bytes)
            rows: list[tuple[str, str]] = []
            size = conversations = count = 0
            while rest:
                if max_bytes is None:
                    count = len(rest)
                elif rows and size >= max_bytes:
                    return rows, False
                elif not rows:  # (none of those asked for had rows: twice as many)
                    count = max(1, 2 * count)
                else:
                    count = max(1, (max_bytes - size) * conversations // max(1, size))
                group, rest = rest[:count], rest[count:]
                for held, data in await conn.execute(await of(conn, group)):
                    sender_id = _id_text(held)
                    if not rows or rows[-1][0] != sender_id:
                        conversations += 1
                    rows.append((sender_id, data))
                    size += len(data)
            return rows, True

        # (Unbounded, as the listings: a batch of long conversations may take a while.)
        return await self._run(read, bounded=False)

    async def senders(self) -> list[str]:
        query = select(events_table.c.sender_id).distinct()
        if self._exact_senders:
            # (The column grouped on too: allowed under ONLY_FULL_GROUP_BY.)
            exactly = _BINARY_SENDER_ID
            query = select(_C.sender_id).group_by(_C.sender_id, exactly)
        held = await self._run(lambda conn: _first_column(conn, query), bounded=False)
        return [_id_text(i) for i in held]

    async def senders_older_than(
        self, cutoff_timestamp: float, after: str | None, limit: int
    ) -> list[str]:
        latest = func.max(events_table.c.timestamp)
        query = select(_C.sender_id)
        if after is not None:
            query = query.where(_C.sender_id > after)
        query = (
            query.group_by(_C.sender_id)
            .having(latest < cutoff_timestamp)
            .order_by(_C.sender_id)
            .limit(limit)
        )
        return await self._run(lambda conn: _first_column(conn, query), bounded=False)


async def _id_data(conn: AsyncConnection, query: Any, params: dict[str, Any]) -> list[IdData]:
    result = await conn.execute(query, params)
    return [(row[0], row[1]) for row in result]


async def _first_column(conn: AsyncConnection, query: Any) -> list[Any]:
    return [row[0] for row in await conn.execute(query)]


# Statements of the hot path, built once.
_C = events_table.c
# The id as its UTF-8 bytes (in the order Python sorts ids in), whatever the column's
# charset: Rasa's MySQL table, which a read-only store does not migrate, compares ids by a
# collation that takes `Ana`, `ana` and `ana ` for one. Matched in hex (`_utf8_hex`: the same
# text in any connection charset): as the column's own bytes, a latin1 table's `é` (E9)
# matched no id sent (C3 A9), and its conversation was left out of an export without a word.
_BINARY_SENDER_ID: Any = literal_column("CAST(CONVERT(sender_id USING utf8mb4) AS BINARY)")
_HEX_SENDER_ID: Any = literal_column("HEX(CONVERT(sender_id USING utf8mb4))")


# The character set and collation of the `sender_id` column (see _as_column_holds).
_SENDER_COLLATION = text(
    "SELECT CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS"
    " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'events' AND COLUMN_NAME = 'sender_id'"
)


def _id_text(held: str | bytes) -> str:
    """An id as the column holds it, as text: one in the `binary` character set (VARBINARY)
    gives its bytes, which Rasa's driver wrote as UTF-8. Bytes that are no UTF-8 are refused,
    naming the column (before: an AttributeError on the bytes, a traceback)."""
    if isinstance(held, str):
        return held
    try:
        return held.decode("utf-8")
    except UnicodeDecodeError:
        raise StoreFailed(
            f"events.sender_id holds an id that is not UTF-8 ({held[:60]!r}), which Rasa"
            " never writes: the column's character set is binary, and its bytes are no text"
        ) from None


def _utf8_hex(sender_id: str) -> str:
    """An id as `_HEX_SENDER_ID` holds it."""
    return sender_id.encode("utf-8").hex().upper()


_COLUMNS = ("sender_id", "type_name", "timestamp", "intent_name", "action_name", "data")
_INSERT = insert(events_table)
_INSERT_RETURNING = insert(events_table).returning(_C.id, sort_by_parameter_order=True)
# MariaDB, on a table Rasa made: ids from its sequence (_AsyncDatabase._ids_from_rasas_sequence).
_NEXT_ID = text("NEXT VALUE FOR events_seq")
_INSERT_FROM_SEQUENCE = insert(events_table).values(id=_NEXT_ID)
_SEQUENCE_BATCH_BYTES = 2_048_000  # (where max_allowed_packet was not read: half of it)
_INSERT_FROM_SEQUENCE_RETURNING = _INSERT_FROM_SEQUENCE.returning(
    _C.id, sort_by_parameter_order=True
)
_RASA_SEQUENCE_EXISTS = text(
    "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
    " AND TABLE_NAME = 'events_seq' AND TABLE_TYPE = 'SEQUENCE'"
)
_LAST_ID = select(func.max(_C.id)).where(_C.sender_id == bindparam("sender_id"))
_ROWS_FROM = (
    select(_C.id, _C.data)
    .where(_C.sender_id == bindparam("sender_id"), _C.id >= bindparam("first_id"))
    .order_by(_C.id)
)
# MySQL's (through its full index; SQLite walks back instead, _LAST_SESSION_START), with
# literal conditions, as every dialect's session queries are built (see sql_schema). The
# action's name is compared as bytes too: the collation of Rasa's `action_name` ignores case
# and trailing spaces, and an action `Action_Session_Start ` started a session there alone.
# The index is read backward from the conversation's last such entry to the first exact one
# (the one entry max() read, unless an action of such a name came after it).
_LAST_SESSION_ACTION = (
    select(_C.id)
    .where(
        _C.sender_id == bindparam("sender_id"),
        text(SESSION_ACTION_WHERE),
        text(f"CAST(action_name AS BINARY) = '{ACTION_SESSION_START}'"),
    )
    .order_by(_C.id.desc())
    .limit(1)
)
_LAST_SESSION_STARTED = select(func.max(_C.id)).where(
    _C.sender_id == bindparam("sender_id"), text(SESSION_STARTED_WHERE)
)
_LAST_SESSION_START = (
    select(_C.id, _C.type_name)
    .where(_C.sender_id == bindparam("sender_id"), text(SESSION_START_WHERE))
    .order_by(_C.id.desc())
    .limit(1)
)
_ROW_BEFORE = (
    select(_C.id, _C.type_name, _C.action_name)
    .where(_C.sender_id == bindparam("sender_id"), _C.id < bindparam("before"))
    .order_by(_C.id.desc())
    .limit(1)
)


async def _session_start_id(conn: AsyncConnection, sender_id: str) -> int | None:
    """Row id where the current session starts, in a few index seeks (None: no session)."""
    key = {"sender_id": sender_id}
    if conn.dialect.name == "sqlite":  # no index of them (revision 0005): one walk back
        last = (await conn.execute(_LAST_SESSION_START, key)).first()
        if last is None:
            return None
        last_started = int(last[0])
        if last[1] != "session_started":
            return last_started
    else:
        last_action = await conn.scalar(_LAST_SESSION_ACTION, key)
        last_started = await conn.scalar(_LAST_SESSION_STARTED, key)
        if last_started is None or (last_action is not None and last_action > last_started):
            return last_action
    previous = (await conn.execute(_ROW_BEFORE, {**key, "before": last_started})).first()
    if previous is not None and previous[1] == "action" and previous[2] == ACTION_SESSION_START:
        return int(previous[0])
    return int(last_started)


def _stale_senders(rows: Any, cutoff_timestamp: float) -> list[str]:
    """The senders among (sender_id, timestamp) rows whose newest timestamp is older than
    the cutoff (NULL timestamps aside, as in max())."""
    newest: dict[str, float | None] = {}
    for sender_id, timestamp in rows:
        known = newest.get(sender_id)
        if timestamp is not None and (known is None or timestamp > known):
            newest[sender_id] = timestamp
        elif sender_id not in newest:
            newest[sender_id] = None
    return [
        sender_id
        for sender_id, latest in newest.items()
        if latest is not None and latest < cutoff_timestamp
    ]


def _rows(sender_id: str, events: list[dict[str, Any]]) -> list[Row]:
    return _rows_and_start(sender_id, events)[0]


def _rows_and_start(
    sender_id: str, events: list[dict[str, Any]]
) -> tuple[list[Row], int | None, Heavy | None]:
    """Rasa's row of each event (the columns it indexes, then the JSON), where the last
    session start among `events` is (`latest_session_start(events)`), and the heavy events
    (see weight.py), in one pass: every turn's append converts its five or so events here."""
    rows: list[Row] = []
    start: int | None = None
    heavy: Heavy | None = None
    starts_before = False  # whether the event before is an action_session_start
    for index, event in enumerate(events):
        type_name = event.get("event")
        name = event.get("name")
        intent_name = None
        if type_name == "action":
            if name == ACTION_SESSION_START:
                start = index
                starts_before = True
            else:
                starts_before = False
        else:
            if type_name == "user":
                intent = (event.get("parse_data") or {}).get("intent") or {}
                intent_name = intent.get("name")
                if not isinstance(intent_name, str):
                    intent_name = None
                elif len(intent_name) > NAME_COLUMN_LENGTH or "\x00" in intent_name:
                    intent_name = _fit(intent_name)
            elif type_name == "session_started":
                start = index - 1 if starts_before else index
            starts_before = False
        if name is None:  # most events: no call for the tests below
            pass
        elif not isinstance(name, str):
            name = None
        elif len(name) > NAME_COLUMN_LENGTH or "\x00" in name:
            name = _fit(name)
        timestamp = event.get("timestamp")
        if type(timestamp) is not float:
            timestamp = _column_timestamp(timestamp)
        try:  # `_event_json`'s first try, without its call
            data = orjson.dumps(event).decode()
        except TypeError:
            data = _event_json(event)
        if data[_KIB_LESS_ONE:]:  # KIB characters or more (a slice: no call for the rest)
            if heavy is None:
                heavy = []
            heavy.append((index, len(data) // KIB))
        rows.append((sender_id, type_name, timestamp, intent_name, name, data))
    return rows, start, heavy


def _column_timestamp(timestamp: Any) -> float | None:
    """The `timestamp` column's value (a double; it only serves retention): an integer
    beyond a double's range (the event's JSON keeps it exactly) is not in the column, where
    SQLite and PostgreSQL refused the whole append."""
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        try:
            return float(timestamp)
        except OverflowError:
            return None
    return None


def _fit(name: str) -> str:
    """A name as its column can hold it, on every dialect (PostgreSQL's text types cannot
    hold a NUL). The columns only index the rows (the session start is found by them); the
    event's JSON keeps the name as it was."""
    return name.replace("\x00", "")[:NAME_COLUMN_LENGTH]


def _event_json(event: dict[str, Any]) -> str:
    """The `data` column: compact JSON (orjson, several times faster than json.dumps).

    orjson refuses keys other than str unless told (OPT_NON_STR_KEYS), and told it writes
    every dict more slowly (a moodbot user event 3.1 against 2.4 us): such keys are rare, so
    an event is tried without it first; with only str keys both write the same bytes."""
    try:
        return orjson.dumps(event).decode()
    except TypeError:
        pass
    try:
        return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # what orjson refuses (integers over 64 bits): json writes it
        return json.dumps(event)


def _heavy_id_data(rows: Sequence[IdData]) -> Heavy | None:
    """The heavy events among `(id, data)` rows read (see weight.py)."""
    heavy = [(i, len(data) // KIB) for i, (_, data) in enumerate(rows) if data[_KIB_LESS_ONE:]]
    return heavy or None


def _load_json(data: str) -> Any:
    return loads_exact(data, constants=True)


async def _parse_rows(
    sender_id: str, rows: Sequence[IdData]
) -> tuple[list[dict[str, Any]], Heavy | None]:
    """The events of `rows`, and the heavy ones among them: many rows weighed in the same
    thread as they are parsed (weighed on the loop, a first load of 200,000 rows held it
    9 ms); a few weighed here, and parsed in a thread when they are big (a session heavier
    than the cache is read at every load: a 12 MB row parsed on the loop held it 39 ms, each
    of its turns)."""
    if len(rows) > OFF_LOOP_EVENTS:
        return await asyncio.to_thread(_events_and_heavy, sender_id, rows)
    heavy = _heavy_id_data(rows)
    if heavy is not None and extra_of(heavy) > _OFF_LOOP_KIB:
        texts = list(map(_ID_DATA, rows))
        return await asyncio.to_thread(stored_events, sender_id, texts, _load_json), heavy
    return stored_events(sender_id, map(_ID_DATA, rows), _load_json), heavy


def _events_and_heavy(
    sender_id: str, rows: Sequence[IdData]
) -> tuple[list[dict[str, Any]], Heavy | None]:
    events = stored_events(sender_id, map(_ID_DATA, rows), _load_json)
    return events, _heavy_id_data(rows)


async def _parse(sender_id: str, texts: Sequence[str]) -> list[dict[str, Any]]:
    """The events of a conversation's data, parsed off the event loop when they are many
    (see `stored_events`)."""
    return await off_loop_for(texts, stored_events, sender_id, texts, _load_json)
