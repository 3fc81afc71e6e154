"""The Redis tracker store: one list per conversation (RPUSH appends in O(1)).

Beside each list, `<prefix>:tracker_session:<id>` holds the list index where the current
session starts, so a load reads that session only. Rasa's one-JSON-string layout is
converted on first touch.
"""

from __future__ import annotations

import json
from typing import Any

from redis import exceptions as redis_errors

from server.trackers.redis_client import create_client, key_prefix, unavailable_as
from server.trackers.session_start import latest_session_start
from server.trackers.store import cache_events_setting

# KEYS: list, session index. ARGV: ttl (0 = none), start offset in batch (-1 = none),
# 1 when the batch starts with `session_started` (look at the stored event before it), events.
_APPEND = """
local before = redis.call('LLEN', KEYS[1])
for i = 4, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
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
end
return before
"""

_LOAD = """
local start = tonumber(redis.call('GET', KEYS[2]) or '0')
return redis.call('LRANGE', KEYS[1], start, -1)
"""


class RedisTrackerStore:
    """Tracker store on Redis lists."""

    process_local = False

    def __init__(self, config: dict[str, Any]) -> None:
        self._redis = create_client(config, default_db=0)
        self.cache_events = cache_events_setting(config)  # hot trackers over this store
        self._prefix = key_prefix(config, "tracker")
        self._session_prefix = key_prefix(config, "tracker_session")
        record_exp = config.get("record_exp")
        self._ttl = int(record_exp) if record_exp else 0
        self._append_script = self._redis.register_script(_APPEND)
        self._load_script = self._redis.register_script(_LOAD)

    def _keys(self, sender_id: str) -> list[str]:
        return [self._prefix + sender_id, self._session_prefix + sender_id]

    def _unavailable(self) -> Any:
        return unavailable_as("tracker store", self._redis)

    async def append(self, sender_id: str, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        start = latest_session_start(events)
        check_previous = start == 0 and events[0].get("event") == "session_started"
        args = [self._ttl, -1 if start is None else start, "1" if check_previous else "0"]
        args += [json.dumps(event) for event in events]
        with self._unavailable():
            await self._with_rasa_layout(
                sender_id, lambda: self._append_script(keys=self._keys(sender_id), args=args)
            )

    async def load(self, sender_id: str) -> list[dict[str, Any]] | None:
        with self._unavailable():
            raw = await self._with_rasa_layout(
                sender_id, lambda: self._load_script(keys=self._keys(sender_id))
            )
        return [json.loads(item) for item in raw] or None

    async def load_all(self, sender_id: str) -> list[dict[str, Any]] | None:
        key = self._prefix + sender_id
        with self._unavailable():
            raw = await self._with_rasa_layout(sender_id, lambda: self._redis.lrange(key, 0, -1))
        return [json.loads(item) for item in raw] or None

    async def replace(self, sender_id: str, events: list[dict[str, Any]]) -> None:
        with self._unavailable():
            await self._write_all(sender_id, events)

    async def _write_all(self, sender_id: str, events: list[dict[str, Any]]) -> None:
        key, session_key = self._keys(sender_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key, session_key)
            if events:
                pipe.rpush(key, *[json.dumps(event) for event in events])
                pipe.set(session_key, latest_session_start(events) or 0)
                if self._ttl:
                    pipe.expire(key, self._ttl)
                    pipe.expire(session_key, self._ttl)
            await pipe.execute()

    async def _with_rasa_layout(self, sender_id: str, operation: Any) -> Any:
        """Run `operation`; if the key holds Rasa's JSON string, convert it and run again."""
        try:
            return await operation()
        except redis_errors.ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
        stored = await self._redis.get(self._prefix + sender_id)
        events = json.loads(stored).get("events", []) if stored else []
        await self._write_all(sender_id, events)
        return await operation()

    async def keys(self) -> list[str]:
        found = []
        with self._unavailable():
            async for key in self._redis.scan_iter(match=self._prefix + "*", count=500):
                found.append(key[len(self._prefix) :])
        return found

    async def delete(self, sender_id: str) -> None:
        with self._unavailable():
            await self._redis.delete(*self._keys(sender_id))

    async def delete_older_than(self, cutoff_timestamp: float) -> int:
        deleted = 0
        for sender_id in await self.keys():
            key = self._prefix + sender_id
            with self._unavailable():
                last = await self._with_rasa_layout(
                    sender_id, lambda k=key: self._redis.lindex(k, -1)
                )
            latest = float(json.loads(last).get("timestamp") or 0.0) if last else 0.0
            if latest < cutoff_timestamp:
                await self.delete(sender_id)
                deleted += 1
        return deleted

    async def ping(self) -> None:
        with self._unavailable():
            await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
