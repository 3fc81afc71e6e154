"""The SQL event broker: one row per event in its own table (`broker_events` by default).

Rasa's SQL broker names its table `events`, the same name as the tracker store's; ours
defaults to `broker_events` (`table_name` changes it) so both can share a database.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from itertools import islice
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, insert
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import DBAPIError

from server.brokers.delivery import BackgroundDelivery, Outgoing, QueuedBroker
from server.trackers.sql_engine import (
    async_url,
    create_engine,
    ensure_mysql_utf8mb4,
    mysql_max_packet,
    mysql_oversize,
)
from server.trackers.sql_errors import REFUSED_DATA, sql_error_kind

logger = logging.getLogger(__name__)

DEFAULT_TABLE = "broker_events"
BATCH_SIZE = 500


class SqlEventBroker(QueuedBroker):
    """Writes `{"sender_id": ..., **event}` JSON rows, in order, from a background task."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.url = async_url(config, default_db="events.db")
        self._engine = create_engine(self.url)
        metadata = MetaData()
        self.table = Table(
            str(config.get("table_name") or DEFAULT_TABLE),
            metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("sender_id", String(255), nullable=False, index=True),
            Column("data", Text().with_variant(mysql.LONGTEXT(), "mysql")),
            mysql_charset="utf8mb4",
        )
        self._metadata = metadata
        self._table_ready = False
        self._max_packet: int | None = None  # MySQL's max_allowed_packet
        self._delivery = BackgroundDelivery(
            "SQL event broker",
            self._send,
            retry_delay=float(config.get("retry_delay_in_seconds", 1)),
        )

    async def _send(self, pending: deque[Outgoing]) -> None:
        if not self._table_ready:
            async with self._engine.begin() as conn:
                await conn.run_sync(self._metadata.create_all)
                # A table of an earlier version, in a latin1 database: one event with an
                # emoji in its sender id held up every later event.
                await conn.run_sync(ensure_mysql_utf8mb4, self.table.name)
                if conn.dialect.name == "mysql":
                    self._max_packet = await mysql_max_packet(conn)
            self._table_ready = True
        while pending:
            batch = list(islice(pending, BATCH_SIZE))
            rows = [_row(item) for item in batch]
            if any(self._oversize(row) for row in rows):
                await self._send_one_by_one(pending, len(batch))
                continue
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(insert(self.table), rows)
            except DBAPIError as exc:
                if sql_error_kind(exc) is not REFUSED_DATA:
                    raise
                await self._send_one_by_one(pending, len(batch))
                continue
            for _ in batch:
                pending.popleft()

    async def _send_one_by_one(self, pending: deque[Outgoing], count: int) -> None:
        """A batch the database refused for its data: each event alone, and one the database
        refuses (a value its column cannot hold, larger than it takes in a statement) is
        dropped with an error in the log, as Rasa's broker loses it, rather than retried for
        ever ahead of every later event. A connection failure still raises: the rest is
        retried."""
        for _ in range(count):
            item = pending[0]
            row = _row(item)
            refusal = self._oversize(row)
            if refusal is None:
                try:
                    async with self._engine.begin() as conn:
                        await conn.execute(insert(self.table), [row])
                except DBAPIError as exc:
                    if sql_error_kind(exc) is not REFUSED_DATA:
                        raise
                    refusal = str(exc.orig or exc).splitlines()[0][:300]
            if refusal is not None:
                logger.error(
                    "SQL event broker: dropped a '%s' event of conversation %r: the database "
                    "refuses it: %s",
                    item.event.get("event"),
                    item.sender_id[:100],
                    refusal,
                )
            pending.popleft()

    def _oversize(self, row: dict[str, Any]) -> str | None:
        """Why MySQL would not take this row: larger than a statement may be (it would drop
        the connection, which reads as an outage however often retried)."""
        if self._max_packet is None:
            return None
        size = mysql_oversize(row["data"], self._max_packet)
        if size is None:
            return None
        return f"it takes {size:,} bytes, more than max_allowed_packet ({self._max_packet:,})"

    async def close(self) -> None:
        await self._close_delivery()
        await self._engine.dispose()


def _row(item: Outgoing) -> dict[str, Any]:
    return {"sender_id": item.sender_id, "data": json.dumps(item.body())}
