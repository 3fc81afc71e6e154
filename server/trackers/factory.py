"""Tracker and lock stores chosen by endpoints.yml's `tracker_store:` and `lock_store:`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from server.errors import InvalidConfig
from server.setting_values import copy_with_lines, warn_of_unknown_keys
from server.trackers.lock import LockStore
from server.trackers.memory_lock import InMemoryLockStore, wait_timeout_setting
from server.trackers.memory_store import InMemoryTrackerStore
from server.trackers.store import ENDPOINT_SETTINGS, TrackerStore, cache_events_setting

logger = logging.getLogger(__name__)

# What the server uses when endpoints.yml has no `tracker_store:` section.
DEFAULT_TRACKER_STORE: dict[str, Any] = {"type": "sql", "dialect": "sqlite", "db": "botserver.db"}

_MEMORY_TYPES = {None, "", "in_memory", "inmemory", "memory"}
_UNSUPPORTED_TRACKER_TYPES = {"mongod", "mongo"}
# Rasa's own store classes, which a `type:` may name by module path (Rasa imports the class
# and builds it with the section's keys, as for its type name).
_RASA_TRACKER_CLASSES = {
    "rasa.core.tracker_store.inmemorytrackerstore": "in_memory",
    "rasa.core.tracker_store.sqltrackerstore": "sql",
    "rasa.core.tracker_store.redistrackerstore": "redis",
    "rasa.core.tracker_store.dynamotrackerstore": "dynamo",
    "rasa.core.tracker_store.mongotrackerstore": "mongod",
}
# `tracker_store:` keys Rasa 2 read and Rasa 3 ignores without a word, and what to know.
_KEYS_RASA_3_IGNORES = {
    "retrieve_events_from_previous_conversation_sessions": "an action server gets the "
    "current session, as in Rasa 3; every session: GET "
    "/conversations/<id>/tracker?include_events=ALL",
    "max_event_history": "a conversation keeps every event; the action server gets the "
    "current session (see session_config in the domain)",
    "schema": "a PostgreSQL schema is chosen by the POSTGRESQL_SCHEMA environment variable, "
    "as in Rasa; without it the tables are in the user's default schema",
}


@contextmanager
def reading_section(section: str, source: str = "endpoints.yml") -> Iterator[None]:
    """A setting of the wrong type in a section of the endpoints file `source` (a word where
    a number goes, a number where a list goes), or one a backend refuses, as InvalidConfig
    naming the file and the section: before, the server stopped at start-up with a
    traceback, and the file was called endpoints.yml whatever --endpoints named."""
    try:
        yield
    except InvalidConfig as exc:
        # (A message that names its section already, as the models: checks do for a PUT
        # /model body too: named once.)
        said = str(exc).removeprefix(f"{section}: ")
        raise InvalidConfig(f"{source}, section '{section}': {said}") from exc
    except (ValueError, TypeError, OverflowError) as exc:  # (an integer no float holds)
        raise InvalidConfig(
            f"{source}, section '{section}': a setting has the wrong type: {exc}"
        ) from exc


def create_tracker_store(
    config: dict[str, Any] | None,
    source: str = "endpoints.yml",
    *,
    create_missing: bool = True,
    read_only: bool = False,
) -> TrackerStore:
    """The tracker store for a `tracker_store:` section (None or no type: in memory) of the
    endpoints file `source`. Without `create_missing` (commands that read or prune what is
    stored), a DynamoDB table or SQLite file that is not there is an error, not made.
    `read_only` (`botserver export`): a SQL store's schema is read as it is, not migrated."""
    with reading_section("tracker_store", source):
        return _create_tracker_store(
            copy_with_lines(config or {}), source, create_missing, read_only
        )


def _create_tracker_store(
    config: dict[str, Any], source: str, create_missing: bool, read_only: bool = False
) -> TrackerStore:
    kind = section_type(config)
    kind = _RASA_TRACKER_CLASSES.get(kind or "", kind)
    for key, instead in _KEYS_RASA_3_IGNORES.items():
        if key in config:
            logger.warning("tracker_store: '%s' is not read (nor by Rasa 3): %s", key, instead)
    if kind in _MEMORY_TYPES:
        if not kind:
            _warn_untyped(
                config,
                {"cache_events", "cache_size", *_KEYS_RASA_3_IGNORES},
                f"{source}: tracker_store has no 'type', so conversations are kept in memory "
                "(as in Rasa), lost at a restart",
                "give 'type: sql', 'redis' or 'dynamo'",
            )
        else:  # named as every other store's (Rasa's in-memory store takes any key silently)
            _warn_of_unknown_keys(config, frozenset({"cache_events"}), source)
        return InMemoryTrackerStore(cache_events_setting(config))
    if kind == "sql":
        from server.trackers.sql_store import SqlTrackerStore

        _warn_of_unknown_keys(config, SqlTrackerStore.SETTINGS, source)
        return SqlTrackerStore.from_config(config, create_missing, read_only)
    if kind == "redis":
        from server.trackers.redis_store import RedisTrackerStore

        _warn_of_unknown_keys(config, RedisTrackerStore.SETTINGS, source)
        return RedisTrackerStore(config, read_only)
    if kind == "dynamo":
        from server.trackers.dynamo_store import DynamoTrackerStore

        _warn_of_unknown_keys(config, DynamoTrackerStore.SETTINGS, source)
        return DynamoTrackerStore(config, create_table=create_missing)
    if kind in _UNSUPPORTED_TRACKER_TYPES:
        raise InvalidConfig(
            f"tracker_store type '{config['type']}' is not supported; "
            "use sql (SQLite, PostgreSQL, MySQL), redis, dynamo or in_memory"
        )
    raise InvalidConfig(
        f"tracker_store type '{config['type']}' is unknown (custom store classes are not "
        "loaded); use sql, redis, dynamo or in_memory"
    )


# Taken from every `tracker_store:` section without a word besides those every section
# takes (`SECTION_KEYS`): `cache_size`, the former name of `cache_events`, and those Rasa 3
# no longer reads (warned about on their own).
_TRACKER_STORE_QUIET_KEYS = frozenset({"cache_size", *_KEYS_RASA_3_IGNORES})
# Taken from every store's and broker's section without a word: Rasa's EndpointConfig keys,
# and its type.
SECTION_KEYS = ENDPOINT_SETTINGS | {"type"}


def _warn_of_unknown_keys(config: dict[str, Any], known: frozenset[str], source: str) -> None:
    quiet = SECTION_KEYS | _TRACKER_STORE_QUIET_KEYS
    warn_of_unknown_keys(config, known, f"{source}: tracker_store", quiet=quiet)


def create_lock_store(config: dict[str, Any] | None, source: str = "endpoints.yml") -> LockStore:
    """The lock store for a `lock_store:` section (None or no type: in memory) of the
    endpoints file `source`."""
    with reading_section("lock_store", source):
        return _create_lock_store(copy_with_lines(config or {}), source)


def _create_lock_store(config: dict[str, Any], source: str) -> LockStore:
    kind = section_type(config)
    if kind in _MEMORY_TYPES:
        if not kind:
            _warn_untyped(
                config,
                {"wait_timeout"},
                f"{source}: lock_store has no 'type', so locks are held in this process only "
                "(as in Rasa)",
                "give 'type: redis'",
            )
        else:
            warn_of_unknown_keys(
                config, {"wait_timeout"}, f"{source}: lock_store", quiet=SECTION_KEYS
            )
        return InMemoryLockStore(wait_timeout_setting(config))
    if kind == "redis":
        from server.trackers.redis_lock import RedisLockStore

        return RedisLockStore(config)
    raise InvalidConfig(
        f"lock_store type '{config['type']}' is unknown (custom lock classes are not "
        "loaded); use redis or in_memory"
    )


def _warn_untyped(config: dict[str, Any], read: set[str], what: str, fix: str) -> None:
    """A section without a `type` (or an empty one, `${STORE_TYPE}` unset) is in memory, as
    in Rasa, which says nothing: the settings it holds for another backend are named, not
    read (a `url` and `db` without `type: sql` lost every conversation at a restart)."""
    unread = [f"'{key}'" for key in config if key != "type" and key not in read]
    if unread:
        logger.warning("%s: %s not read; %s", what, ", ".join(unread), fix)


def section_type(config: dict[str, Any]) -> str | None:
    """The section's `type`, lower-cased, also when written `store_type` (Rasa reads either;
    old Rasa docs wrote `store_type`): before, `store_type: redis` silently gave an in-memory
    store. The section then holds it as `type`; both, differing, are refused (the file and
    section named by `reading_section`)."""
    if "store_type" in config:
        store_type = config.pop("store_type")
        if config.get("type") not in (None, store_type):
            raise InvalidConfig(
                f"'type: {config['type']}' and 'store_type: {store_type}' disagree; keep one "
                "of them"
            )
        config["type"] = store_type
    kind = config.get("type")
    return None if kind is None else str(kind).strip().lower()
