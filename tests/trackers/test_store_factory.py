"""endpoints.yml sections with Rasa's keys pick the right store, lock store and broker."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

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
        # An IPv6 address alone is a host (it was host ':' and port 1), bracketed with a port.
        ({"dialect": "postgresql", "url": "::1", "db": "bot"}, "postgresql+asyncpg://[::1]/bot"),
        (
            {"dialect": "postgresql", "url": "[::1]:5433", "db": "bot"},
            "postgresql+asyncpg://[::1]:5433/bot",
        ),
        (
            {"dialect": "postgresql", "url": "::1", "port": 5433, "db": "bot"},
            "postgresql+asyncpg://[::1]:5433/bot",
        ),
        ({"dialect": "mysql+pymysql", "url": "h", "db": "x"}, "mysql+aiomysql://h/x"),
    ],
)
async def test_sql_keys_become_an_async_url(config: dict, url: str) -> None:
    store = SqlTrackerStore.from_config({"type": "sql", **config})
    assert store.url.render_as_string(hide_password=False) == url
    await store.close()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"url": "db.local:abc"}, "SQL port must be a whole number, got 'abc'"),
        ({"url": "db.local", "port": "five"}, "SQL port must be a whole number, got 'five'"),
        ({"url": "db.local", "port": 99999}, "SQL port must be 1-65535, got 99999"),
    ],
)
def test_a_port_that_is_no_port_is_refused_at_start(config: dict, message: str) -> None:
    """Before, `url: db.local:abc` escaped as a bare ValueError (a traceback at start)."""
    with pytest.raises(InvalidConfig, match=message):
        create_tracker_store({"type": "sql", "dialect": "postgresql", **config})


def test_unsupported_types_are_refused_by_name() -> None:
    with pytest.raises(InvalidConfig, match="mongod"):
        create_tracker_store({"type": "mongod"})
    with pytest.raises(InvalidConfig, match="my.Store"):
        create_tracker_store({"type": "my.Store"})
    with pytest.raises(InvalidConfig, match="oracle"):
        create_tracker_store({"type": "sql", "dialect": "oracle"})
    with pytest.raises(InvalidConfig, match="kafka"):
        create_event_broker({"type": "kafka"})


async def test_rasas_own_store_classes_by_module_path_are_its_types(tmp_path: Path) -> None:
    """Rasa 3.6 imports a `type:` holding a class path, its own stores' too, and builds it
    with the section's keys: `rasa.core.tracker_store.SQLTrackerStore` works there as
    `type: sql`. Before, botserver refused it as a custom class it does not load."""
    db = str(tmp_path / "rasa.db")
    store = create_tracker_store({"type": "rasa.core.tracker_store.SQLTrackerStore", "db": db})
    assert isinstance(store, SqlTrackerStore)
    assert store.url.render_as_string() == f"sqlite+aiosqlite:///{db}"
    await store.close()
    store = create_tracker_store({"type": "rasa.core.tracker_store.RedisTrackerStore"})
    assert isinstance(store, RedisTrackerStore)
    await store.close()
    memory = create_tracker_store({"type": "rasa.core.tracker_store.InMemoryTrackerStore"})
    assert isinstance(memory, InMemoryTrackerStore)
    with pytest.raises(InvalidConfig, match="MongoTrackerStore' is not supported"):
        create_tracker_store({"type": "rasa.core.tracker_store.MongoTrackerStore"})


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("key_prefx", "did you mean 'key_prefix'?"),
        ("recrod_exp", "did you mean 'record_exp'?"),
        ("expire_after", "it reads cache_events, db, host, key_prefix"),
    ],
)
async def test_a_misspelt_redis_tracker_store_key_is_named_at_start(
    key: str, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Rasa's RedisTrackerStore takes any key and ignores the ones it does not know, and so
    did botserver: a misspelt `key_prefix` silently read and wrote another bot's
    conversations, a misspelt `record_exp` kept them for ever. The start now names it."""
    store = create_tracker_store({"type": "redis", "url": "127.0.0.1", key: "bot1"})
    await store.close()
    (line,) = [r.getMessage() for r in caplog.records if f"'{key}'" in r.getMessage()]
    assert line.startswith(
        f"endpoints.yml: tracker_store: unknown setting '{key}' is not read (nor by Rasa)"
    )
    assert said in line


async def test_the_keys_rasa_reads_for_any_endpoint_are_not_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every section is read by Rasa's EndpointConfig first, which takes these: a section
    holding them (written for another store, or left from a template) starts as in Rasa."""
    config: dict[str, Any] = {"store_type": "redis", "url": "127.0.0.1", "port": 6379}
    config |= {"db": 0, "username": "u", "password": "p", "use_ssl": False, "key_prefix": "a"}
    config |= {"record_exp": 60, "ssl_keyfile": None, "ssl_certfile": None, "ssl_ca_certs": None}
    config |= {"params": {}, "headers": {}, "basic_auth": None, "token": None}
    config |= {"token_name": "t", "cafile": None, "socket_timeout": 5, "cache_events": 100}
    store = create_tracker_store(config)
    await store.close()
    assert "unknown setting" not in caplog.text


@pytest.mark.parametrize(
    ("kind", "key", "said"),
    [
        ("sql", "dilect", "did you mean 'dialect'?"),
        ("sql", "usernme", "did you mean 'username'?"),
        ("sql", "login_database", "it reads cache_events, db, dialect, host, login_db"),
        ("dynamo", "tabel_name", "did you mean 'table_name'?"),
        ("dynamo", "regoin", "did you mean 'region'?"),
        ("dynamo", "aws_access_key_id", "it reads cache_events, endpoint_url, region"),
    ],
)
async def test_a_misspelt_sql_or_dynamo_tracker_store_key_is_named_at_start(
    kind: str, key: str, said: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rasa's SQLTrackerStore and DynamoTrackerStore take any key and ignore the ones they
    do not know, and so did botserver: a misspelt `dialect` silently stored the
    conversations in a SQLite file, a misspelt `table_name` in the table `states`. The
    start now names it, as for Redis."""
    where = {"db": str(tmp_path / "rasa.db")} if kind == "sql" else {}
    store = create_tracker_store({"type": kind, **where, key: "x"})
    if isinstance(store, SqlTrackerStore):
        await store.close()
    (line,) = [r.getMessage() for r in caplog.records if f"'{key}'" in r.getMessage()]
    assert line.startswith(
        f"endpoints.yml: tracker_store: unknown setting '{key}' is not read (nor by Rasa)"
    )
    assert said in line


async def test_the_keys_rasa_reads_for_sql_and_dynamo_are_not_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The keys Rasa's SQL and DynamoDB stores read, ours, and those Rasa's EndpointConfig
    takes from every section start without a warning."""
    endpoint: dict[str, Any] = {"params": {}, "headers": {}, "basic_auth": None, "token": None}
    endpoint |= {"token_name": "t", "cafile": None}
    sql: dict[str, Any] = {"type": "sql", "dialect": "sqlite", "url": None, "host": None}
    sql |= {"port": None, "db": str(tmp_path / "rasa.db"), "username": "u", "password": "p"}
    sql |= {"login_db": None, "query": {}, "cache_events": 100, "cache_size": 100}
    store = create_tracker_store(sql | endpoint)
    assert isinstance(store, SqlTrackerStore)
    await store.close()
    dynamo: dict[str, Any] = {"type": "dynamo", "table_name": "bots", "region": "eu-west-3"}
    dynamo |= {"endpoint_url": None, "socket_timeout": 5, "cache_events": 100, "url": None}
    create_tracker_store(dynamo | endpoint | {"cache_size": 100})
    assert "unknown setting" not in caplog.text


@pytest.mark.parametrize(
    "key", ["retrieve_events_from_previous_conversation_sessions", "max_event_history", "schema"]
)
async def test_a_tracker_store_key_rasa_3_does_not_read_is_warned_about(
    key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Rasa 2 read these; Rasa 3.6 ignores them without a word, and so did botserver: a bot
    that relied on one (every session sent to the action server) silently lost it."""
    store = create_tracker_store({"type": "in_memory", key: True})
    await store.close()
    assert f"'{key}'" in caplog.text and "not read" in caplog.text


def test_lock_store_and_broker_types() -> None:
    assert isinstance(create_lock_store(None), InMemoryLockStore)
    lock_store = create_lock_store({"type": "redis", "lock_lifetime": 5, "key_prefix": "bot"})
    assert isinstance(lock_store, RedisLockStore) and lock_store.lock_lifetime == 5
    assert create_event_broker(None) is None
    assert isinstance(create_event_broker({"url": "localhost"}), RabbitMQEventBroker)
    assert isinstance(create_event_broker({"type": "sql"}), SqlEventBroker)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("raise_on_failure", True),
        ("raise_on_failure", "true"),
        ("should_keep_unpublished_messages", False),
    ],
)
def test_a_rabbitmq_failure_setting_botserver_does_not_follow_is_warned_about(
    key: str, value: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Rasa's pika keys for what to do with an event it could not publish: before, they were
    dropped without a word, and a team relying on them could not tell that events are kept
    and sent again in order, and that a turn never fails because of the broker."""
    create_event_broker({"url": "localhost", "queues": ["q"], key: value})
    assert f"'{key}: {value}' is not read" in caplog.text


@pytest.mark.parametrize(
    ("key", "value"), [("raise_on_failure", False), ("should_keep_unpublished_messages", True)]
)
def test_a_rabbitmq_failure_setting_botserver_follows_is_not_warned_about(
    key: str, value: object, caplog: pytest.LogCaptureFixture
) -> None:
    create_event_broker({"url": "localhost", "queues": ["q"], key: value})
    assert key not in caplog.text


@pytest.mark.parametrize("queues", [[""], ["events", None], ["  "]])
def test_a_rabbitmq_queue_without_a_name_is_refused_at_start_up(queues: list) -> None:
    """`queues: ["${EVENTS_QUEUE}"]` with the variable unset: before, RabbitMQ named the
    queue itself (`amq.gen-...`, a new one at each reconnect), and events piled up where no
    consumer looked; `null` gave a queue called `None`."""
    with pytest.raises(InvalidConfig, match="event_broker.*queue"):
        create_event_broker({"url": "localhost", "queues": queues})


@pytest.mark.parametrize("queues", [[{"name": "events"}], [["events"]], {"events": None}])
def test_a_rabbitmq_queue_written_as_a_mapping_or_list_is_refused_at_start_up(
    queues: object,
) -> None:
    """`queues: [{name: events}]`: before, events went to a queue called `{'name':
    'events'}` that no consumer reads (a mapping for `queues` took its keys)."""
    with pytest.raises(InvalidConfig, match="event_broker.*queue"):
        create_event_broker({"url": "localhost", "queues": queues})


def test_amqp_url_from_rasa_keys() -> None:
    assert amqp_url({"url": "rabbit", "username": "u", "password": "p"}) == (
        "amqp://u:p@rabbit:5672/"
    )
    assert amqp_url({"url": "amqps://rabbit/vhost", "username": "u", "password": "p"}) == (
        "amqps://u:p@rabbit/vhost"
    )


def test_an_amqp_url_without_a_port_takes_the_port_key_as_rasa_does() -> None:
    """Rasa puts `port` after the URL's host: `url: amqp://rabbit` with `port: 5673` connects
    to 5673. Before, the port key was dropped and the broker knocked at 5672."""
    config = {"url": "amqp://rabbit", "port": 5673, "username": "u", "password": "p"}
    assert URL(amqp_url(config)).port == 5673
    assert URL(amqp_url({**config, "url": "amqps://rabbit/vhost"})).port == 5673
    assert URL(amqp_url({**config, "url": "amqp://rabbit:5674"})).port == 5674  # the URL's own
    # No port key: aio-pika's default for the scheme (5671 for amqps).
    assert URL(amqp_url({**config, "port": None, "url": "amqps://rabbit"})).explicit_port is None


def test_an_amqp_host_with_a_port_is_split_as_the_sql_stores_is() -> None:
    """Before, `url: rabbit:5673` stopped the start with "a setting has the wrong type: Host
    'rabbit:5673' cannot contain ':'"."""
    for host, expected in [("rabbit:5673", "rabbit"), ("[::1]:5673", "::1")]:
        url = URL(amqp_url({"url": host, "username": "u", "password": "p"}))
        assert (url.host, url.port, url.user) == (expected, 5673, "u")
    assert URL(amqp_url({"url": "::1"})).port == 5672  # a bare IPv6 address has no port


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ({"url": "rabbit", "port": "abc"}, "RabbitMQ port must be a whole number, got 'abc'"),
        ({"url": "amqp://rabbit", "port": "x"}, "RabbitMQ port must be a whole number, got 'x'"),
        ({"url": "rabbit:abc"}, "RabbitMQ port must be a whole number, got 'abc'"),
        ({"url": "rabbit", "port": 99999}, "RabbitMQ port must be 1-65535, got 99999"),
    ],
)
def test_a_rabbitmq_port_that_is_no_port_is_named(config: dict[str, Any], said: str) -> None:
    """Before: "a setting has the wrong type: invalid literal for int() with base 10: 'abc'"."""
    with pytest.raises(InvalidConfig, match=re.escape(said)):
        create_event_broker({**config, "queues": ["q"]})


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
    with pytest.raises(InvalidConfig) as raised:
        create_tracker_store({"type": "sql", "store_type": "redis"}, "prod-endpoints.yml")
    # Before: "prod-endpoints.yml, section 'tracker_store': endpoints.yml, section ..."
    assert str(raised.value) == (
        "prod-endpoints.yml, section 'tracker_store': 'type: sql' and 'store_type: redis' "
        "disagree; keep one of them"
    )


@pytest.mark.parametrize("prefix", ["my_bot", "bot-1", "bot.eu"])
async def test_a_key_prefix_rasa_ignored_says_where_rasa_kept_the_conversations(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Rasa 3.6 takes a key_prefix of letters and digits only: with `my_bot` it warned and
    kept conversations at `tracker:<id>`, where botserver, which takes the prefix, never
    looks. Before, nothing said so, and every returning user of a migrated bot started over."""
    store = create_tracker_store({"type": "redis", "key_prefix": prefix})
    await store.close()
    assert f"'{prefix}:tracker:<id>'" in caplog.text
    assert "'tracker:<id>'" in caplog.text


async def test_a_key_prefix_rasa_takes_is_not_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for config in ({"key_prefix": "mybot1"}, {}):
        store = create_tracker_store({"type": "redis", **config})
        await store.close()
    assert caplog.text == ""


async def test_a_redis_url_without_a_database_takes_the_db_and_password_keys() -> None:
    """`url: redis://host:6379` with `db: 5`: before, the `db` (and `username`, `password`)
    keys were dropped without a word, and the conversations went to database 0, mixed with
    whatever else lives there. What the URL itself says still wins."""
    from tests.trackers.persistence_fixtures import REDIS, require_service, unique_name

    require_service("Redis", REDIS)
    from redis.asyncio import Redis

    prefix = unique_name("bsdb")
    url = f"redis://{REDIS[0]}:{REDIS[1]}"
    store = create_tracker_store({"type": "redis", "url": url, "db": 5, "key_prefix": prefix})
    fives = Redis(host=REDIS[0], port=REDIS[1], db=5, decode_responses=True)
    zeros = Redis(host=REDIS[0], port=REDIS[1], db=0, decode_responses=True)
    try:
        await store.append("alice", [{"event": "restart", "timestamp": 1.0}])
        assert await fives.exists(f"{prefix}:tracker:alice") == 1
        assert await zeros.exists(f"{prefix}:tracker:alice") == 0
    finally:
        await store.delete("alice")
        await store.close()
        for client in (fives, zeros):
            await client.delete(f"{prefix}:tracker_append:alice")
            await client.aclose()
    own = create_tracker_store({"type": "redis", "url": f"{url}/2", "db": 5, "password": "pw"})
    assert isinstance(own, RedisTrackerStore)
    options = own._redis.connection_pool.connection_kwargs
    assert (options["db"], options["password"]) == (2, "pw")
    await own.close()


@pytest.mark.parametrize(
    "config",
    [
        {"url": "redis://redis.example:6380", "use_ssl": True},
        {"url": "rediss://redis.example:6380", "ssl_ca_certs": "/etc/ssl/certs/ca.pem"},
        {"url": "redis.example", "port": 6380, "use_ssl": True},
    ],
)
def test_redis_over_tls_whichever_way_it_is_asked(config: dict) -> None:
    """`use_ssl: true` beside a `redis://` url was dropped without a word (plain text to a
    server that expects TLS), and a `rediss://` url lost the `ssl_*` keys."""
    from redis.asyncio.connection import SSLConnection

    from server.trackers.redis_client import create_client

    pool = create_client(config, default_db=0).connection_pool
    assert pool.connection_class is SSLConnection
    assert pool.connection_kwargs.get("ssl_ca_certs") == config.get("ssl_ca_certs")


@pytest.mark.parametrize(
    ("use_ssl", "tls"), [("false", False), ("no", False), ("", False), ("true", True), ("1", True)]
)
@pytest.mark.parametrize("url", ["redis.example", "redis://redis.example:6379"])
def test_use_ssl_as_text_from_an_environment_variable_means_what_it_says(
    use_ssl: str, tls: bool, url: str
) -> None:
    """`use_ssl: ${REDIS_TLS}` gives text: with REDIS_TLS=false, any text turned TLS on
    before (as in Rasa), and every connection to a plain Redis failed."""
    from redis.asyncio.connection import SSLConnection

    from server.trackers.redis_client import create_client

    pool = create_client({"url": url, "use_ssl": use_ssl}, default_db=0).connection_pool
    assert (pool.connection_class is SSLConnection) is tls


def test_use_ssl_that_is_neither_true_nor_false_is_refused_at_start_up() -> None:
    with pytest.raises(InvalidConfig, match="use_ssl"):
        create_lock_store({"type": "redis", "use_ssl": "maybe"})


@pytest.mark.parametrize("url", ["redis.example", "redis://redis.example:6379"])
def test_a_redis_db_that_is_no_number_is_refused_naming_the_key(url: str) -> None:
    # Before: "a setting has the wrong type: invalid literal for int() with base 10: 'abc'",
    # which named no key (and a bare ValueError from the socket.io rooms' Redis).
    with pytest.raises(InvalidConfig) as caught:
        create_lock_store({"type": "redis", "url": url, "db": "abc"})

    assert str(caught.value) == (
        "endpoints.yml, section 'lock_store': 'db' must be a whole number of 0 or more, not 'abc'"
    )


@pytest.mark.parametrize("prefix", [0, False, 7, True])
async def test_a_key_prefix_yaml_reads_as_no_text_finds_the_conversations_where_rasa_kept_them(
    prefix: object,
) -> None:
    """`key_prefix: 0` (or `false`, `7`, `true`) is not text once YAML has read it: Rasa 3.6
    then used no prefix and kept conversations at `tracker:<id>`. Before, botserver looked at
    `0:tracker:<id>` (`False:tracker:<id>`...), and every returning user of a migrated bot
    started over."""
    from redis.asyncio import Redis

    from tests.trackers.persistence_fixtures import REDIS, require_service, unique_name

    require_service("Redis", REDIS)
    sender = unique_name("rasa_prefix")
    rasa = Redis(host=REDIS[0], port=REDIS[1], db=0, decode_responses=True)
    events = [
        {"event": "action", "timestamp": 1.0, "name": "action_listen"},
        {"event": "slot", "timestamp": 2.0, "name": "city", "value": "Berlin"},
    ]
    await rasa.set(f"tracker:{sender}", json.dumps({"events": events, "name": sender}))
    store = create_tracker_store(
        {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    )
    try:
        assert list(await store.load(sender) or []) == events
    finally:
        await store.delete(sender)
        await store.close()
        await rasa.delete(f"tracker:{sender}", f"tracker_append:{sender}")
        await rasa.aclose()


def test_a_key_prefix_that_is_no_text_is_one_warning_naming_where_botserver_kept_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An operator upgrading with `key_prefix: 7` reads one warning per store that says
    where botserver kept their conversations until now (`7:tracker:<id>`), not one line for
    each internal key kind (`tracker_session:`, `lock_wake:`...) and nothing of the move."""
    from server.trackers.redis_lock import RedisLockStore

    with caplog.at_level(logging.WARNING):
        store = create_tracker_store({"type": "redis", "key_prefix": 7})
        lock = RedisLockStore({"type": "redis", "key_prefix": 7})
    about = [r.getMessage() for r in caplog.records if "key_prefix 7" in r.getMessage()]
    assert len(about) == 2, about
    assert "'7:tracker:<id>'" in about[0] and "'7:lock:<id>'" in about[1], about
    del store, lock


def test_a_key_prefix_rasa_reads_as_text_is_the_prefix_rasa_used(tmp_path: Path) -> None:
    from server.trackers.redis_client import key_prefix

    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text("tracker_store:\n  type: redis\n  key_prefix: no\n")
    config = read_endpoints(endpoints)["tracker_store"]
    # Rasa reads endpoints.yml as YAML 1.2, where `no` is text (1.1: the boolean false).
    assert key_prefix(config, "tracker") == "no:tracker:"


@pytest.mark.parametrize(
    ("url", "port"), [("u:s3cret@db.local", None), ("u:s3cret@db.local:5433", 5433)]
)
async def test_a_user_and_password_in_a_sql_url_are_not_read_as_rasa_reads_them(
    url: str, port: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    """Rasa takes the host and port after the '@' and the `username` and `password` keys.
    Before: 'u:s3cret@db.local' stopped the start with "SQL port must be a whole number, got
    's3cret@db.local'", the password shown as a port; with a port, the host was the whole
    text, and connecting failed."""
    caplog.set_level(logging.WARNING, logger="server")
    config = {"dialect": "postgresql", "url": url, "db": "bot", "username": "u", "password": "p"}
    store = SqlTrackerStore.from_config({"type": "sql", **config})
    try:
        assert (store.url.host, store.url.port, store.url.password) == ("db.local", port, "p")
    finally:
        await store.close()
    assert "before '@' are not read" in caplog.text and "s3cret" not in caplog.text


@pytest.mark.parametrize(
    ("url", "port"), [("guest:s3cret@rabbit", 5672), ("guest:s3cret@rabbit:5673", 5673)]
)
def test_a_user_and_password_in_a_rabbitmq_host_are_not_shown_as_a_port(
    url: str, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: "RabbitMQ port must be a whole number, got 's3cret@rabbit'" (with a port:
    "Host 'guest:s3cret@rabbit:5673' cannot contain ':'"), the password in the start error."""
    caplog.set_level(logging.WARNING, logger="server")
    given = URL(amqp_url({"url": url, "username": "bot", "password": "pw"}))
    assert (given.host, given.port, given.user, given.password) == ("rabbit", port, "bot", "pw")
    assert "before '@' are not read" in caplog.text and "s3cret" not in caplog.text


@pytest.mark.parametrize(("url", "host"), [("db.local:5433", "db.local"), ("[::1]:5433", "::1")])
async def test_the_port_in_a_sql_url_wins_over_the_port_key_as_in_rasa(
    url: str, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Rasa takes the url's port over `port`. Before, `url: db.local:5433` beside `port:
    5434` made the host 'db.local:5433' (postgresql+asyncpg://[db.local:5433]:5434/bot), a
    host no resolver finds."""
    caplog.set_level(logging.WARNING, logger="server")
    config = {"dialect": "postgresql", "url": url, "port": 5434, "db": "bot"}
    store = SqlTrackerStore.from_config({"type": "sql", **config})
    try:
        assert (store.url.host, store.url.port) == (host, 5433)
    finally:
        await store.close()
    assert "port 5433 in url is used, not `port` 5434" in caplog.text


def test_the_port_in_a_rabbitmq_host_wins_over_the_port_key() -> None:
    """Before: "Host 'rabbit:5673' cannot contain ':'" stopped the start."""
    url = URL(amqp_url({"url": "rabbit:5673", "port": 5674}))
    assert (url.host, url.port) == ("rabbit", 5673)
    assert URL(amqp_url({"url": "::1", "port": 5674})).port == 5674  # an IPv6 host, no port


def test_a_sqlite_file_in_a_folder_that_is_not_there_stops_the_start_naming_it(
    tmp_path: Path,
) -> None:
    """As the SQL broker's does, as Rasa's broker stops (Rasa's store logs "Could not create
    tables" and starts, every turn then failing). Before, the server said it was up and
    every turn was a 503 naming no file: "The tracker store (...) is unavailable: unable to
    open database file"."""
    missing = tmp_path / "not-there" / "rasa.db"
    with pytest.raises(InvalidConfig, match=f"'{missing}'.*folder '{missing.parent}'"):
        create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(missing)})
    in_a_file = tmp_path / "a-file"
    in_a_file.write_text("")
    with pytest.raises(InvalidConfig, match=f"'{in_a_file}' is not a folder"):
        create_tracker_store({"type": "sql", "dialect": "sqlite", "db": str(in_a_file / "x.db")})


def test_a_sqlite_path_from_the_home_folder_says_its_tilde_is_not_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`db: ~/bot/rasa.db` is a folder named `~` in the working directory, for SQLite as for
    Rasa's SQLAlchemy: before, the refusal named '<cwd>/~/bot' alone."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidConfig, match=r"folder '.*/~/bot' does not exist \(a `~`"):
        create_tracker_store({"type": "sql", "dialect": "sqlite", "db": "~/bot/rasa.db"})


async def test_a_section_with_settings_but_no_type_says_it_is_in_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As in Rasa, a section without `type` is in memory, and Rasa says nothing: `url` and
    `db` written without `type: sql` lost every conversation at the next restart, and a
    lock store's `url` without `type: redis` let two processes run one conversation's turns
    at once. The start now says which settings are not read."""
    assert isinstance(create_tracker_store({"url": "db.local", "db": "bot"}), InMemoryTrackerStore)
    assert isinstance(create_lock_store({"type": "", "url": "redis.local"}), InMemoryLockStore)
    create_tracker_store({"type": "in_memory", "cache_events": 10})
    create_lock_store({"wait_timeout": 5})
    assert [r.getMessage() for r in caplog.records] == [
        "endpoints.yml: tracker_store has no 'type', so conversations are kept in memory (as "
        "in Rasa), lost at a restart: 'url', 'db' not read; give 'type: sql', 'redis' or "
        "'dynamo'",
        "endpoints.yml: lock_store has no 'type', so locks are held in this process only (as "
        "in Rasa): 'url' not read; give 'type: redis'",
    ]


async def test_a_misspelt_in_memory_store_setting_is_named_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`type: in_memory` took any key without a word (Rasa's in-memory stores do too), where
    every other store names it: a misspelt `cache_events` silently kept the default, and a
    `db` left from a template was never said to be unread."""
    create_tracker_store({"type": "in_memory", "cache_evnets": 10, "db": "bot"})
    create_lock_store({"type": "in_memory", "wait_timout": 5, "url": "redis.local"})
    assert [r.getMessage() for r in caplog.records] == [
        "endpoints.yml: tracker_store: unknown setting 'cache_evnets' is not read (nor by "
        "Rasa); did you mean 'cache_events'?",
        "endpoints.yml: tracker_store: unknown setting 'db' is not read (nor by Rasa); it "
        "reads cache_events",
        "endpoints.yml: lock_store: unknown setting 'wait_timout' is not read (nor by Rasa); "
        "did you mean 'wait_timeout'?",
    ]
