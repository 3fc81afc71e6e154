"""The Redis lock store: one turn at a time per conversation across processes and hosts,
in arrival order.

The lease is a key holding the turn's random owner token (with a lifetime, renewed while the
turn runs, deleted only by its owner). A message that finds it taken, or others waiting,
takes a ticket: its token in the conversation's queue in Redis, with an expiry each of its
polls extends. The lease goes to the first live ticket of the queue, whichever process it
is in; a release wakes that waiter (in another process through pub/sub). Acquires and
releases are one script each; those of one event loop pass share a pipeline
(redis_batch.CommandBatch). A turn's end sends its release and does not wait for the reply.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import shlex
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

from redis import exceptions as redis_errors

from server.errors import InvalidConfig, LockTimeout, StoreUnavailable, clause, how_many
from server.outages import OUTAGES, WINDOW_SECONDS, RepeatsCounted
from server.setting_values import key_line, near_miss
from server.tasks import stop, stop_if_cancelled
from server.trackers.lock import IdleLocks
from server.trackers.memory_lock import timeout_message, wait_timeout_setting
from server.trackers.redis_batch import CommandBatch
from server.trackers.redis_client import (
    READINESS_SCRIPT,
    REDIS_ERRORS,
    create_client,
    dependency,
    describe,
    key_prefix,
    refuse_a_cluster,
    store_error,
    store_errors_as,
)
from server.trackers.redis_leases import RedisLeases, database_of, server_of
from server.trackers.store import ENDPOINT_SETTINGS

logger = logging.getLogger(__name__)

DEFAULT_LOCK_LIFETIME = 60.0
# Each poll of a waiter (at least every sixth of it) extends its ticket by this much: a waiter
# whose process died (or whose loop stalled this long) loses its place after it.
TICKET_LIFETIME = 3.0

# A lease key without a lifetime is no lease of ours (they all have one) but Rasa's ticket
# lock: JSON whose tickets (JSON text each) expire at `expires`, seconds since 1970. Rasa
# sets no lifetime on the key and deletes it only when its last ticket is served, so a Rasa
# process that died in a turn left it for good. Stale when no ticket in it is live (Rasa
# too takes such a lock). Another program's key (not Rasa's JSON) is left as it is.
_STALE_LEASE = """
local function stale(key, value, now)
  if redis.call('PTTL', key) ~= -1 then
    return false
  end
  local read, lock = pcall(cjson.decode, value)
  if not read or type(lock) ~= 'table' or type(lock.tickets) ~= 'table' then
    return false
  end
  for _, ticket in ipairs(lock.tickets) do
    if type(ticket) == 'string' then
      read, ticket = pcall(cjson.decode, ticket)
    end
    local expires = type(ticket) == 'table' and tonumber(ticket.expires)
    if expires and expires * 1000 > now then
      return false
    end
  end
  return true
end
"""

# KEYS: the lease, the queue (tokens in arrival order), the tickets (token -> expiry, ms of
# Redis's clock). ARGV: token, lease ms, ticket ms. Returns 1 when the lease is ours (also
# when a re-sent call finds the lease an earlier send took), 0 when this token is first in
# line, -1 when others are ahead. A free lease with nobody in line costs an EXISTS more than
# a plain SET NX.
_ACQUIRE = (
    _STALE_LEASE
    + """
if redis.call('EXISTS', KEYS[2]) == 0
    and redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return 1
end
local head = redis.call('LINDEX', KEYS[2], 0)
if redis.replicate_commands then
  redis.replicate_commands()
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if holder and stale(KEYS[1], holder, now) then
  holder = false
end
while head and head ~= ARGV[1] do
  local expires = tonumber(redis.call('HGET', KEYS[3], head))
  if expires and expires > now then
    break
  end
  redis.call('LPOP', KEYS[2])
  redis.call('HDEL', KEYS[3], head)
  head = redis.call('LINDEX', KEYS[2], 0)
end
if not holder and (not head or head == ARGV[1]) then
  if head then
    redis.call('LPOP', KEYS[2])
    redis.call('HDEL', KEYS[3], ARGV[1])
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if redis.call('HSET', KEYS[3], ARGV[1], now + tonumber(ARGV[3])) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
if not head or head == ARGV[1] then
  return 0
end
return -1
"""
)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS and ARGV[1] as _ACQUIRE's; ARGV[2] the wake channels' prefix. Deletes the lease if it
# is ours, else takes our ticket out of the line, if any. When that leaves the lease free for
# a waiter, returns its token (else 1 or 0), after publishing it on its process's channel if
# that is another process (a token starts with its process's id; pcall: a Redis user whose
# ACL allows no channels still releases, its waiters take the lease at their polls).
_RELEASE = """
local released = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  released = 1
elseif redis.call('HDEL', KEYS[3], ARGV[1]) == 1 then
  redis.call('LREM', KEYS[2], 1, ARGV[1])
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
  end
else
  return 0
end
local head = redis.call('LINDEX', KEYS[2], 0)
if not head then
  return released
end
local process = string.sub(head, 1, 16)
if process ~= string.sub(ARGV[1], 1, 16) then
  redis.pcall('PUBLISH', ARGV[2] .. process, head)
end
return head
"""

# The prune's batches: every free key nobody waits for taken (SET NX PX) in one call, and
# given back (a stale one of Rasa's too). KEYS: the leases, then their queues. ARGV: lease in
# ms, then a token per lease. 1/0 per lease: 1 also for a lease that holds its token already
# (the call sent again after its reply was lost, a turn perhaps in line behind it since;
# before, 0: a lease nobody renewed or gave back, which held the conversation for
# lock_lifetime).
_TAKE_FREE = (
    _STALE_LEASE
    + """
if redis.replicate_commands then
  redis.replicate_commands()
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local count = #KEYS / 2
local taken = {}
for i = 1, count do
  taken[i] = 0
  local holder = redis.call('GET', KEYS[i])
  if holder == ARGV[1 + i] then
    taken[i] = 1
  elseif redis.call('EXISTS', KEYS[count + i]) == 0 then
    if not holder or stale(KEYS[i], holder, now) then
      redis.call('SET', KEYS[i], ARGV[1 + i], 'PX', ARGV[1])
      taken[i] = 1
    end
  end
end
return taken
"""
)

# KEYS: leases; ARGV: lease in ms, then their tokens. Renews each lease that still holds its
# token (1), else 0: the prune's look before a delete.
_RENEW_ALL = """
local renewed = {}
for i, key in ipairs(KEYS) do
  renewed[i] = 0
  if redis.call('GET', key) == ARGV[1 + i] then
    renewed[i] = redis.call('PEXPIRE', key, ARGV[1])
  end
end
return renewed
"""

# KEYS: leases; ARGV: their tokens. Deletes each lease that still holds its token.
_RELEASE_ALL = """
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then
    redis.call('DEL', key)
  end
end
return 0
"""

# The prune's take sets this lifetime (lock_lifetime when shorter), and its look before the
# batch's delete (`IdleLocks.still_held`), right after, renews the leases to lock_lifetime: a
# take whose reply never came (the connection broke, its retry failed too) leaves leases
# nobody renews or gives back for this long. Before, for lock_lifetime (60 s by default).
_TAKEN_LIFETIME = 3.0

_FIRST_POLL = 0.002
# The first in line polls more often: the lease may be free for it, no one else may take it.
# (A release wakes it at once: the polls are for a wake-up that was lost.) The others poll
# to keep their tickets; the release before their turn wakes them.
_MAX_FIRST_POLL = 0.01
_MAX_POLL_IN_LINE = TICKET_LIFETIME / 6
_FIRST_RELEASE_RETRY = 0.1
_MAX_RELEASE_RETRY = 2.0


def _env_lock_lifetime() -> float:
    """`$TICKET_LOCK_LIFETIME` as Rasa reads it (`int(...) or 60`: unset, empty or 0 is the
    default 60 s); before, 0 was refused at start-up, which Rasa started with."""
    text = os.environ.get("TICKET_LOCK_LIFETIME", "").strip()
    try:
        return float(text or 0) or DEFAULT_LOCK_LIFETIME
    except ValueError:
        raise InvalidConfig(
            f"TICKET_LOCK_LIFETIME must be a number of seconds, not '{text}'"
        ) from None


# The longest lease Redis takes: its end, in ms since 1970, must fit in 63 bits.
MAX_LOCK_LIFETIME = 2**62 / 1000


# Renewals that failed because Redis could not be reached: the first logged, then counted.
_RENEWALS_FAILED = RepeatsCounted(logger, WINDOW_SECONDS)
# Waits that timed out on a key without an expiry: the first of a conversation's logged,
# then counted for the window.
_KEPT_FOR_GOOD = RepeatsCounted(logger, WINDOW_SECONDS)
# Releases that failed so, likewise: during an outage under load, every conversation with a
# turn in flight failed its own (before, one warning line each).
_RELEASES_FAILED = RepeatsCounted(logger, WINDOW_SECONDS)


# Why a held lease may be gone (with lock_lifetime).
_LEASE_LOST = (
    "Redis lost it (restarted without its data, a failover to a replica that did not have "
    "it), or this process stalled for most of lock_lifetime (%g s)"
)
# Why a prune's lease ran out before the look after its take renewed it (with the lifetime it
# was taken for): before, the cause said was `_LEASE_LOST`'s stall of most of lock_lifetime.
_TAKE_ANSWERED_LATE = (
    "Redis answered the prune's take of the lock, or the look after it, more than %g s after "
    "it ran (a busy Redis, a slow network), or Redis lost it (restarted without its data, a "
    "failover to a replica that did not have it)"
)
# The same causes, for the leases of several conversations found gone at once (a prune's
# batch): one line for them all.
_LOCKS_LOST = (
    "Redis lost them (restarted without its data, a failover to a replica that did not have "
    "them), or this process stalled for most of lock_lifetime (%g s)"
)
_LOCK_TAKES_ANSWERED_LATE = (
    "Redis answered the prune's take of the locks, or the look after it, more than %g s "
    "after it ran (a busy Redis, a slow network), or Redis lost them (restarted without its "
    "data, a failover to a replica that did not have them)"
)
# Why a held lease ran out when its renewals failed (with for how long).
_LEASE_UNRENEWED = "it could not be renewed for %.1f s (Redis unreachable)"
_LOCKS_UNRENEWED = "they could not be renewed for up to %.1f s (Redis unreachable)"
# Why a held lease ran out when no renewal went out (with for how long, and lock_lifetime).
_LEASE_OVERDUE = (
    "it ran out, not renewed for %.1f s (lock_lifetime %g s): this process stalled (its event "
    "loop blocked)"
)
# Turns whose lease was gone when they ended: the first logged, then counted (a Redis that
# restarted without its data took the leases of every turn in flight at once).
_LEASES_LOST = RepeatsCounted(logger, WINDOW_SECONDS)


# A conversation's lease, queue and tickets keys (`RedisLockStore._keys`).
_Keys = tuple[bytes, bytes, bytes]

# A release sent (`RedisLockStore._give_back_soon`): keys, token, conversation, whether the
# turn held the lease to its end, since when its renewals failed, for how long it had not
# been renewed when the turn ended if that is longer than lock_lifetime (else None).
_Release = tuple[_Keys, str, str, bool, float | None, float | None]

# A lease held by this process (`RedisLockStore._held`): its key, conversation, when its
# renewal is due, and when it runs out at the latest (its last renewal's reply plus
# lock_lifetime).
_Held = tuple[bytes, str, float, float]


# The `lock_store:` settings read: Rasa's RedisLockStore arguments, and ours.
SETTINGS = frozenset(
    {"type", "url", "host", "port", "db", "username", "password", "use_ssl", "ssl_certfile"}
    | {"ssl_keyfile", "ssl_ca_certs", "key_prefix", "socket_timeout"}
    | {"lock_lifetime", "wait_timeout"}
)


def _deletion(key: bytes) -> str:
    """How to delete `key`, for a log line: a shell command when its name can be typed (quoted
    for a shell: the name holds a client's sender id, `'` and `;` included); else, a name with
    control characters (escaped in the log, which would delete another key) or bytes that are
    no UTF-8, a client's."""
    try:
        name = key.decode()
    except UnicodeDecodeError:
        name = ""
    if name and name.isprintable():
        return f": redis-cli -n <db> DEL {shlex.quote(name)}"
    return (
        " with a Redis client that takes the name as bytes (it holds characters a command "
        "line would not carry as they are)"
    )


class RedisLockStore:
    """Conversation locks in Redis, served in arrival order across processes."""

    process_local = False

    def __init__(self, config: dict[str, Any]) -> None:
        unknown = [key for key in config if key not in SETTINGS | ENDPOINT_SETTINGS]
        if unknown:  # (before, ignored: a misspelt key_prefix shared another bot's locks)
            read = sorted(SETTINGS - {"type"})
            meant = near_miss(str(unknown[0]), read)
            hint = (
                f"did you mean '{meant}'?"
                if meant
                else f"the Redis lock store reads {', '.join(read)}"
            )
            line = key_line(config, unknown[0])
            raise InvalidConfig(
                f"unknown setting '{unknown[0]}'{f' on line {line}' if line else ''} "
                f"(Rasa refuses it too); {hint}"
            )
        self._redis = create_client(config, default_db=1)
        self._prefix = key_prefix(config, "lock")
        self._queue_prefix = key_prefix(config, "lock_queue", quiet=True)
        self._prefix_bytes = self._prefix.encode()
        self._queue_bytes = self._queue_prefix.encode()
        self._tickets_bytes = key_prefix(config, "lock_tickets", quiet=True).encode()
        # Tokens start with the process's id: a release publishes the next waiter's token on
        # its process's channel, so a waiter of another process takes the lease at once.
        self._process = secrets.token_hex(8)
        wake_prefix = key_prefix(config, "lock_wake", quiet=True)
        self._wake_channel = wake_prefix + self._process
        self._wake_prefix = wake_prefix.encode()
        self._listener: asyncio.Task[None] | None = None
        self.lock_lifetime = float(config.get("lock_lifetime") or _env_lock_lifetime())
        self.wait_timeout = wait_timeout_setting(config)
        # Redis refuses a lease under 1 ms, or one whose end is past its clock's 64 bits
        # (before, every turn answered 500 then; an infinite one named no setting).
        if not 0.001 <= self.lock_lifetime <= MAX_LOCK_LIFETIME:
            raise InvalidConfig(
                f"lock_store.lock_lifetime (or TICKET_LOCK_LIFETIME) must be from 0.001 to "
                f"{MAX_LOCK_LIFETIME:g} seconds, not {self.lock_lifetime:g}"
            )
        # Whether INFO said this Redis is no Cluster node (`ping`).
        self._cluster_checked = False
        self._acquire_script = self._redis.register_script(_ACQUIRE)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._take_free = self._redis.register_script(_TAKE_FREE)
        self._release_all = self._redis.register_script(_RELEASE_ALL)
        self._renew_all = self._redis.register_script(_RENEW_ALL)
        self._readiness = self._redis.register_script(READINESS_SCRIPT)
        self._batch = CommandBatch(self._redis)
        # The scripts' constant arguments, packed once: redis-py encodes each str or int
        # argument on every call, bytes not (this keeps the turn's client CPU as it was with
        # a plain SET and a one-key release).
        lifetime_ms = int(self.lock_lifetime * 1000)
        ticket_ms = int(TICKET_LIFETIME * 1000)
        self._acquire_head = (self._acquire_script.sha.encode(), b"3")
        self._acquire_tail = (str(lifetime_ms).encode(), str(ticket_ms).encode())
        self._release_head = (self._release.sha.encode(), b"3")
        # Waiters of this process by token: a release that finds one first in line wakes it
        # at once instead of at its next poll.
        self._waiters: dict[str, asyncio.Future[None]] = {}
        # Releases of leases (or tickets) sent and not answered yet.
        self._releases: set[asyncio.Future[Any]] = set()
        self._closing = False
        # Releases retried after Redis could not be reached (cancelled on close).
        self._retries: set[asyncio.Task[None]] = set()
        # Leases held by this process's turns, by token.
        self._held: dict[str, _Held] = {}
        self._renewer: asyncio.Task[None] | None = None
        # Those of them a prune holds (`hold_idle`): a lost one is let go of there.
        self._held_by_prune: dict[str, IdleLocks] = {}
        # Those of them not renewed yet since their take, by the lifetime they were taken for.
        self._taken_for: dict[str, float] = {}
        # Held leases whose renewal failed (Redis unreachable): token -> since when.
        self._unrenewed: dict[str, float] = {}
        # Tokens: this process's id and a serial number (unique, and no urandom per turn).
        self._serial = itertools.count()

    def describe(self) -> str:
        """Where its Redis is, without credentials: "redis at 10.0.0.5:6379/0"."""
        return describe(self._redis)

    async def ping(self) -> None:
        """Raises StoreUnavailable when Redis cannot be reached or cannot take the turns'
        writes (a read-only replica, a full one), StoreFailed when it refuses them (a user not
        allowed scripts), for the start-up check and /health/ready: `READINESS_SCRIPT` on the
        lease key of a conversation nobody has (it changes nothing). Before, a PING, which
        such a Redis answers while every turn fails; then the release script, which a full
        Redis runs (it only deletes) while it refuses every lease."""
        lease, _, _ = self._keys(secrets.token_hex(16))
        if not self._cluster_checked:  # (one key: a slot the node serves passed)
            await refuse_a_cluster("lock store", self._redis)
            self._cluster_checked = True
        with store_errors_as("lock store", self._redis):
            await self._readiness(keys=[lease])

    async def eviction_risk(self) -> str | None:
        """Why Redis may evict the lease of a running turn, or None: `maxmemory` set with a
        policy that evicts keys when full (`volatile-*` ones evict keys with a lifetime first,
        and every lease has one; Rasa's lock key has none). For the start-up check; None too
        when Redis does not say (a user not allowed INFO)."""
        try:
            memory = await self._redis.info("memory")
        except REDIS_ERRORS:
            return None
        policy = memory.get("maxmemory_policy", "noeviction")
        if not memory.get("maxmemory") or policy == "noeviction":
            return None
        return (
            f"The lock store ({describe(self._redis)}) may evict the lease of a running turn "
            f"when full (maxmemory {memory.get('maxmemory_human', memory['maxmemory'])}, "
            f"maxmemory-policy {policy}): two turns of a conversation may run at once then. "
            "Set maxmemory-policy noeviction, or give the locks a Redis of their own"
        )

    def _keys(self, conversation_id: str) -> _Keys:
        """The lease, the queue and the tickets of a conversation, as bytes: redis-py sends
        bytes as they are, a str it tests and encodes again on every call."""
        name = conversation_id.encode()
        return self._prefix_bytes + name, self._queue_bytes + name, self._tickets_bytes + name

    def lock(
        self,
        conversation_id: str,
        wait_timeout: float | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> _Lease:
        return _Lease(self, conversation_id, wait_timeout, on_wait)

    def _hold(
        self,
        token: str,
        key: bytes,
        conversation_id: str,
        now: float,
        lifetime: float | None = None,
    ) -> None:
        """Keeps the lease renewed while held: every lease held for a third of its lifetime
        is renewed by one task per process (no timer or task per turn; most turns end long
        before). `now`: at or after the reply that took it; `lifetime`: the one it was taken
        with, if not lock_lifetime."""
        lifetime = self.lock_lifetime if lifetime is None else lifetime
        self._held[token] = (key, conversation_id, now + lifetime / 3, now + lifetime)
        if self._renewer is None:
            self._renewer = asyncio.ensure_future(self._renew_held())

    async def _renew_held(self) -> None:
        """While leases are held, sleeps until the first is due and renews those due: a
        lease is renewed a third of its lifetime after it was taken or last renewed. (A
        lease taken later is due later: the sleep never overshoots one.)"""
        loop = asyncio.get_running_loop()
        try:
            while self._held:
                now = loop.time()
                first = min(held[2] for held in self._held.values())
                if first > now:
                    await asyncio.sleep(first - now)
                    continue
                due = [token for token, held in self._held.items() if held[2] <= now]
                found = await asyncio.gather(*(self._renew_one(token, now) for token in due))
                self._leases_found_gone([gone for gone in found if gone is not None], now)
        finally:
            self._renewer = None

    async def _renew_one(self, token: str, now: float) -> tuple[str, str, float | None] | None:
        """Renews a held lease; one found gone is no longer held, and returned (its token,
        conversation, since when its renewals failed) for the renewer to say."""
        held = self._held.get(token)
        if held is None:  # given back after it was found due (before, a KeyError ended the
            return None  # renewer, and the other leases held ran out)
        key, conversation_id, _, runs_out = held
        try:
            renewed = await self._renew(keys=[key], args=[token, int(self.lock_lifetime * 1000)])
        except (redis_errors.RedisError, OSError) as exc:
            # One line for every lease of the process, then one count a minute: before, each
            # held lease logged a warning at every retry.
            _RENEWALS_FAILED.log(
                f"could not renew the leases of running turns ({describe(self._redis)})",
                "Could not renew %s (%s): %s; retried every %g s, further failures to "
                "renew are counted in one line a minute",
                _locks_of([conversation_id]),
                describe(self._redis),
                clause(exc),
                self.lock_lifetime / 6,
            )
            if token in self._held:  # tried again a sixth of the lifetime later
                due = now + self.lock_lifetime / 6
                self._held[token] = (key, conversation_id, due, runs_out)
                self._unrenewed.setdefault(token, now)
            return None
        if token not in self._held:  # released meanwhile: nothing to renew
            return None
        failed_since = self._unrenewed.pop(token, None)
        if renewed:
            self._taken_for.pop(token, None)
            answered = asyncio.get_running_loop().time()
            due = now + self.lock_lifetime / 3
            self._held[token] = (key, conversation_id, due, answered + self.lock_lifetime)
            return None
        del self._held[token]
        return token, conversation_id, failed_since

    def _leases_found_gone(self, gone: Sequence[tuple[str, str, float | None]], now: float) -> None:
        """Held leases found gone at once (token, conversation, since when their renewals
        failed): let go of by their prune, and said in one line for those of one cause.
        Before, one ERROR a conversation: a Redis answering a prune's take after the 3 s
        its leases are taken for logged one for each of the batch's 500."""
        # (pruned, how, lifetime taken for) -> [(conversation, for how long unrenewed)]
        said: dict[tuple[bool, str, float | None], list[tuple[str, float]]] = {}
        for token, conversation_id, failed_since in gone:
            # (A prune's lease: before, told as a turn's, and the prune went on to delete it.)
            idle = self._held_by_prune.get(token)
            if idle is not None:
                idle.lose(conversation_id)
            taken_for = self._taken_for.pop(token, None)
            if failed_since is not None:  # (before, this too advised raising lock_lifetime)
                how, taken_for = "unrenewed", None
            elif taken_for is None:
                # Renewed every third of its lifetime, a lease runs out only if this process
                # stalled for the rest of it; more often Redis lost it (before, the advice was
                # to raise lock_lifetime "if turns take longer", which renewals already allow).
                how = "lost"
            else:
                how = "late"
            unrenewed = 0.0 if failed_since is None else now - failed_since
            said.setdefault((idle is not None, how, taken_for), []).append(
                (conversation_id, unrenewed)
            )
        for (pruned, how, taken_for), found in said.items():
            one = len(found) == 1
            if how == "unrenewed":  # (several: the longest)
                longest = max(unrenewed for _, unrenewed in found)
                verb, cause = "expired", (_LEASE_UNRENEWED if one else _LOCKS_UNRENEWED) % longest
            elif how == "lost":
                verb = "was gone"
                cause = (_LEASE_LOST if one else _LOCKS_LOST) % self.lock_lifetime
            else:
                verb = "was gone"
                cause = (_TAKE_ANSWERED_LATE if one else _LOCK_TAKES_ANSWERED_LATE) % taken_for
            _say_leases_gone([c for c, _ in found], pruned, verb, cause)

    @asynccontextmanager
    async def hold_idle(self, conversation_ids: Sequence[str]) -> AsyncIterator[IdleLocks]:
        """Two scripts a batch: one takes every free key nobody waits for (a token each),
        one gives them back (compare-and-delete). Taken for a few seconds (`_TAKEN_LIFETIME`),
        then renewed as a turn's lease is (the look before the delete, at once): before, a
        batch that took longer than lock_lifetime let turns in while it deleted their
        conversations."""
        free_here = list(dict.fromkeys(conversation_ids))
        tokens = [f"{self._process}{next(self._serial):016x}" for _ in free_here]
        lifetime = min(self.lock_lifetime, _TAKEN_LIFETIME)
        keys = [self._prefix + c for c in free_here] + [self._queue_prefix + c for c in free_here]
        with store_errors_as("lock store", self._redis):
            args: list[int | str] = [int(lifetime * 1000), *tokens]
            taken = await self._take_free(keys=keys, args=args) if keys else []
        now = asyncio.get_running_loop().time()
        held = [(c, t) for c, t, ok in zip(free_here, tokens, taken, strict=True) if ok]
        leases = RedisLeases(
            server_of(self._redis),
            database_of(self._redis),
            {conversation_id: (self._prefix + conversation_id, t) for conversation_id, t in held},
            partial(self._lost_at_delete, dict(held)),
        )
        idle = IdleLocks(
            (conversation_id for conversation_id, _ in held),
            partial(self._check_idle, dict(held)),
            leases,
        )
        for conversation_id, token in held:
            key = (self._prefix + conversation_id).encode()
            self._hold(token, key, conversation_id, now, lifetime)
            self._held_by_prune[token] = idle
            if lifetime < self.lock_lifetime:
                self._taken_for[token] = lifetime
        try:
            yield idle
        finally:
            runs_out = now
            for _, token in held:
                if (lease := self._held.pop(token, None)) is not None:
                    runs_out = max(runs_out, lease[3])
                self._unrenewed.pop(token, None)
                self._held_by_prune.pop(token, None)
                self._taken_for.pop(token, None)
            await self._give_back_all(held, runs_out)

    async def _check_idle(self, tokens: dict[str, str], idle: IdleLocks) -> None:
        """Renews, in one script, the leases `idle` still holds (`tokens`: by conversation),
        before a delete goes out: one gone since the take (a Redis restarted without its
        data; no renewal due yet would have seen it) is let go of, and said. Before, the
        delete went out for it, beside any turn another process began there meanwhile."""
        ids = idle.ids()
        keys = [self._prefix + conversation_id for conversation_id in ids]
        args: list[int | str] = [int(self.lock_lifetime * 1000), *(tokens[c] for c in ids)]
        with store_errors_as("lock store", self._redis):
            renewed = await self._renew_all(keys=keys, args=args)
        now = asyncio.get_running_loop().time()
        gone: list[tuple[str, str, float | None]] = []
        for conversation_id, ok in zip(ids, renewed, strict=True):
            token = tokens[conversation_id]
            held = self._held.get(token)
            if held is None:  # (its renewal found it gone meanwhile, and said so)
                continue
            if ok:
                self._unrenewed.pop(token, None)
                self._taken_for.pop(token, None)
                due, runs_out = now + self.lock_lifetime / 3, now + self.lock_lifetime
                self._held[token] = (held[0], conversation_id, due, runs_out)
            else:
                del self._held[token]
                gone.append((token, conversation_id, self._unrenewed.pop(token, None)))
        self._leases_found_gone(gone, now)

    def _lost_at_delete(self, tokens: dict[str, str], conversation_ids: Sequence[str]) -> None:
        """Prune leases the delete's scripts found gone (`RedisLeases.gone`): said, and let
        go of."""
        gone = []
        for conversation_id in conversation_ids:
            token = tokens[conversation_id]
            if self._held.pop(token, None) is None:  # (its renewal found it gone, and said so)
                continue
            gone.append((token, conversation_id, self._unrenewed.pop(token, None)))
        self._leases_found_gone(gone, asyncio.get_running_loop().time())

    async def _give_back_all(self, held: list[tuple[str, str]], runs_out: float) -> None:
        """Gives back the leases of `held` (conversation, token), retried while Redis cannot
        be reached until they have run out (`runs_out`, at the latest): the prune's process
        closes its lock store and exits next, which stops a retry in the background (before:
        the conversations' messages then waited out lock_lifetime once Redis was back). In
        the background when the prune is being stopped (Ctrl-C), as a turn's release is."""
        if not held:
            return
        keys, tokens = [self._prefix + c for c, _ in held], [t for _, t in held]
        loop = asyncio.get_running_loop()
        pause = _FIRST_RELEASE_RETRY
        failed = False
        while True:
            # Stopped during a try (its outcome unknown), as it failed (a stop the client's
            # wait_for dropped), or between tries (before: left held): in the background.
            try:
                try:
                    await self._release_all(keys=keys, args=tokens)
                    return
                except (redis_errors.RedisError, OSError) as exc:
                    if not failed:
                        self._release_failed([c for c, _ in held], exc)
                        failed = True
                stop_if_cancelled()
                if loop.time() + pause >= runs_out:  # they will have run out
                    return
                await asyncio.sleep(pause)
            except asyncio.CancelledError:
                self._give_back_all_in_background(held)
                raise
            pause = min(pause * 2, _MAX_RELEASE_RETRY)

    def _give_back_all_in_background(self, held: list[tuple[str, str]]) -> None:
        for conversation_id, token in held:
            self._release_in_background(self._keys(conversation_id), token)

    async def _acquire(
        self,
        keys: _Keys,
        token: str,
        deadline: float,
        conversation_id: str,
        timeout: float,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        """Takes the lease, waiting in line until `deadline` (then LockTimeout)."""
        loop = asyncio.get_running_loop()
        pause = _FIRST_POLL
        while True:
            sent = OUTAGES.opened
            try:
                place = await self._take(keys, token, conversation_id)
            except REDIS_ERRORS as exc:
                error = store_error("lock store", self._redis, exc)
                if isinstance(error, StoreUnavailable):
                    # The connection may have broken after Redis ran the script: a lease
                    # nobody would give back, which held the conversation for the whole
                    # lifetime, or a ticket holding the line until it expires.
                    self._release_in_background(keys, token)
                raise error from exc
            if OUTAGES.any_away():  # Redis answered: the end of its outage, if it had one
                OUTAGES.reached(dependency(self._redis, "lock store"), sent)
            if place == 1:
                return
            if self._listener is None:  # the first wait of this process
                self._listener = asyncio.ensure_future(self._listen())
            try:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    await self._say_if_kept_for_good(keys[0], conversation_id)
                    raise LockTimeout(timeout_message(conversation_id, timeout))
                if on_wait is not None:
                    on_wait()
                await self._nap(token, min(pause, remaining))
            except BaseException:  # timed out or cancelled: out of the line at once
                self._give_back_soon(keys, token, conversation_id)
                raise
            pause = min(pause * 2, _MAX_FIRST_POLL if place == 0 else _MAX_POLL_IN_LINE)

    async def _say_if_kept_for_good(self, key: bytes, conversation_id: str) -> None:
        """A wait that timed out on a key without an expiry (another program's, or a Rasa
        process's with a ticket still live): one WARNING a window per conversation naming the
        key, which no lease of ours leaves, so that the operator can clear it. One PTTL, on a
        timeout alone; its failure is the timeout's to report."""
        try:
            expiry = await self._redis.pttl(key)
        except REDIS_ERRORS:
            return
        if expiry != -1:  # a lease of ours (it runs out), or gone meanwhile
            return
        _KEPT_FOR_GOOD.log(
            conversation_id,
            "The lock of conversation '%s' is held by Redis key '%s', which has no expiry "
            "(no TTL: no lease of botserver's; another program's key, or a Rasa process's "
            "ticket lock): its messages answer 503 until it goes. If no Rasa server is in "
            "that turn, delete it%s",
            conversation_id,
            key.decode(errors="backslashreplace"),
            _deletion(key),
        )

    async def _take(self, keys: _Keys, token: str, conversation_id: str) -> int:
        """The acquire script: 1 taken, 0 first in line, -1 others ahead. A turn cancelled
        meanwhile (a client gone, shutdown) gives back the lease or ticket its call may still
        take, so the next turn does not wait out the lease."""
        reply = self._batch.call(
            "EVALSHA", *self._acquire_head, *keys, token.encode(), *self._acquire_tail, keep=True
        )
        try:
            return int(await reply)
        except asyncio.CancelledError:
            # The call goes out all the same (kept): the release queued after it undoes it.
            self._give_back_soon(keys, token, conversation_id)
            raise
        except redis_errors.NoScriptError:  # after a Redis restart or a SCRIPT FLUSH
            pass
        try:
            return int(await self._acquire_script(keys=keys, args=[token, *self._acquire_tail]))
        except asyncio.CancelledError:
            self._release_in_background(keys, token)
            raise

    async def _nap(self, token: str, delay: float) -> None:
        """Until the next poll, or until a release of this process finds us first in line."""
        loop = asyncio.get_running_loop()
        waker = self._waiters[token] = loop.create_future()
        timer = loop.call_later(delay, _wake, waker)
        try:
            await waker
        finally:
            timer.cancel()
            del self._waiters[token]

    def _give_back_soon(
        self,
        keys: _Keys,
        token: str,
        conversation_id: str,
        held: bool = False,
        unrenewed_since: float | None = None,
        overdue: float | None = None,
    ) -> None:
        """Releases our lease (or leaves the line) without waiting for Redis's reply: the
        release goes out with the next batch, before anything asked after it, and its reply
        is seen to by `_given_back` (it wakes the next waiter if it is ours). `held`: a lease
        the turn held to its end (`unrenewed_since`: since when its renewals failed;
        `overdue`: for how long it had not been renewed, past its lifetime), whose absence
        is said. A bot's reply waited for it before: a Redis that took the release
        and never answered delayed it by the client's socket_timeout (10 s), for a lease
        that runs out by itself."""
        self._send_release(
            (
                "EVALSHA",
                *self._release_head,
                *keys,
                token.encode(),
                self._wake_prefix,
            ),
            (keys, token, conversation_id, held, unrenewed_since, overdue),
        )

    def _send_release(self, command: tuple[Any, ...], release: _Release) -> None:
        reply = self._batch.call(*command, keep=True)
        self._releases.add(reply)
        reply.add_done_callback(partial(self._given_back, release))

    def _given_back(self, release: _Release, reply: asyncio.Future[Any]) -> None:
        """The reply to a release (a done callback: no task a turn)."""
        self._releases.discard(reply)
        keys, token, conversation_id, held, unrenewed_since, overdue = release
        if reply.cancelled():  # (the batch's task was cancelled)
            self._release_in_background(keys, token)
            return
        error = reply.exception()
        if isinstance(error, redis_errors.NoScriptError):  # after a Redis restart or a SCRIPT
            # FLUSH: the script itself, which Redis keeps for the next EVALSHA
            command = ("EVAL", _RELEASE, b"3", *keys, token.encode(), self._wake_prefix)
            self._send_release(command, release)
            return
        if error is not None:
            self._release_failed([conversation_id], error)
            self._release_in_background(keys, token)
            return
        following = reply.result()
        if following.__class__ is str:
            if (waker := self._waiters.get(following)) is not None:
                _wake(waker)
        elif following == 0 and held:
            resent = self._batch.resent(reply)
            self._lease_was_gone(conversation_id, unrenewed_since, resent, overdue)

    def _lease_was_gone(
        self,
        conversation_id: str,
        unrenewed_since: float | None,
        resent: bool,
        overdue: float | None,
    ) -> None:
        """A turn's release found no lease of ours."""
        if resent and overdue is None:
            # Almost always the release's first send deleted it, Redis having run it before
            # the connection broke. (Before, the warning below: another turn may have run.)
            # A Redis that restarted closed the connection before the release went out,
            # which the batch finds before sending: that release went out once. (A lease
            # that had run out before the turn ended is said below, resent or not: before,
            # this line took it for one the first send had deleted.)
            logger.debug(
                "The release of the lock of conversation '%s' was sent again after the "
                "connection to Redis broke, and found no lease: its first send had most "
                "likely released it",
                conversation_id,
            )
            return
        if unrenewed_since is None and overdue is not None:
            cause = _LEASE_OVERDUE % (overdue, self.lock_lifetime)
        elif unrenewed_since is None:
            cause = _LEASE_LOST % self.lock_lifetime
        else:  # (before, blamed on Redis losing its data, or a stall)
            unrenewed = asyncio.get_running_loop().time() - unrenewed_since
            cause = _LEASE_UNRENEWED % unrenewed
        _LEASES_LOST.log(
            f"the locks of ended turns were gone ({describe(self._redis)})",
            "%s was gone when its turn ended: %s; another turn of the conversation may "
            "have run at the same time. Further such turns are counted in one line a minute",
            _locks_of([conversation_id], opening=True),
            cause,
        )

    def _release_failed(self, conversation_ids: Sequence[str], exc: BaseException) -> None:
        """One warning an outage, then counted; each conversation named at DEBUG (the others
        stay locked until a retry gets through, or their lease ends)."""
        where, reason = describe(self._redis), clause(exc)
        what = _locks_of(conversation_ids)
        until = "its lease ends" if len(conversation_ids) == 1 else "their leases end"
        logged = _RELEASES_FAILED.log(
            f"could not release the locks of ended turns ({where})",
            "Could not release %s (%s): %s; retrying until %s, further failures to release "
            "are counted in one line a minute",
            what,
            where,
            reason,
            until,
        )
        if not logged:
            logger.debug(
                "Could not release %s (%s): %s; retrying until %s", what, where, reason, until
            )

    def _release_in_background(self, keys: _Keys, token: str) -> None:
        if self._closing:  # (the retries are stopped: the lease runs out by itself)
            return
        task = asyncio.ensure_future(self._release_later(keys, token))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _release_later(self, keys: _Keys, token: str) -> None:
        """Retries a release that failed (Redis unreachable as the turn ended) or a lease
        an acquire may have left, until the lease would have run out: the conversation's
        next turn then waits for Redis to be back, not for the whole lease. Safe to repeat:
        it deletes only our own token."""
        loop = asyncio.get_running_loop()
        expires = loop.time() + max(self.lock_lifetime, TICKET_LIFETIME)
        pause = _FIRST_RELEASE_RETRY
        while loop.time() + pause < expires:
            await asyncio.sleep(pause)
            pause = min(pause * 2, _MAX_RELEASE_RETRY)
            with suppress(redis_errors.RedisError, OSError):
                await self._release(keys=keys, args=[token, self._wake_prefix])
                return

    async def _listen(self) -> None:
        """Wakes the waiters whose tokens other processes' releases publish on our channel.
        Only speeds the hand-over up: a message lost (Redis unreachable, not yet subscribed)
        leaves the waiter to its next poll."""
        pubsub = self._redis.pubsub()
        try:
            while True:
                try:
                    if not pubsub.subscribed:
                        await pubsub.subscribe(self._wake_channel)
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                except (redis_errors.RedisError, OSError) as exc:
                    logger.debug("Lock wake-ups paused: %s", exc)
                    with suppress(redis_errors.RedisError, OSError):
                        await pubsub.aclose()
                    pubsub = self._redis.pubsub()
                    await asyncio.sleep(_MAX_RELEASE_RETRY)
                    continue
                if message is not None and (waker := self._waiters.get(message["data"])):
                    _wake(waker)
        finally:
            with suppress(redis_errors.RedisError, OSError):
                await pubsub.aclose()

    async def wait_for_releases(self) -> None:
        """Until the releases sent so far are answered, or have failed (within the client's
        socket_timeout): a turn's end does not wait for its release."""
        while self._releases:  # (a release may send another: after a SCRIPT FLUSH)
            await asyncio.wait(list(self._releases))

    async def close(self) -> None:
        if self._renewer is not None:
            await stop(self._renewer)
        if self._listener is not None:
            await stop(self._listener)
        await self.wait_for_releases()  # they go through the batch: before it closes
        self._closing = True
        await self._batch.close()
        for task in list(self._retries):  # their leases run out by themselves
            await stop(task)
        await self._redis.aclose()


# Conversations a line about several locks names; the rest are counted.
_NAMED = 5


def _locks_of(conversation_ids: Sequence[str], opening: bool = False) -> str:
    """The locks of these conversations as a log line names them, in the singular for one:
    "the lock of conversation 'ana'", "the locks of 7 conversations ('ana', 'bob', 'cat',
    'dan', 'eve' and 2 more)" (with a capital T as the `opening` of a line)."""
    the = "The" if opening else "the"
    if len(conversation_ids) == 1:
        return f"{the} lock of conversation '{conversation_ids[0]}'"
    named = ", ".join(f"'{conversation_id}'" for conversation_id in conversation_ids[:_NAMED])
    if len(conversation_ids) > _NAMED:
        named += f" and {len(conversation_ids) - _NAMED} more"
    return f"{the} locks of {how_many(len(conversation_ids), 'conversation')} ({named})"


def _say_leases_gone(conversation_ids: list[str], pruned: bool, verb: str, cause: str) -> None:
    """One ERROR for leases found gone at once for one cause (`verb`: `expired` or `was
    gone`): the conversation, or how many and the first few."""
    one = len(conversation_ids) == 1
    if pruned:
        holder = "a prune held it" if one else "a prune held them"
        risk = (
            "the prune leaves the conversation alone (another process may be in a turn "
            "there), unless it had already deleted it beside such a turn"
            if one
            else "the prune leaves them alone (another process may be in a turn there), "
            "unless it had already deleted them beside such a turn"
        )
    else:
        holder = "its turn was still running" if one else "their turns were still running"
        risk = (
            "another turn of the conversation may have run at the same time"
            if one
            else "another turn of each may have run at the same time"
        )
    if not one and verb == "was gone":
        verb = "were gone"
    locks = _locks_of(conversation_ids, opening=True)
    logger.error("%s %s while %s: %s; %s.", locks, verb, holder, cause, risk)


def _wake(waker: asyncio.Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)


class _Lease:
    """`RedisLockStore.lock`: the conversation's lease held inside the `async with` block
    (a class, not a generator: the turn's hot path)."""

    __slots__ = ("_store", "_conversation_id", "_wait_timeout", "_on_wait", "_keys", "_token")

    def __init__(
        self,
        store: RedisLockStore,
        conversation_id: str,
        wait_timeout: float | None,
        on_wait: Callable[[], None] | None,
    ) -> None:
        self._store = store
        self._conversation_id = conversation_id
        self._wait_timeout = wait_timeout
        self._on_wait = on_wait

    async def __aenter__(self) -> None:
        store = self._store
        timeout = store.wait_timeout if self._wait_timeout is None else self._wait_timeout
        loop = asyncio.get_running_loop()
        now = loop.time()
        keys = self._keys = store._keys(self._conversation_id)
        token = self._token = f"{store._process}{next(store._serial):016x}"
        await store._acquire(
            keys, token, now + timeout, self._conversation_id, timeout, self._on_wait
        )
        store._hold(token, keys[0], self._conversation_id, loop.time())

    async def __aexit__(self, *exc_info: object) -> None:
        store = self._store
        renewing = store._held.pop(self._token, None)  # (None: its renewal found it gone)
        unrenewed_since = store._unrenewed.pop(self._token, None)
        overdue = None
        if renewing is not None:
            # Past the time it runs out at the latest, the lease is surely gone, whatever
            # the release finds (sent twice after a reply that was lost too).
            late = asyncio.get_running_loop().time() - renewing[3]
            if late > 0:
                overdue = late + store.lock_lifetime
        store._give_back_soon(
            self._keys,
            self._token,
            self._conversation_id,
            renewing is not None,
            unrenewed_since,
            overdue,
        )
