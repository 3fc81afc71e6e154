"""The Redis tracker store: one list per conversation (RPUSH appends in O(1)).

Beside each list, `<prefix>:tracker_session:<id>` holds the list index where the current
session starts, so a load reads that session only; a process keeps the sessions it read and
then reads only the items pushed since. Rasa's one-JSON-string layout is converted on first
touch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from server.errors import CorruptConversation, StoreFailed, first_line, how_many
from server.json_values import OFF_LOOP_JSON_BYTES
from server.trackers.events import OFF_LOOP_EVENTS, off_loop_if_long
from server.trackers.freeing import free_off_loop
from server.trackers.known_sessions import KnownSessions
from server.trackers.lock import IdleLocks
from server.trackers.redis_client import (
    READINESS_SCRIPT,
    create_client,
    describe,
    key_prefix,
    refuse_a_cluster,
    store_error,
    store_errors_as,
    watched,
)
from server.trackers.redis_leases import database_of
from server.trackers.session_start import latest_session_start
from server.trackers.snapshot import Snapshot
from server.trackers.store import Hold, cache_events_setting, holding, stored_events
from server.trackers.weight import KIB, extra_of_texts

logger = logging.getLogger(__name__)

# How many times a conversion of Rasa's layout whose transaction failed is tried.
_CONVERSION_ATTEMPTS = 3

# The key prefixes Rasa 3.6 takes; with another one it warned and used `tracker:`.
_RASA_KEY_PREFIX = re.compile(r"^[A-Za-z0-9]+$")

# The end of both append scripts: `before` is the list's length before the append. Sets the
# session index when the append starts a session, the expiry, and the append's id.
_APPENDED = """
local offset = tonumber(ARGV[2])
if offset >= 0 then
  local start = before + offset
  if ARGV[3] == '1' and before > 0 then
    local ok, prev = pcall(cjson.decode, redis.call('LINDEX', KEYS[1], before - 1))
    if ok and prev['event'] == 'action' and prev['name'] == 'action_session_start' then
      start = before - 1
    end
  end
  redis.call('SET', KEYS[2], start)
end
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
elseif redis.call('PERSIST', KEYS[1]) == 1 then  -- as Rasa's SET: an earlier expiry ends
  redis.call('PERSIST', KEYS[2])
end
redis.call('SET', KEYS[3], ARGV[4], 'PX', 300000)
return before
"""

# KEYS: list, session index, last append's id. ARGV: ttl (0 = none: ends an earlier one),
# start offset in batch (-1 = none), 1 when the batch starts with `session_started` (look at
# the stored event before it), this append's id, events. An append whose id is the last
# one's is one redis-py sent again after the connection broke on its reply: it was pushed
# already.
_APPEND = (
    """
if redis.call('GET', KEYS[3]) == ARGV[4] then return -1 end
local before = redis.call('LLEN', KEYS[1])
for i = 5, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
"""
    + _APPENDED
)

# A bulk append's last step. KEYS: as _APPEND's, then the staged key holding the list's items
# and the new ones. ARGV: as _APPEND's first four, then the list's length and last item when
# they were copied, and how many items were appended to the copy. The staged key takes the
# list's place when the list is still as copied (its expiry, which the rename brings, is
# then set or ended as by any append: without `record_exp` the session index's too); -2 when
# it is not, -3 when the staged key does not hold every item pushed to it (it expired, and a
# later slice made it again).
_APPEND_STAGED = (
    """
if redis.call('GET', KEYS[3]) == ARGV[4] then return -1 end
local before = tonumber(ARGV[5])
if redis.call('LLEN', KEYS[1]) ~= before
    or (before > 0 and redis.call('LINDEX', KEYS[1], -1) ~= ARGV[6]) then
  return -2
end
if redis.call('LLEN', KEYS[4]) ~= before + tonumber(ARGV[7]) then return -3 end
redis.call('RENAME', KEYS[4], KEYS[1])
"""
    + _APPENDED
)

# KEYS: a staged key (a long replace's or bulk append's items on their way). ARGV: the length
# it has before this push, its expiry in seconds, the items. Pushes them only if it has that
# length: a push redis-py sends again after the connection broke on its reply finds them
# there already (before, they were pushed twice, and the conversation then held them twice).
# Returns the length after.
_PUSH_STAGED = """
local length = redis.call('LLEN', KEYS[1])
if length == tonumber(ARGV[1]) then
  length = redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return length
"""

# A long replace's last step. KEYS: list, session index, last write's id, the staged key
# holding the new items. ARGV: ttl (0 = none), the session start, this replace's id, how
# many items were pushed to the staged key. The staged key takes the list's place; 0 when
# this replace was done already (redis-py sent it again after the connection broke on its
# reply: before, that second send deleted the conversation and failed on the RENAME of the
# staged key renamed away), -3 when the staged key does not hold every item pushed to it.
_REPLACE_STAGED = """
if redis.call('GET', KEYS[3]) == ARGV[3] then return 0 end
if redis.call('LLEN', KEYS[4]) ~= tonumber(ARGV[4]) then return -3 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('RENAME', KEYS[4], KEYS[1])
redis.call('PERSIST', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2])
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
redis.call('SET', KEYS[3], ARGV[3], 'PX', 300000)
return 1
"""

# KEYS: list, session index. ARGV: the session start and list length this process read last
# and the raw last item it read (-1, 0, "" for none). Returns {0, start, items pushed since}
# while the session is the same and what was read is still there (no replace, delete or
# expiry since), else {1, start, the whole current session}.
_LOAD = """
local start = tonumber(redis.call('GET', KEYS[2]) or '0')
local known_start, known_length = tonumber(ARGV[1]), tonumber(ARGV[2])
if start == known_start and known_length > start
    and redis.call('LINDEX', KEYS[1], known_length - 1) == ARGV[3] then
  return {0, start, redis.call('LRANGE', KEYS[1], known_length, -1)}
end
return {1, start, redis.call('LRANGE', KEYS[1], start, -1)}
"""


# The longest list the prune script reads itself, and the chunk its caller reads a longer one in.
_PRUNE_READ_HERE = 100
_PRUNE_READ_CHUNK = 1_000
# KEYS: list, session index, and the prune's lease when the lock store is on this server.
# ARGV: the cutoff; when the caller read a long list itself, its length and last item (the
# list is deleted only if they are still those; else ''); with the lease, its token, its
# database and this store's. A lease that no longer holds the token leaves the conversation
# alone ('lost'): the look at the lease and the delete are one step. Deletes the
# conversation when its newest event is older than the cutoff (an event without a timestamp
# counts as oldest), looked at and deleted in one step, so a turn appended meanwhile is never
# deleted; returns 1 if deleted. Events may be out of timestamp order (appended with old
# timestamps): the last one keeps a recent conversation at once, and the others of an old
# one are read back, here up to _PRUNE_READ_HERE of them; a longer list is left to the caller
# (returns minus its length), so no script holds Redis for long (100,000 events took 2.6 s).
_PRUNE = """
local cutoff = tonumber(ARGV[1])
if KEYS[3] then
  local apart = ARGV[5] ~= ARGV[6]
  if apart then redis.call('SELECT', ARGV[5]) end
  local holder = redis.call('GET', KEYS[3])
  if apart then redis.call('SELECT', ARGV[6]) end
  if holder ~= ARGV[4] then return 'lost' end
end
local function at(item)
  local ok, event = pcall(cjson.decode, item)
  return ok and type(event) == 'table' and tonumber(event['timestamp']) or 0
end
local last = redis.call('LINDEX', KEYS[1], -1)
if not last then return 0 end
if at(last) >= cutoff then return 0 end
local length = redis.call('LLEN', KEYS[1])
if ARGV[2] ~= '' then
  if length ~= tonumber(ARGV[2]) or last ~= ARGV[3] then return 0 end
else
  if length > READ_HERE then return -length end
  local items = redis.call('LRANGE', KEYS[1], 0, -2)
  for i = #items, 1, -1 do
    if at(items[i]) >= cutoff then return 0 end
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
""".replace("READ_HERE", str(_PRUNE_READ_HERE))


def _refusal(client: Redis, outcome: object) -> bool:
    """Whether a script's `outcome` is Redis refusing it (an ACL, a server's rule), not
    Redis unable to take commands for a while (BUSY, LOADING, out of memory)."""
    return isinstance(outcome, redis_errors.ResponseError) and isinstance(
        store_error("tracker store", client, outcome), StoreFailed
    )


# The prune script's answer for a conversation whose lease it found gone.
_LEASE_LOST = "lost"
# Conversations looked at per round trip by delete_older_than.
_PRUNE_BATCH = 500


def _one_at_a_time(outcome: object) -> bool:
    """Whether the prune script left the conversation to its caller, to be read and deleted
    on its own: too long for it (minus its length), or in Rasa's layout (WRONGTYPE)."""
    if isinstance(outcome, redis_errors.ResponseError):
        return "WRONGTYPE" in str(outcome)
    return isinstance(outcome, int) and outcome < 0


@dataclass
class _Session:
    """A current session as this process read it last."""

    start: int  # its first item's index in the list
    events: list[dict[str, Any]]  # parsed; only ever grows at its end (see Snapshot)
    last: str  # the raw JSON of its last item
    extra: int = 0  # what its events weigh beyond 1 each (see weight.py)


class RedisTrackerStore:
    """Tracker store on Redis lists."""

    process_local = False

    # The `tracker_store:` keys read: Rasa's RedisTrackerStore arguments, and ours (`host`,
    # `socket_timeout`, `cache_events`).
    SETTINGS = frozenset(
        {"url", "host", "port", "db", "username", "password", "use_ssl", "ssl_keyfile"}
        | {"ssl_certfile", "ssl_ca_certs", "key_prefix", "record_exp", "socket_timeout"}
        | {"cache_events"}
    )

    def __init__(self, config: dict[str, Any], read_only: bool = False) -> None:
        """`read_only` (`botserver export`): a conversation in Rasa's layout is read as it
        is, not converted to ours (a Rasa server sharing the database reads it still)."""
        self.read_only = read_only
        self._redis = create_client(config, default_db=0)
        self.cache_events = cache_events_setting(config)  # hot trackers over this store
        self._prefix = key_prefix(config, "tracker")
        _tell_where_rasa_kept_them(config, self._prefix)
        self._session_prefix = key_prefix(config, "tracker_session", quiet=True)
        self._append_prefix = key_prefix(config, "tracker_append", quiet=True)
        self._replacing_prefix = key_prefix(config, "tracker_replacing", quiet=True)
        record_exp = config.get("record_exp")
        self._ttl = int(record_exp) if record_exp else 0
        # Whether INFO said this Redis is no Cluster node (`refuse_a_cluster`).
        self._cluster_checked = False
        self._append_script = self._redis.register_script(_APPEND)
        self._append_staged_script = self._redis.register_script(_APPEND_STAGED)
        self._push_staged_script = self._redis.register_script(_PUSH_STAGED)
        self._replace_staged_script = self._redis.register_script(_REPLACE_STAGED)
        self._load_script = self._redis.register_script(_LOAD)
        self._prune_script = self._redis.register_script(_PRUNE)
        self._ping_script = self._redis.register_script(READINESS_SCRIPT)
        # Said once: without MEMORY USAGE (an ACL), `load_all_of` reads batches whole.
        self._memory_usage_refused = False
        # Said once: a server that refuses the prune script's SELECT of the lock store's
        # database (Dragonfly, an ACL) has the lease checked before the delete only.
        self._lease_select_refused = False
        # The sessions this process read, least recently used first, bounded in events.
        self._sessions: KnownSessions[_Session] = KnownSessions(self.cache_events)

    def _keys(self, sender_id: str) -> list[str]:
        return [self._prefix + sender_id, self._session_prefix + sender_id]

    def _errors(self) -> Any:
        return store_errors_as("tracker store", self._redis)

    async def append(self, sender_id: str, events: list[dict[str, Any]]) -> int | None:
        if not events:
            return 0
        start, items = await off_loop_if_long(_encoded, events)
        check_previous = start == 0 and events[0].get("event") == "session_started"
        args = [self._ttl, -1 if start is None else start, "1" if check_previous else "0"]
        args.append(secrets.token_hex(8))
        keys = [*self._keys(sender_id), self._append_prefix + sender_id]
        with self._errors():
            if len(items) > OFF_LOOP_EVENTS and await self._with_rasa_layout(
                sender_id, lambda: self._append_staged(sender_id, keys, args, items)
            ):
                return await asyncio.to_thread(extra_of_texts, items)
            await self._with_rasa_layout(
                sender_id, lambda: self._append_script(keys=keys, args=[*args, *items])
            )
        # What they weigh beyond 1 each, for the hot trackers (see weight.py).
        if len(items) > OFF_LOOP_EVENTS:
            return await asyncio.to_thread(extra_of_texts, items)
        return extra_of_texts(items)

    async def _append_staged(
        self, sender_id: str, keys: list[str], args: list[Any], items: list[str]
    ) -> bool:
        """A bulk append, a thousand items per command: as one script call, redis-py wrote
        its arguments out on the event loop (0.17 s for 100,000) and the script pushed them
        while Redis served nobody else (0.68 s for 300,000). The list's items, then the new
        ones, go to a key of their own, which takes the list's place in one script if the
        list is still as copied: all of the append or nothing. False when the list kept
        changing meanwhile, or the copy took longer than the staged key lives: the caller
        then appends in one script after all."""
        key, session_key = keys[0], keys[1]
        last: bytes | str
        for _ in range(_STAGING_ATTEMPTS):
            staged = f"{self._replacing_prefix}{sender_id}:{secrets.token_hex(8)}"
            try:
                # Watched while copied: any write to the list meanwhile (an append, a replace,
                # a delete, an expiry) fails the rename, even one leaving the list of the
                # length and last item copied (a replace between two slices of the copy).
                async with watched(self._redis, key, session_key) as pipe:
                    length, last = 0, b""  # the list's length and last item, as copied
                    while True:  # the list's items, as they are now
                        stored = await pipe.lrange(key, length, length + _ITEMS_PER_PUSH - 1)
                        if not stored:
                            break
                        await self._push_staged(staged, stored, length)
                        length, last = length + len(stored), stored[-1]
                    # (Short of them when it expired: the script then answers -3.)
                    await self._push_all_staged(staged, items, length)
                    pipe.multi()
                    await self._append_staged_script(
                        keys=[*keys, staged], args=[*args, length, last, len(items)], client=pipe
                    )
                    (outcome,) = await pipe.execute()
            except redis_errors.WatchError:
                # The list changed during the copy, or the connection broke (if on the
                # script's reply, the append's id tells the next attempt it was done).
                outcome = -2
            finally:
                with contextlib.suppress(redis_errors.RedisError, OSError):
                    await self._redis.delete(staged)  # (renamed away when it took the list's place)
            if outcome not in (-2, -3):
                return True
        return False

    async def _push_all_staged(self, staged: str, items: Sequence[str], before: int) -> int:
        """`items` pushed to a staged key that holds `before` items, a thousand per push (see
        `_push_staged`). The key's length after: short of `before + len(items)` when it
        expired meanwhile, found at the first push that fell short (none after it would push)."""
        length = before
        for first in range(0, len(items), _ITEMS_PER_PUSH):
            chunk = items[first : first + _ITEMS_PER_PUSH]
            length = await self._push_staged(staged, chunk, before + first)
            if length != before + first + len(chunk):
                break
        return length

    async def _push_staged(self, staged: str, items: Sequence[bytes | str], before: int) -> int:
        """Items pushed to a staged key that holds `before` items, with its expiry, in one
        step: a process that dies meanwhile leaves it for _STAGED_SECONDS at most (before, a
        death between the first RPUSH and the EXPIRE left it for good); each push restarts
        that time. Pushed once, also when redis-py sends it again. The key's length after:
        other than `before + len(items)` when it expired meanwhile."""
        args = [before, _STAGED_SECONDS, *items]
        return int(await self._push_staged_script(keys=[staged], args=args))

    async def load(self, sender_id: str) -> Sequence[dict[str, Any]] | None:
        """The current session; for one this process read before, only the items pushed
        since are read and parsed, so a load costs the same at message 10 and 10,000."""
        cached = self._sessions.get(sender_id)
        known_start, known_length, known_last = -1, 0, ""
        if cached is not None:
            known_start, known_length = cached.start, cached.start + len(cached.events)
            known_last = cached.last
        args: list[str | int] = [known_start, known_length, known_last]
        with self._errors():
            whole, start, items = await self._with_rasa_layout(
                sender_id, lambda: self._load_script(keys=self._keys(sender_id), args=args)
            )
        # Parsed before the check below: nothing may be awaited between it and the update.
        events, extra = await _weighed_events(sender_id, items)
        if not whole and (
            cached is not self._sessions.get(sender_id)
            or cached is None
            or cached.start + len(cached.events) != known_length
        ):
            return await self.load(sender_id)  # another load of it moved on meanwhile
        if whole:
            self._sessions.forget(sender_id)
            if not items:
                return None
            cached = _Session(int(start), events, items[-1], extra)
            self._sessions.keep(sender_id, cached, len(events) + extra, read=True)
        else:
            assert cached is not None
            if items:
                cached.events.extend(events)
                cached.last = items[-1]
                cached.extra += extra
            self._sessions.keep(sender_id, cached, len(items) + extra, loaded=True)
        return Snapshot(cached.events, extra=cached.extra)

    async def load_all(self, sender_id: str) -> list[dict[str, Any]] | None:
        key = self._prefix + sender_id
        if self.read_only:
            return await self._load_all_as_stored(sender_id) or None
        with self._errors():
            raw = await self._with_rasa_layout(sender_id, lambda: self._redis.lrange(key, 0, -1))
        events = await _events_of(sender_id, raw)
        await free_off_loop(raw)
        return events or None

    async def load_all_of(
        self, sender_ids: Sequence[str], max_bytes: int | None = None
    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """The lists in one pipeline, or with `max_bytes` in as many as keep each under it
        (by Redis's `MEMORY USAGE` of the keys, read first in one pipeline); a conversation
        in Rasa's layout (converted), or whose value is not UTF-8 text (named), is then read
        alone, as `load_all` reads it."""
        if max_bytes is None:
            groups = [list(sender_ids)]
        else:
            with self._errors():
                async with self._redis.pipeline(transaction=False) as pipe:
                    for sender_id in sender_ids:
                        pipe.memory_usage(self._prefix + sender_id, samples=0)
                    sizes = await pipe.execute(raise_on_error=False)
            refused = next((s for s in sizes if isinstance(s, redis_errors.ResponseError)), None)
            if refused is not None and not self._memory_usage_refused:
                self._memory_usage_refused = True
                logger.warning(
                    "Redis refused MEMORY USAGE (%s): each read of up to %s is made whole, "
                    "not in parts of at most %d bytes, and a batch of long conversations "
                    "takes as much memory here. Grant the command to the user: "
                    "ACL SETUSER <user> +memory|usage",
                    first_line(refused),
                    how_many(len(sender_ids), "conversation"),
                    max_bytes,
                )
            groups = _within(sender_ids, sizes, max_bytes)
        for group in groups:
            async for conversation in self._load_group(group):
                yield conversation

    async def _load_group(
        self, sender_ids: Sequence[str]
    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        with self._errors():
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for sender_id in sender_ids:
                        pipe.lrange(self._prefix + sender_id, 0, -1)
                    answers = await pipe.execute(raise_on_error=False)
            except UnicodeDecodeError:
                answers = [None] * len(sender_ids)
        for index, sender_id in enumerate(sender_ids):
            raw, answers[index] = answers[index], None  # (each list let go once parsed)
            if isinstance(raw, list):
                events: list[dict[str, Any]] | None = await _events_of(sender_id, raw)
            else:
                events = await self.load_all(sender_id)
            if events:
                yield sender_id, events

    async def replace(self, sender_id: str, events: list[dict[str, Any]]) -> None:
        self._sessions.forget(sender_id)
        with self._errors():
            await self._write_all(sender_id, events)

    async def _write_all(
        self, sender_id: str, events: list[dict[str, Any]], watching: Pipeline | None = None
    ) -> None:
        """The conversation's list made of `events`, in one transaction: on `watching`'s
        (which raises WatchError if its watched key changed since) or a new one."""
        key, session_key = self._keys(sender_id)
        start, items = await off_loop_if_long(_encoded, events)
        staged = None
        try:
            if len(items) > OFF_LOOP_EVENTS:
                # redis-py writes a command's arguments out on the event loop: one RPUSH of
                # 100,000 items held it 0.15-0.19 s. They go to a key of their own a piece at
                # a time, which then takes the list's place in the transaction.
                staged = f"{self._replacing_prefix}{sender_id}:{secrets.token_hex(8)}"
                if await self._push_all_staged(staged, items, 0) != len(items):
                    # Expired (a stall of _STAGED_SECONDS): renamed, it would lose items
                    # (a 503; before, the conversation lost them).
                    raise redis_errors.TimeoutError("a long replace's staged items expired")
            async with contextlib.AsyncExitStack() as stack:
                if watching is None:
                    pipe = await stack.enter_async_context(self._redis.pipeline(transaction=True))
                else:
                    pipe = watching
                    pipe.multi()
                if staged is None:
                    pipe.delete(key, session_key)
                    if items:
                        pipe.rpush(key, *items)
                        pipe.set(session_key, start or 0)
                        if self._ttl:
                            pipe.expire(key, self._ttl)
                            pipe.expire(session_key, self._ttl)
                else:
                    await self._replace_staged_script(
                        keys=[key, session_key, self._append_prefix + sender_id, staged],
                        args=[self._ttl, start or 0, secrets.token_hex(8), len(items)],
                        client=pipe,
                    )
                outcome = (await pipe.execute() or [None])[-1]
            if staged is not None and outcome == -3:
                # Expired after the last push: renamed, it would lose items.
                raise redis_errors.TimeoutError("a long replace's staged items expired")
        except BaseException:
            if staged is not None:
                with contextlib.suppress(redis_errors.RedisError, OSError):
                    await self._redis.delete(staged)
            raise
        await free_off_loop(items)

    async def _load_all_as_stored(self, sender_id: str) -> list[dict[str, Any]]:
        """`load_all` writing nothing: Rasa's layout is read where it is."""
        key = self._prefix + sender_id
        with self._errors(), _utf8_text(sender_id):
            try:
                raw = await self._redis.lrange(key, 0, -1)
            except redis_errors.ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                kind = await self._redis.type(key)
                if kind != "string":
                    raise _neither(sender_id, kind) from None
                return await _rasa_events(sender_id, await self._redis.get(key))
        events = await _events_of(sender_id, raw)
        await free_off_loop(raw)
        return events

    async def _with_rasa_layout(self, sender_id: str, operation: Any) -> Any:
        """Run `operation`; if the key holds Rasa's JSON string, convert it and run again.
        A value that is not UTF-8 text is CorruptConversation (before: the UnicodeDecodeError
        of reading Redis's answer, a 500 with a traceback; redis-py drops that connection)."""
        with _utf8_text(sender_id):
            try:
                return await operation()
            except redis_errors.ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
            await self._convert_rasa_layout(sender_id)
            return await operation()

    async def _convert_rasa_layout(self, sender_id: str) -> None:
        """Rasa's JSON string as our list, unless the key changed since it was read: another
        process converted it (and perhaps appended a turn's events to it) meanwhile, and
        what it wrote stands. Before, that turn's events were written over. A transaction
        that fails is looked at again: it also fails when the connection watching the key
        dropped (the key then unchanged), which was taken for another's conversion, and the
        operation run again on the string was a 500; so does a read of the string on a
        connection that dropped after its WATCH. A string that holds no tracker is
        CorruptConversation and stays as it is."""
        key = self._prefix + sender_id
        for _ in range(_CONVERSION_ATTEMPTS):
            try:
                async with watched(self._redis, key) as pipe:
                    # (A connection dropped from here on fails the read too, as a WatchError.)
                    kind = await pipe.type(key)
                    if kind not in ("string", "list", "none"):
                        raise _neither(sender_id, kind)
                    if kind != "string":
                        return  # converted (or deleted) since the operation failed
                    events = await _rasa_events(sender_id, await pipe.get(key))
                    await self._write_all(sender_id, events, watching=pipe)
                    return
            except redis_errors.WatchError:
                continue
        # (A 503: Redis kept dropping the connection, or the string kept being rewritten.)
        raise redis_errors.ConnectionError("converting Rasa's layout kept being interrupted")

    async def keys(self) -> list[str]:
        # SCAN may return a key twice (Redis rehashing between two pages): each one once,
        # in the order first seen, as KEYS (Rasa's) gives them.
        found: dict[str, None] = {}
        cursor = None
        while cursor != 0:
            cursor, sender_ids = await self._scan_page(cursor or 0)
            found.update(dict.fromkeys(sender_ids))
        return list(found)

    async def delete(self, sender_id: str) -> None:
        self._sessions.forget(sender_id)
        with self._errors():
            await self._redis.delete(*self._keys(sender_id))

    async def delete_older_than(
        self,
        cutoff_timestamp: float,
        hold: Hold | None = None,
        deleted_some: Callable[[int], None] | None = None,
    ) -> int:
        # A SCAN page at a time: memory stays bounded however many conversations there are.
        deleted, cursor = 0, 0
        while True:
            cursor, sender_ids = await self._scan_page(cursor)
            if sender_ids:
                async with holding(hold, sender_ids) as idle:
                    if held := await idle.still_held():
                        deleted += await self._prune(held, cutoff_timestamp, idle, deleted_some)
            if cursor == 0:
                return deleted

    async def _scan_page(self, cursor: int) -> tuple[int, list[str]]:
        """One SCAN step over the conversations: the next cursor (0: done) and their ids.
        The names come as bytes: one that is not UTF-8 (another program's key under the
        prefix) is passed over with a warning, where decoding the answer failed the page.
        A Redis Cluster node is refused first: its SCAN sees its own keys only (a prune
        said `Deleted 0 conversations.`)."""
        if cursor == 0:
            await self.refuse_a_cluster()
        with self._errors():
            cursor, keys = await self._redis.execute_command(
                "SCAN",
                cursor,
                "MATCH",
                self._prefix + "*",
                "COUNT",
                _PRUNE_BATCH,
                NEVER_DECODE=True,
            )
        sender_ids = []
        for key in keys:
            try:
                name = key.decode() if isinstance(key, bytes) else key
            except UnicodeDecodeError:
                logger.warning(
                    "Tracker store: the Redis key %r is not UTF-8 text, so no conversation's; "
                    "left as it is",
                    key,
                )
                continue
            sender_ids.append(name[len(self._prefix) :])
        return int(cursor), sender_ids

    async def _prune(
        self,
        batch: list[str],
        cutoff_timestamp: float,
        idle: IdleLocks,
        deleted_some: Callable[[int], None] | None = None,
    ) -> int:
        """Deletes those of `batch` whose newest event is older than the cutoff; how many.
        `idle`: their locks, looked at again before those deleted one at a time after the
        pipeline (a long list, Rasa's layout): one lost meanwhile is left alone. Before, no
        renewal due yet, it was deleted all the same. `deleted_some` is told each deletion as
        it is counted: the pipeline deletes the batch's short ones at once, so one failing
        after them (before: the batch's count lost with it) still has them said."""
        deleted = 0
        with self._errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                for sender_id in batch:
                    keys, args = self._prune_arguments(sender_id, cutoff_timestamp, idle)
                    await self._prune_script(keys=keys, args=args, client=pipe)
                outcomes = await pipe.execute(raise_on_error=False)

            def gone(sender_id: str) -> None:
                nonlocal deleted
                self._sessions.forget(sender_id)
                deleted += 1
                if deleted_some is not None:
                    deleted_some(1)

            for sender_id, outcome in zip(batch, outcomes, strict=True):
                if outcome == 1:  # (deleted by the pipeline: said before any failure after)
                    gone(sender_id)
            # (One line for them all: a failover loses every lease at once.)
            self._leases_lost(
                [c for c, outcome in zip(batch, outcomes, strict=True) if outcome == _LEASE_LOST],
                idle,
            )
            if any(map(_one_at_a_time, outcomes)):
                await idle.still_held()
            for sender_id, outcome in zip(batch, outcomes, strict=True):
                if outcome == 1 or outcome == _LEASE_LOST:
                    continue  # (counted, or said)
                if _one_at_a_time(outcome) and sender_id not in idle:
                    continue  # its lock was lost
                try:
                    if self._selects(idle) and _refusal(self._redis, outcome):
                        outcome = await self._prune_without_select(
                            sender_id, cutoff_timestamp, idle, outcome
                        )
                    if isinstance(outcome, redis_errors.ResponseError) and (
                        "WRONGTYPE" in str(outcome)
                    ):
                        keys, args = self._prune_arguments(sender_id, cutoff_timestamp, idle)
                        with self._errors():
                            outcome = await self._with_rasa_layout(
                                sender_id,
                                lambda k=keys, a=args: self._prune_script(keys=k, args=a),
                            )
                    if isinstance(outcome, Exception):
                        with self._errors():
                            raise outcome
                    if isinstance(outcome, int) and outcome < 0:  # too long for the script
                        outcome = await self._prune_long(
                            sender_id, -outcome, cutoff_timestamp, idle
                        )
                except CorruptConversation as exc:
                    # Kept, for someone to look at; before, it stopped the prune.
                    logger.warning("%s; retention keeps it.", exc)
                    continue
                if outcome == 1:
                    gone(sender_id)
                elif outcome == _LEASE_LOST:
                    self._leases_lost([sender_id], idle)
        return deleted

    def _prune_arguments(
        self,
        sender_id: str,
        cutoff_timestamp: float,
        idle: IdleLocks,
        length: int | str = "",
        last: bytes | str = "",
    ) -> tuple[list[str], list[Any]]:
        """The prune script's keys and arguments: with the conversation's lease when the
        lock store is on this Redis server (as the same user), which the script checks in
        the step that deletes. Before, a lease lost after the look before the delete (a
        failover) was too late to skip."""
        keys, args = self._keys(sender_id), [cutoff_timestamp, length, last]
        lease = idle.leases.lease_of(self._redis, sender_id) if idle.leases else None
        if self._lease_select_refused and self._selects(idle):
            lease = None
        if lease is not None and idle.leases is not None:
            keys.append(lease[0])
            args += [lease[1], idle.leases.db, database_of(self._redis)]
        return keys, args

    def _selects(self, idle: IdleLocks) -> bool:
        """Whether the prune script checks `idle`'s leases in another database (a SELECT)."""
        leases = idle.leases
        return (
            leases is not None
            and leases.on_server_of(self._redis)
            and leases.db != database_of(self._redis)
        )

    async def _prune_without_select(
        self,
        sender_id: str,
        cutoff_timestamp: float,
        idle: IdleLocks,
        refused: redis_errors.ResponseError,
    ) -> Any:
        """The prune script failed with its SELECT of the lock store's database: sent again
        without the lease. If that works, the server refuses SELECT inside a script (Dragonfly
        with declared keys, an ACL): said once, and from then on the look just before the
        delete is the last one, as with a lock store on another server. Before, every
        conversation's script failed and the prune stopped on a script error. If it fails
        too, `refused` stands."""
        first = not self._lease_select_refused
        self._lease_select_refused = True
        keys, args = self._prune_arguments(sender_id, cutoff_timestamp, idle)
        try:
            outcome = await self._prune_script(keys=keys, args=args)
        except redis_errors.ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                self._lease_select_refused = not first
                return refused
            outcome = exc
        if not first:
            return outcome
        logger.warning(
            "The tracker store (%s) refused the prune script's SELECT of the lock store's "
            "database %s (%s): each lock is checked just before the delete instead, not in "
            "the same step. Put both stores in one database (their `db`) for that check.",
            describe(self._redis),
            idle.leases.db if idle.leases is not None else "?",
            refused,
        )
        return outcome

    @staticmethod
    def _leases_lost(sender_ids: list[str], idle: IdleLocks) -> None:
        """The prune script found these conversations' leases gone, and left them alone."""
        if not sender_ids:
            return
        if idle.leases is not None:
            idle.leases.gone(sender_ids)
        for sender_id in sender_ids:
            idle.lose(sender_id)  # (said by the lock store: this only if it had not been)

    async def _prune_long(
        self, sender_id: str, length: int, cutoff_timestamp: float, idle: IdleLocks
    ) -> int | str:
        """A conversation too long for the prune script to read: read back from its end here,
        a chunk at a time, until an event as new as the cutoff keeps it; deleted (1) only if
        none is and the list is unchanged since it was read (an append or a replace since
        keeps it). The list is watched before it is read: before, only its length and last
        item were compared, and a replace by a list as long, of the same last item, with a
        recent event elsewhere was deleted."""
        key, session_key = self._keys(sender_id)
        last: bytes | str = b""  # the list's last item, from the first chunk read
        with self._errors(), _utf8_text(sender_id):
            async with watched(self._redis, key, session_key) as pipe:
                stop = length - 1
                while stop >= 0:
                    start = max(0, stop - _PRUNE_READ_CHUNK + 1)
                    items = await self._redis.lrange(key, start, stop)
                    if len(items) != stop - start + 1:  # shortened meanwhile (a replace, a delete)
                        return 0
                    if stop == length - 1:
                        last = items[-1]
                    if any(_timestamp(item) >= cutoff_timestamp for item in items):
                        return 0
                    stop = start - 1
                pipe.multi()
                # (The script checks the length: the list may have grown before the watch.)
                call = self._prune_arguments(sender_id, cutoff_timestamp, idle, length, last)
                await self._prune_script(keys=call[0], args=call[1], client=pipe)
                try:
                    (outcome,) = await pipe.execute()
                except redis_errors.WatchError:  # written meanwhile
                    return 0
        return outcome if outcome == _LEASE_LOST else int(outcome)

    async def ping(self) -> None:
        """For /health/ready: `READINESS_SCRIPT` on a key nobody has, so that a Redis refusing
        the appends' writes or scripts (a read-only replica, a full one, a user not allowed
        scripts) fails it. Before, a PING, which such a Redis answers."""
        await self.refuse_a_cluster()
        with self._errors():
            await self._ping_script(keys=[self._prefix + secrets.token_hex(16)])

    def describe(self) -> str:
        """Where its Redis is, without credentials: "redis at 10.0.0.5:6379/0"."""
        return describe(self._redis)

    async def refuse_a_cluster(self) -> None:
        """StoreFailed for a Redis Cluster node, which every turn would meet (the start-up
        check, /health/ready, a prune's or an export's start); asked once (`INFO cluster`)."""
        if not self._cluster_checked:
            await refuse_a_cluster("tracker store", self._redis)
            self._cluster_checked = True

    async def close(self) -> None:
        await self._redis.aclose()


def _tell_where_rasa_kept_them(config: dict[str, Any], prefix: str) -> None:
    """A prefix we take and Rasa ignored (`my_bot`): a Rasa server with this endpoints.yml
    kept its conversations at `tracker:<id>`, which this store does not read."""
    given = config.get("key_prefix")
    if prefix == "tracker:" or _RASA_KEY_PREFIX.match(str(given)):
        return
    logger.warning(
        "tracker_store: key_prefix '%s' keeps conversations at '%s<id>'; Rasa 3.6 takes "
        "letters and digits only, ignored this prefix and kept them at 'tracker:<id>'. "
        "Conversations a Rasa server stored with this endpoints.yml are not read: rename "
        "their keys (RENAME tracker:<id> %s<id>) or use a prefix of letters and digits",
        given,
        prefix,
        prefix,
    )


T = TypeVar("T")

# A replace of a long conversation pushes this many items per command.
_ITEMS_PER_PUSH = 1_000
# How long such a replace's (or a bulk append's) items may wait in their own key before the
# transaction.
_STAGED_SECONDS = 600
# How often a bulk append copies the list again when it changed during the copy.
_STAGING_ATTEMPTS = 3


def _encoded(events: Sequence[dict[str, Any]]) -> tuple[int | None, list[str]]:
    """Where the events' last session starts, and their JSON items."""
    return latest_session_start(events), [json.dumps(event) for event in events]


def _within(sender_ids: Sequence[str], sizes: list[Any], max_bytes: int) -> list[list[str]]:
    """`sender_ids` in groups, in order, of at most `max_bytes` by their keys' sizes (one
    larger alone; a size Redis did not give, as none)."""
    groups: list[list[str]] = [[]]
    held = 0
    for sender_id, size in zip(sender_ids, sizes, strict=True):
        size = size if isinstance(size, int) else 0
        if groups[-1] and held + size > max_bytes:
            groups.append([])
            held = 0
        groups[-1].append(sender_id)
        held += size
    return groups


class _NotAnObject(Exception):
    """Rasa's stored tracker, or one of its events, that is JSON but not an object."""


async def _weighed_events(
    sender_id: str, items: Sequence[str | bytes]
) -> tuple[list[dict[str, Any]], int]:
    """The stored items as event dicts, and what they weigh beyond 1 each: many weighed and
    parsed in a thread; a few weighed here, and parsed in a thread when big (a session
    heavier than the cache is read at every load: before, each of its turns parsed it on
    the event loop)."""
    if len(items) > OFF_LOOP_EVENTS:
        return await asyncio.to_thread(_events_and_extra, sender_id, items)
    extra = extra_of_texts(items)
    if extra > OFF_LOOP_JSON_BYTES // KIB:
        return await asyncio.to_thread(stored_events, sender_id, items, what="an item"), extra
    return stored_events(sender_id, items, what="an item"), extra


def _events_and_extra(
    sender_id: str, items: Sequence[str | bytes]
) -> tuple[list[dict[str, Any]], int]:
    return stored_events(sender_id, items, what="an item"), extra_of_texts(items)


async def _events_of(sender_id: str, items: Sequence[str | bytes]) -> list[dict[str, Any]]:
    """The stored items as event dicts (see `stored_events`)."""
    return await off_loop_if_long(partial(stored_events, sender_id, what="an item"), items)


@contextlib.contextmanager
def _utf8_text(sender_id: str) -> Iterator[None]:
    """A conversation's value that is not UTF-8 text (redis-py decodes Redis's answers) as
    CorruptConversation naming it."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise CorruptConversation(
            f"Conversation '{sender_id}' holds a value that is not UTF-8 text ({exc})"
        ) from exc


def _neither(sender_id: str, kind: str | bytes) -> CorruptConversation:
    """A key under the tracker prefix that is neither our list nor Rasa's string (another
    program's): before, `WRONGTYPE`, the store failing, which stopped every export (with
    `--skip-unreadable` too) and every prune at it."""
    if isinstance(kind, bytes):
        kind = kind.decode()
    return CorruptConversation(
        f"Conversation '{sender_id}' is a Redis {kind}, neither botserver's list nor Rasa's "
        "string (another program's key under the tracker prefix?)"
    )


async def _rasa_events(sender_id: str, stored: str | bytes | None) -> list[Any]:
    """The events of a conversation kept in Rasa's layout: one JSON string of its tracker,
    an object with a list of `events`, parsed in a thread when long (before, on the loop:
    0.16 s of CPU for 100,000 events, 10 MB). CorruptConversation when it holds anything
    else: before, that was a 500 with a traceback, or (an object without `events`) the key
    was taken for an empty conversation and deleted."""
    where = f"Conversation '{sender_id}' is kept in Rasa's layout (one JSON string), but"
    if stored is None:  # deleted since its type was read
        return []
    try:
        if len(stored) > OFF_LOOP_JSON_BYTES:
            return await asyncio.to_thread(_tracker_events, stored)
        return _tracker_events(stored)
    except ValueError as exc:
        raise CorruptConversation(f"{where} its value is not JSON ({exc})") from exc
    except RecursionError:  # (before: a 500 with a traceback, a prune stopped at it)
        raise CorruptConversation(f"{where} its value is nested too deeply to read") from None
    except _NotAnObject:
        raise CorruptConversation(
            f"{where} its value is not a tracker (a JSON object with a list of events, "
            "each an object)"
        ) from None


def _tracker_events(stored: str | bytes) -> list[dict[str, Any]]:
    """The events of Rasa's JSON of a tracker; _NotAnObject when it is not an object with a
    list of objects as `events` (before review73, events that were no objects were an
    AttributeError as they were converted)."""
    value = json.loads(stored)
    events = value.get("events") if isinstance(value, dict) else None
    if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
        raise _NotAnObject
    return events


def _timestamp(item: bytes | str) -> float:
    """A stored item's timestamp as the prune script reads it (none, or no event: 0)."""
    try:
        event = json.loads(item)
    except (ValueError, RecursionError):
        return 0.0
    at = event.get("timestamp") if isinstance(event, dict) else None
    if isinstance(at, bool) or not isinstance(at, (int, float, str)):
        return 0.0
    try:
        return float(at)
    except ValueError:
        return 0.0
