"""The SQL tracker store (SQLite, PostgreSQL, MySQL/MariaDB) on Rasa's `events` table.

Saving appends rows in one transaction. Loading reads only the current session, and a
per-process cache then reads only rows with an id above the last one it saw.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from server.errors import InvalidConfig, StoreUnavailable
from server.trackers.session_start import ACTION_SESSION_START, latest_session_start
from server.trackers.sql_engine import (
    async_url,
    create_engine,
    describe,
    ensure_postgres_database,
)
from server.trackers.sql_schema import events_table, migrate

logger = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 10_000
DELETE_BATCH = 500
# Parsing more rows than this at once moves off the event loop.
PARSE_IN_THREAD_ABOVE = 500


@dataclass
class _CachedSession:
    events: list[dict[str, Any]]
    last_id: int
    # The raw JSON of row `last_id`: if a replace reused that id, the text differs.
    last_data: str


class SqlTrackerStore:
    """Tracker store on any SQL database SQLAlchemy reaches with an async driver."""

    process_local = False

    def __init__(
        self, url: URL, login_db: str | None = None, cache_size: int = DEFAULT_CACHE_SIZE
    ) -> None:
        self.url = url
        self._login_db = login_db
        self._engine = create_engine(url)
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._cache: OrderedDict[str, _CachedSession] = OrderedDict()
        self._cache_size = cache_size
        # SQLite has one writer at a time: writers of one process queue here instead of
        # sleeping in SQLite's busy handler, whose back-off starves some of them for seconds.
        self._write_lock = asyncio.Lock() if url.get_backend_name() == "sqlite" else None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SqlTrackerStore:
        """From a Rasa `tracker_store:` section of `type: sql`."""
        url = async_url(config, default_db="rasa.db")
        login_db = config.get("login_db")
        if login_db and url.get_backend_name() != "postgresql":
            logger.warning("tracker_store.login_db is only used with PostgreSQL; ignoring it")
            login_db = None
        cache_size = int(config.get("cache_size", DEFAULT_CACHE_SIZE))
        return cls(url, login_db=login_db, cache_size=cache_size)

    # -- lifecycle -------------------------------------------------------------------------

    async def _ensure_ready(self) -> None:
        if self._ready:
            return
        async with self._ready_lock:
            if self._ready:
                return
            with self._map_errors():
                try:
                    if self._login_db:
                        await ensure_postgres_database(self.url, self._login_db)
                    await migrate(self._engine)
                except RuntimeError as exc:
                    raise InvalidConfig(f"{describe(self.url)}: {exc}") from exc
            self._ready = True

    async def ping(self) -> None:
        await self._ensure_ready()
        async with self._connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self._engine.dispose()

    # -- writes ----------------------------------------------------------------------------

    async def append(self, sender_id: str, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        rows = [_row(sender_id, event) for event in events]
        async with self._connect(begin=True) as conn:
            await conn.execute(insert(events_table), rows)

    async def replace(self, sender_id: str, events: list[dict[str, Any]]) -> None:
        rows = [_row(sender_id, event) for event in events]
        self._cache.pop(sender_id, None)
        async with self._connect(begin=True) as conn:
            await conn.execute(delete(events_table).where(events_table.c.sender_id == sender_id))
            if rows:
                await conn.execute(insert(events_table), rows)
        self._cache.pop(sender_id, None)

    async def delete(self, sender_id: str) -> None:
        self._cache.pop(sender_id, None)
        async with self._connect(begin=True) as conn:
            await conn.execute(delete(events_table).where(events_table.c.sender_id == sender_id))
        self._cache.pop(sender_id, None)

    async def delete_older_than(self, cutoff_timestamp: float) -> int:
        latest = func.max(events_table.c.timestamp)
        async with self._connect() as conn:
            result = await conn.execute(
                select(events_table.c.sender_id)
                .group_by(events_table.c.sender_id)
                .having(latest < cutoff_timestamp)
            )
            stale = [row[0] for row in result]
        for start in range(0, len(stale), DELETE_BATCH):
            batch = stale[start : start + DELETE_BATCH]
            async with self._connect(begin=True) as conn:
                await conn.execute(delete(events_table).where(events_table.c.sender_id.in_(batch)))
            for sender_id in batch:
                self._cache.pop(sender_id, None)
        return len(stale)

    # -- reads -----------------------------------------------------------------------------

    async def keys(self) -> list[str]:
        async with self._connect() as conn:
            result = await conn.execute(select(events_table.c.sender_id).distinct())
            return [row[0] for row in result]

    async def load_all(self, sender_id: str) -> list[dict[str, Any]] | None:
        async with self._connect() as conn:
            result = await conn.execute(
                select(events_table.c.data)
                .where(events_table.c.sender_id == sender_id)
                .order_by(events_table.c.id)
            )
            data = [row[0] for row in result]
        if not data:
            return None
        return await _parse(data)

    async def load(self, sender_id: str) -> list[dict[str, Any]] | None:
        cached = self._cache.get(sender_id)
        if cached is not None:
            events = await self._load_newer(sender_id, cached)
            if events is not None:
                return events
        return await self._load_session(sender_id)

    async def _load_newer(
        self, sender_id: str, cached: _CachedSession
    ) -> list[dict[str, Any]] | None:
        """The cached session plus newer rows; None if the cache no longer matches the DB."""
        seen_id = cached.last_id
        async with self._connect() as conn:
            result = await conn.execute(
                select(events_table.c.id, events_table.c.data)
                .where(events_table.c.sender_id == sender_id, events_table.c.id >= seen_id)
                .order_by(events_table.c.id)
            )
            rows = result.all()
        if not rows or rows[0][0] != seen_id or rows[0][1] != cached.last_data:
            # Rows we saw are gone: replaced or deleted, maybe by another process.
            if self._cache.get(sender_id) is cached:
                del self._cache[sender_id]
            return None
        # Another load in this process may have advanced the cache while we awaited.
        new_rows = [row for row in rows if row[0] > cached.last_id]
        if new_rows:
            base = len(cached.events)
            cached.events.extend(await _parse([row[1] for row in new_rows]))
            start = latest_session_start(cached.events, search_from=base)
            if start:
                del cached.events[:start]
            cached.last_id, cached.last_data = new_rows[-1][0], new_rows[-1][1]
        if sender_id in self._cache:
            self._cache.move_to_end(sender_id)
        return list(cached.events)

    async def _load_session(self, sender_id: str) -> list[dict[str, Any]] | None:
        async with self._connect() as conn:
            start_id = await _session_start_id(conn, sender_id)
            query = select(events_table.c.id, events_table.c.data).where(
                events_table.c.sender_id == sender_id
            )
            if start_id is not None:
                query = query.where(events_table.c.id >= start_id)
            rows = (await conn.execute(query.order_by(events_table.c.id))).all()
        if not rows:
            self._cache.pop(sender_id, None)
            return None
        events = await _parse([row[1] for row in rows])
        self._cache[sender_id] = _CachedSession(list(events), rows[-1][0], rows[-1][1])
        self._cache.move_to_end(sender_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return events

    # -- connections and errors ------------------------------------------------------------

    @asynccontextmanager
    async def _connect(self, begin: bool = False) -> AsyncIterator[AsyncConnection]:
        await self._ensure_ready()
        with self._map_errors():
            if begin and self._write_lock is not None:
                async with self._write_lock, self._engine.begin() as conn:
                    yield conn
            elif begin:
                async with self._engine.begin() as conn:
                    yield conn
            else:
                async with self._engine.connect() as conn:
                    yield conn

    def _map_errors(self) -> _ErrorMapper:
        return _ErrorMapper(self.url)


class _ErrorMapper:
    """Turns "the database cannot be reached" errors into StoreUnavailable."""

    def __init__(self, url: URL) -> None:
        self._url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return
        unreachable = isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError)
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            unreachable = True
        if unreachable:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
            raise StoreUnavailable(
                f"The tracker store ({describe(self._url)}) is unavailable: {reason}"
            ) from exc


async def _session_start_id(conn: AsyncConnection, sender_id: str) -> int | None:
    """Row id where the current session starts, in a few index seeks (None: no session)."""
    c = events_table.c
    last_action = await conn.scalar(
        select(func.max(c.id)).where(
            c.sender_id == sender_id,
            c.type_name == "action",
            c.action_name == ACTION_SESSION_START,
        )
    )
    last_started = await conn.scalar(
        select(func.max(c.id)).where(c.sender_id == sender_id, c.type_name == "session_started")
    )
    if last_started is None or (last_action is not None and last_action > last_started):
        return last_action
    previous = (
        await conn.execute(
            select(c.id, c.type_name, c.action_name)
            .where(c.sender_id == sender_id, c.id < last_started)
            .order_by(c.id.desc())
            .limit(1)
        )
    ).first()
    if previous is not None and previous[1] == "action" and previous[2] == ACTION_SESSION_START:
        return int(previous[0])
    return int(last_started)


def _row(sender_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """Rasa's row for an event: the JSON plus the columns it indexes."""
    type_name = event.get("event")
    intent_name = None
    if type_name == "user":
        intent = (event.get("parse_data") or {}).get("intent") or {}
        intent_name = intent.get("name")
    name = event.get("name")
    return {
        "sender_id": sender_id,
        "type_name": type_name,
        "timestamp": event.get("timestamp"),
        "intent_name": intent_name,
        "action_name": name if isinstance(name, str) else None,
        "data": json.dumps(event),
    }


async def _parse(data: Sequence[str]) -> list[dict[str, Any]]:
    if len(data) > PARSE_IN_THREAD_ABOVE:
        return await asyncio.to_thread(lambda: [json.loads(d) for d in data])
    return [json.loads(d) for d in data]
