"""endpoints.yml sections with Rasa's keys pick the right store, lock store and broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.brokers.factory import create_event_broker
from server.brokers.rabbitmq import RabbitMQEventBroker, amqp_url
from server.brokers.sql import SqlEventBroker
from server.config import read_endpoints
from server.errors import InvalidConfig
from server.trackers.factory import create_lock_store, create_tracker_store
from server.trackers.memory_lock import InMemoryLockStore
from server.trackers.memory_store import InMemoryTrackerStore
from server.trackers.redis_lock import RedisLockStore
from server.trackers.redis_store import RedisTrackerStore
from server.trackers.sql_store import SqlTrackerStore


async def test_tracker_store_types_as_rasa_spells_them() -> None:
    assert isinstance(create_tracker_store(None), InMemoryTrackerStore)
    assert isinstance(create_tracker_store({"type": "in_memory"}), InMemoryTrackerStore)
    assert isinstance(create_tracker_store({"type": "redis"}), RedisTrackerStore)
    store = create_tracker_store({"type": "SQL"})
    assert isinstance(store, SqlTrackerStore)
    assert store.url.render_as_string() == "sqlite+aiosqlite:///rasa.db"
    await store.close()


@pytest.mark.parametrize(
    ("config", "url"),
    [
        (
            {
                "dialect": "postgresql",
                "url": "db.local",
                "port": 5433,
                "db": "bot",
                "username": "u",
                "password": "p",
            },
            "postgresql+asyncpg://u:p@db.local:5433/bot",
        ),
        (
            {"dialect": "postgresql", "url": "db.local:6000", "db": "bot"},
            "postgresql+asyncpg://db.local:6000/bot",
        ),
        ({"url": "postgresql+psycopg2://u@h/x"}, "postgresql+asyncpg://u@h/x"),
        ({"dialect": "mysql+pymysql", "url": "h", "db": "x"}, "mysql+aiomysql://h/x"),
    ],
)
async def test_sql_keys_become_an_async_url(config: dict, url: str) -> None:
    store = SqlTrackerStore.from_config({"type": "sql", **config})
    assert store.url.render_as_string(hide_password=False) == url
    await store.close()


def test_unsupported_types_are_refused_by_name() -> None:
    with pytest.raises(InvalidConfig, match="mongod"):
        create_tracker_store({"type": "mongod"})
    with pytest.raises(InvalidConfig, match="my.Store"):
        create_tracker_store({"type": "my.Store"})
    with pytest.raises(InvalidConfig, match="oracle"):
        create_tracker_store({"type": "sql", "dialect": "oracle"})
    with pytest.raises(InvalidConfig, match="kafka"):
        create_event_broker({"type": "kafka"})


def test_lock_store_and_broker_types() -> None:
    assert isinstance(create_lock_store(None), InMemoryLockStore)
    lock_store = create_lock_store({"type": "redis", "lock_lifetime": 5, "key_prefix": "bot"})
    assert isinstance(lock_store, RedisLockStore) and lock_store.lock_lifetime == 5
    assert create_event_broker(None) is None
    assert isinstance(create_event_broker({"url": "localhost"}), RabbitMQEventBroker)
    assert isinstance(create_event_broker({"type": "sql"}), SqlEventBroker)


def test_amqp_url_from_rasa_keys() -> None:
    assert amqp_url({"url": "rabbit", "username": "u", "password": "p"}) == (
        "amqp://u:p@rabbit:5672/"
    )
    assert amqp_url({"url": "amqps://rabbit/vhost", "username": "u", "password": "p"}) == (
        "amqps://u:p@rabbit/vhost"
    )


async def test_store_type_is_read_as_type(tmp_path: Path) -> None:
    """Old Rasa docs write `store_type:`; Rasa reads it as the type. It used to give an
    in-memory store silently, losing every conversation at the next restart."""
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(
        "tracker_store:\n  store_type: redis\n  url: localhost\n"
        "lock_store:\n  store_type: redis\n"
        "event_broker:\n  store_type: sql\n  db: " + str(tmp_path / "events.db") + "\n"
    )
    sections = read_endpoints(endpoints)
    assert isinstance(create_tracker_store(sections["tracker_store"]), RedisTrackerStore)
    assert isinstance(create_lock_store(sections["lock_store"]), RedisLockStore)
    assert isinstance(create_event_broker(sections["event_broker"]), SqlEventBroker)
    with pytest.raises(InvalidConfig, match="'type: sql' and 'store_type: redis' disagree"):
        create_tracker_store({"type": "sql", "store_type": "redis"})
