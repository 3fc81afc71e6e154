"""A turn's commit reaches PostgreSQL, and the connection breaks before the answer comes back:
the client gets an error, yet the events are stored, so they are published (once, in order,
before the next turn's) as soon as the store can be read back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bench.tcp_proxy import TcpProxy
from server.brokers.sql import SqlEventBroker
from server.dialogue.messages import CollectingOutputChannel, UserMessage
from server.dialogue.processor import DialogueModel, Processor
from server.errors import StoreUnavailable
from server.trackers.factory import create_lock_store, create_tracker_store
from server.trackers.repository import TrackerRepository
from tests.dialogue.conversation_fixtures import copy_bot, train_project
from tests.trackers.persistence_fixtures import POSTGRES, postgres_database

pytestmark = pytest.mark.timeout(120)

LOST = "this answer gets lost on its way back"


class AnswerLosingProxy(TcpProxy):
    """A TcpProxy that, once `lose_answer_to` is set, lets the next request containing it
    reach the database, then breaks the connection before the answer gets back."""

    lose_answer_to: bytes | None = None
    _answered: asyncio.Event | None = None

    async def forward(self, data: bytes, writer: asyncio.StreamWriter, upstream: bool) -> bool:
        if not upstream and self._answered is not None:
            self._answered.set()  # the statement ran; its answer never arrives
            return True
        if upstream and self.lose_answer_to is not None and self.lose_answer_to in data:
            self.lose_answer_to, self._answered = None, asyncio.Event()
            await super().forward(data, writer, upstream)
            await asyncio.wait_for(self._answered.wait(), 10)
            for open_writer in list(self._writers):
                open_writer.transport.abort()
            self._answered = None
            return False
        return await super().forward(data, writer, upstream)


@pytest.fixture(scope="module")
def moodbot(tmp_path_factory: pytest.TempPathFactory) -> DialogueModel:
    workdir = tmp_path_factory.mktemp("moodbot")
    return train_project(copy_bot("moodbot", workdir), workdir / "models")


async def published(broker: SqlEventBroker) -> list[dict[str, Any]]:
    async with broker._engine.connect() as conn:
        result = await conn.execute(select(broker.table.c.data).order_by(broker.table.c.id))
        return [json.loads(row[0]) for row in result]


def say(text: str) -> UserMessage:
    return UserMessage(text, "alice", "rest", output_channel=CollectingOutputChannel())


async def test_a_commit_whose_answer_is_lost_is_published_once_in_order(
    moodbot: DialogueModel, tmp_path: Path
) -> None:
    async with postgres_database() as config:
        proxy = AnswerLosingProxy(POSTGRES)
        await proxy.restore()
        store = create_tracker_store({**config, "port": proxy.port})
        broker = SqlEventBroker({"type": "sql", "db": str(tmp_path / "events.db")})
        processor = Processor(TrackerRepository(store), create_lock_store(None), broker=broker)
        try:
            await processor.handle_message(say("hello"), moodbot)
            proxy.lose_answer_to = LOST.encode()
            with pytest.raises(StoreUnavailable):
                await processor.handle_message(say(LOST), moodbot)
            await processor.handle_message(say("I am feeling great"), moodbot)
            assert await broker.flush(timeout=20)

            stored = await store.load_all("alice") or []
            assert [e.get("text") for e in stored if e["event"] == "user"] == [
                "hello",
                LOST,
                "I am feeling great",
            ]
            rows = await published(broker)
            assert rows == [{"sender_id": "alice", **e} for e in stored]  # once, in order
        finally:
            await broker.close()
            await store.close()
            await proxy.cut()
