"""The DynamoDB tracker store, on Rasa 3's table layout: one item per conversation.

An item holds `sender_id` (the partition key, no sort key), `name` and `events`: a list of
the conversation's event maps, every session, numbers as DynamoDB numbers (Rasa's floats as
Decimal). boto3 blocks: every request runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import decimal
import json
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from server.aws_sessions import boto3_session
from server.errors import (
    CorruptConversation,
    InvalidConfig,
    InvalidConversationId,
    StoreFailed,
    StoreRefusedData,
    StoreUnavailable,
    first_line,
    needs_extra,
)
from server.trackers.known_sessions import KnownSessions
from server.trackers.retention import latest_timestamp
from server.trackers.session_start import latest_session_start
from server.trackers.snapshot import Snapshot
from server.trackers.store import Hold, cache_events_setting, holding, stored_events
from server.trackers.weight import KIB

logger = logging.getLogger(__name__)

# Rasa's defaults for `table_name` and `region`.
DEFAULT_TABLE = "states"
DEFAULT_REGION = "us-east-1"
# DynamoDB's limit on one item (names and values), so on one conversation in this layout.
ITEM_LIMIT_BYTES = 400 * 1024
# A conversation past this share of the limit is logged once per process: it will be refused.
WARN_AT_SHARE = 0.75
WARN_AT_BYTES = int(ITEM_LIMIT_BYTES * WARN_AT_SHARE)
# Conversations warned of (a bound on memory; past it, each is warned of at every sighting).
MAX_WARNED = 10_000

# The most conversations a prune holds the locks of at a time (IdleLocks), deleting them
# one request each: a turn on one of them waits for up to that many deletes.
DELETE_HELD = 50

# Error codes after which the same request may succeed later: a 503, not a 500.
_BUSY_CODES = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "LimitExceededException",
    "TransactionConflictException",
}
# The most bytes (UTF-8) of a partition key: DynamoDB refuses a longer key with a
# ValidationException.
KEY_LIMIT_BYTES = 2048
# The table names DynamoDB takes, and a table's ARN (which it takes in their place).
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_TABLE_ARN = re.compile(r"arn:[a-z-]+:dynamodb:[^:]*:[0-9]*:table/[A-Za-z0-9_.-]{3,255}")
# The attribute names, as placeholders: `name` is one of DynamoDB's reserved words.
_NAMES = {"#events": "events", "#name": "name", "#append": "botserver_append"}
# The attribute a replace writes its token to (see _Known.rewrite); an append that creates
# the item (or finds one without it: Rasa's, an earlier botserver's) writes its own token.
_REWRITE = "botserver_rewrite"
_APPEND_NAMES = {**_NAMES, "#rewrite": _REWRITE}

T = TypeVar("T")


class DynamoTrackerStore:
    """Tracker store on a DynamoDB table (created, with on-demand billing, if missing and
    `create_table`)."""

    process_local = False

    # The `tracker_store:` keys read: Rasa's DynamoTrackerStore arguments, and ours.
    SETTINGS = frozenset({"table_name", "region", "endpoint_url", "socket_timeout", "cache_events"})

    def __init__(self, config: dict[str, Any], create_table: bool = True) -> None:
        try:
            import boto3  # noqa: F401 (missing: the extra is named)
            from botocore.config import Config
        except ImportError as exc:
            raise needs_extra("tracker_store type 'dynamo'", "boto3", "aws") from exc
        self.cache_events = cache_events_setting(config)  # hot trackers over this store
        self.table = str(config.get("table_name") or DEFAULT_TABLE)
        if not _TABLE_NAME.fullmatch(self.table) and not _TABLE_ARN.fullmatch(self.table):
            # Before, taken: every request then failed with DynamoDB's ValidationException.
            raise InvalidConfig(
                f"table_name {self.table!r} is no DynamoDB table name: 3 to 255 letters, "
                "digits, '_', '-' or '.' (or the table's ARN)"
            )
        self.region = str(config.get("region") or DEFAULT_REGION)
        self.endpoint = (
            config.get("endpoint_url")
            or os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )
        timeout = float(config.get("socket_timeout", 10))
        if timeout <= 0:
            raise InvalidConfig(f"socket_timeout must be positive, not {timeout:g}")
        client_config = Config(
            connect_timeout=min(timeout, 5.0),
            read_timeout=timeout,
            # One retry: botocore's default (up to 5 attempts, backing off) kept a turn
            # waiting for its 503 for tens of seconds while DynamoDB could not be reached.
            retries={"total_max_attempts": 2, "mode": "standard"},
            max_pool_connections=32,
        )
        from botocore.exceptions import BotoCoreError, InvalidRegionError

        try:
            self._client = boto3_session().client(
                "dynamodb",
                region_name=self.region,
                endpoint_url=self.endpoint,
                config=client_config,
            )
        except InvalidRegionError:  # (a ValueError, once blamed on endpoint_url below)
            raise InvalidConfig(
                f"region {self.region!r} is no AWS region name (such as us-east-1)"
            ) from None
        except BotoCoreError as exc:  # a profile not in the config file, a file no INI
            raise InvalidConfig(
                f"AWS settings botocore cannot use: {exc} (check AWS_PROFILE, AWS_CONFIG_FILE "
                "and the other AWS_ variables)"
            ) from None
        except ValueError as exc:  # botocore's "Invalid endpoint"
            raise InvalidConfig(f"endpoint_url {self.endpoint!r} is not usable: {exc}") from None
        self._create_table = create_table  # False: a missing table is StoreFailed
        self._ready = False
        self._ready_lock = asyncio.Lock()
        # The conversations this process read or wrote last, least recently used first,
        # bounded in events, each with the append token the item held then.
        self._known: KnownSessions[_Known] = KnownSessions(self.cache_events)
        self._warned: set[str] = set()  # conversations near the item limit, warned of

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"DynamoDB table '{self.table}' in {self.region}{where}"

    # -- lifecycle -------------------------------------------------------------------------

    async def _ensure_ready(self) -> None:
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                await self._run(self._create_table_if_missing)
                self._ready = True

    def _create_table_if_missing(self) -> None:
        errors = self._client.exceptions
        try:
            table = self._client.describe_table(TableName=self.table)["Table"]
        except errors.ResourceNotFoundException:
            if not self._create_table:
                raise StoreFailed(
                    f"The tracker store's {self.describe()} does not exist: check table_name "
                    "and region (botserver run creates it)"
                ) from None
            logger.info("Creating the %s for the tracker store", self.describe())
            try:
                self._client.create_table(
                    TableName=self.table,
                    KeySchema=[{"AttributeName": "sender_id", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "sender_id", "AttributeType": "S"}],
                    # A write takes a unit per KB of the whole item: Rasa's 5 provisioned
                    # write units are one append a second to a 5 KB conversation.
                    BillingMode="PAY_PER_REQUEST",
                )
            except errors.ResourceInUseException:
                pass  # another process creates it just now
            self._client.get_waiter("table_exists").wait(
                TableName=self.table, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
            )
            table = self._client.describe_table(TableName=self.table)["Table"]
        keys = [(key["AttributeName"], key["KeyType"]) for key in table["KeySchema"]]
        if keys != [("sender_id", "HASH")]:
            raise StoreFailed(
                f"The tracker store's {self.describe()} has the key schema {keys}; botserver "
                "uses Rasa 3's layout: partition key 'sender_id' (string), no sort key. "
                "Name another table_name (it is created) or migrate this one."
            )

    async def ping(self) -> None:
        await self._ensure_ready()
        await self._run(lambda: self._client.describe_table(TableName=self.table))

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    # -- reads -----------------------------------------------------------------------------

    async def load(self, sender_id: str) -> Sequence[dict[str, Any]] | None:
        """The current session. A conversation this process knows is read again only when
        the item's append token changed (another process, Rasa, a replace): otherwise the
        request reads the token alone, so a turn does not read and parse the whole item."""
        await self._ensure_ready()
        known = self._known.get(sender_id)
        expected = None if known is None else known.token
        fresh = await self._run(lambda: self._read_if_changed(sender_id, expected))
        if fresh is _UNCHANGED:
            assert known is not None
            if self._known.get(sender_id) is known:  # (not let go of meanwhile)
                self._known.keep(sender_id, known, 0, loaded=True)
            events, extra, rewrite = known.events, known.extra, known.rewrite
        elif fresh is None:
            self._known.forget(sender_id)
            return None
        else:
            assert isinstance(fresh, _Known)
            self._known.forget(sender_id)
            if fresh.token is not None:
                self._known.keep(sender_id, fresh, len(fresh.events) + fresh.weigh(), read=True)
            if fresh.size is not None:
                self._near_limit(sender_id, fresh.size)
            events, extra, rewrite = fresh.events, fresh.extra, fresh.rewrite
        start = latest_session_start(events) or 0
        return Snapshot(events, start, extra=extra, generation=rewrite)

    def generation(self, sender_id: str) -> str | None:
        """The `generation` of the conversation as this store holds it: the token of the
        replace that wrote its item (None: none known, or an item no replace of ours
        wrote)."""
        known = self._known.get(sender_id)
        return None if known is None else known.rewrite

    def _near_limit(self, sender_id: str, size: int) -> None:
        """Warns, once per conversation, when its item passes WARN_AT_BYTES."""
        if size < WARN_AT_BYTES or sender_id in self._warned:
            return
        if len(self._warned) < MAX_WARNED:
            self._warned.add(sender_id)
        logger.warning(
            "Conversation '%s' takes about %d KB of the %d KB a DynamoDB item holds: past "
            "that its messages are refused (400). Replace its events with fewer (PUT "
            "/conversations/<id>/tracker/events) or use the sql or redis tracker store.",
            sender_id,
            size // 1024,
            ITEM_LIMIT_BYTES // 1024,
        )

    async def load_all(self, sender_id: str) -> list[dict[str, Any]] | None:
        await self._ensure_ready()
        fresh = await self._run(lambda: self._read_if_changed(sender_id, None))
        return None if not isinstance(fresh, _Known) else list(fresh.events)

    def _read_if_changed(self, sender_id: str, token: str | None) -> _Known | object | None:
        """_UNCHANGED when the item still holds `token`; else the item's events and token
        (None when there is no conversation)."""
        if token is not None:
            item = self._client.get_item(
                TableName=self.table,
                Key=_key(sender_id),
                ProjectionExpression="#append",
                ExpressionAttributeNames={"#append": _NAMES["#append"]},
                ConsistentRead=True,
            ).get("Item")
            if item is not None and item.get(_NAMES["#append"], {}).get("S") == token:
                return _UNCHANGED
        response = self._client.get_item(
            TableName=self.table,
            Key=_key(sender_id),
            ProjectionExpression="#events, #append, #rewrite",
            ExpressionAttributeNames={
                "#events": "events",
                "#append": _NAMES["#append"],
                "#rewrite": _REWRITE,
            },
            ConsistentRead=True,
        )
        item = response.get("Item")
        if item is None:
            return None
        events = [_event(sender_id, value) for value in _values(sender_id, item)]
        if not events:
            return None
        size, bound = _size(sender_id, response)
        token = item.get(_NAMES["#append"], {}).get("S")
        rewrite = item.get(_REWRITE, {}).get("S")
        return _Known(token, events, size, bound, rewrite=rewrite)

    async def keys(self) -> list[str]:
        await self._ensure_ready()
        return [item["sender_id"]["S"] for item in await self._run(self._scan_all)]

    def _scan_all(self, projection: str = "sender_id") -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for page in self._pages(projection):
            items += page
        return items

    async def each_conversation(
        self, unreadable: Callable[[str, CorruptConversation], None] | None = None
    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """Every conversation with its events, a Scan page (up to 1 MB) at a time: one
        pass over the table (eventually consistent, as `keys()` reads it), where `keys()` and
        then a consistent GetItem of each took three times the read units. One that cannot
        be read goes to `unreadable` where given (else it ends the pass)."""
        await self._ensure_ready()
        pages = self._pages("sender_id, #events")
        while (page := await self._run(partial(self._next_conversations, pages))) is not None:
            for sender_id, events in page:
                if isinstance(events, CorruptConversation):
                    if unreadable is None:
                        raise events
                    unreadable(sender_id, events)
                else:
                    yield sender_id, events

    @staticmethod
    def _next_conversations(
        pages: Iterator[list[dict[str, Any]]],
    ) -> list[tuple[str, list[dict[str, Any]] | CorruptConversation]] | None:
        """The conversations of the next scan page that have events, or the error of one
        that cannot be read (None after the last page)."""
        page = next(pages, None)
        if page is None:
            return None
        conversations: list[tuple[str, list[dict[str, Any]] | CorruptConversation]] = []
        for item in page:
            sender_id = item["sender_id"]["S"]
            try:
                events = [_event(sender_id, value) for value in _values(sender_id, item)]
            except CorruptConversation as exc:
                conversations.append((sender_id, exc))
                continue
            if events:
                conversations.append((sender_id, events))
        return conversations

    def _pages(self, projection: str) -> Iterator[list[dict[str, Any]]]:
        paginator = self._client.get_paginator("scan")
        names = {"#events": "events"} if "#events" in projection else None
        options: dict[str, Any] = {"TableName": self.table, "ProjectionExpression": projection}
        if names:
            options["ExpressionAttributeNames"] = names
        for page in paginator.paginate(**options):
            yield page.get("Items", [])

    # -- writes ----------------------------------------------------------------------------

    async def append(self, sender_id: str, events: list[dict[str, Any]]) -> int | None:
        if not events:
            return 0
        await self._ensure_ready()
        known = self._known.get(sender_id)
        expected = None if known is None else known.token
        token = secrets.token_hex(8)
        extended, added, extra = await self._run(
            lambda: self._append(sender_id, events, token, expected), sender_id
        )
        self._extend_known(sender_id, known, expected, token, events, extended, added)
        return extra

    def _extend_known(
        self,
        sender_id: str,
        known: _Known | None,
        expected: str | None,
        token: str,
        events: list[dict[str, Any]],
        extended: bool,
        added: int,
    ) -> None:
        """Follows an append in what the process knows of the conversation, when that was
        current."""
        if extended and known is not None and self._known.get(sender_id) is known:
            if known.token == expected:  # no other append or load of it moved on meanwhile
                bound = known.bound if known.size is None else None
                if bound is not None and bound + added >= WARN_AT_BYTES:
                    # It may be near the limit: measured when it is next read, whole. Let go
                    # of as counted: before its new events, which are not counted yet.
                    self._known.forget(sender_id)
                    return
                known.events.extend(events)
                known.token = token
                if known.rewrite is None:  # (the append wrote its token there)
                    known.rewrite = token
                if known.size is not None:
                    known.size += added
                    self._near_limit(sender_id, known.size)
                elif known.bound is not None:
                    known.bound += added
                self._known.keep(sender_id, known, len(events) + known.weigh())
                return
        self._known.forget(sender_id)

    def _append(
        self, sender_id: str, events: list[dict[str, Any]], token: str, expected: str | None
    ) -> tuple[bool, int, int]:
        """Adds the events to the item's list in place, with a new token; True when the
        item held `expected` before (so it is what this process knew, and these events),
        the bytes the events add to the item, and what they weigh beyond 1 each (see
        weight.py: by their bytes here). The token also makes a request botocore sends
        again (its reply lost) a no-op: the events were added already."""
        new = [self._attribute(event) for event in events]
        # (About 20 us for a moodbot turn, in the request's thread.)
        sizes = [_attribute_size(value) for value in new]
        added = len(sizes) + sum(sizes)
        extra = sum([size // KIB for size in sizes])
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": _key(sender_id),
            "UpdateExpression": (
                "SET #events = list_append(if_not_exists(#events, :none), :new), "
                "#name = :name, #append = :token, "
                "#rewrite = if_not_exists(#rewrite, :token)"
            ),
            "ExpressionAttributeNames": _APPEND_NAMES,
            "ExpressionAttributeValues": {
                ":none": {"L": []},
                ":new": {"L": new},
                ":name": {"S": sender_id},
                ":token": {"S": token},
            },
        }
        failed = self._client.exceptions.ConditionalCheckFailedException
        if expected is not None:
            values = {**update["ExpressionAttributeValues"], ":expected": {"S": expected}}
            try:
                self._client.update_item(
                    **{**update, "ExpressionAttributeValues": values},
                    ConditionExpression="#append = :expected",
                )
                return True, added, extra
            except failed:
                pass  # written by someone else since, or this very update sent twice
        try:
            self._client.update_item(
                **update, ConditionExpression="attribute_not_exists(#append) OR #append <> :token"
            )
        except failed:
            pass
        return False, added, extra

    @staticmethod
    def _attribute(event: dict[str, Any]) -> dict[str, Any]:
        try:
            return _dynamo_value(event, 0)
        except _CannotHold:
            return {"S": json.dumps(event)}

    async def replace(self, sender_id: str, events: list[dict[str, Any]]) -> None:
        await self._ensure_ready()
        self._known.forget(sender_id)
        if not events:
            await self.delete(sender_id)
            return
        await self._run(lambda: self._put(sender_id, events), sender_id)

    def _put(self, sender_id: str, events: list[dict[str, Any]]) -> None:
        self._client.put_item(
            TableName=self.table,
            Item={
                **_key(sender_id),
                "name": {"S": sender_id},
                "events": {"L": [self._attribute(event) for event in events]},
                # Kept by later appends: tells this item from the one it replaced, however
                # alike their events' count and last event (a process's hot tracker).
                _REWRITE: {"S": secrets.token_hex(8)},
            },
        )

    async def delete(self, sender_id: str) -> None:
        await self._ensure_ready()
        self._known.forget(sender_id)
        await self._run(lambda: self._client.delete_item(TableName=self.table, Key=_key(sender_id)))

    async def delete_older_than(
        self,
        cutoff_timestamp: float,
        hold: Hold | None = None,
        deleted_some: Callable[[int], None] | None = None,
    ) -> int:
        await self._ensure_ready()
        pages = self._pages("sender_id, #events")
        deleted = 0
        while True:
            stale = await self._run(partial(self._next_stale, pages, cutoff_timestamp))
            if stale is None:
                return deleted
            listed = list(stale)
            for start in range(0, len(listed), DELETE_HELD):
                # (Before, the whole page's: a turn on one waited for all.)
                async with holding(hold, listed[start : start + DELETE_HELD]) as idle:
                    for sender_id in await idle.still_held():
                        if sender_id not in idle:  # its lock was lost meanwhile
                            continue
                        gone = partial(self._delete_if, sender_id, stale[sender_id])
                        deleting = asyncio.ensure_future(self._run(gone))
                        try:
                            await asyncio.shield(deleting)
                        finally:
                            # Stopped (SIGTERM, Ctrl-C) as it went out, the delete runs on in
                            # its thread: counted once it ends (before, one fewer was said).
                            if not deleting.done():
                                await asyncio.wait([deleting])
                            if not deleting.exception() and deleting.result():
                                self._known.forget(sender_id)
                                deleted += 1
                                if deleted_some is not None:
                                    deleted_some(1)

    def _next_stale(
        self, pages: Iterator[list[dict[str, Any]]], cutoff_timestamp: float
    ) -> dict[str, int] | None:
        """Of the next scan page (None after the last), the conversations whose latest event
        is older than the cutoff, with their number of events."""
        page = next(pages, None)
        if page is None:
            return None
        stale = {}
        for item in page:
            sender_id = item["sender_id"]["S"]
            try:
                events = _values(sender_id, item)
                latest = _latest(sender_id, events)
            except CorruptConversation as exc:
                # Kept, for someone to look at; before, it stopped the prune.
                logger.warning("%s; retention keeps it.", exc)
                continue
            if latest < cutoff_timestamp:
                stale[sender_id] = len(events)
        return stale

    def _delete_if(self, sender_id: str, length: int) -> bool:
        """Deletes the conversation unless events were added since it was read (a turn
        made it recent)."""
        try:
            self._client.delete_item(
                TableName=self.table,
                Key=_key(sender_id),
                ConditionExpression="size(#events) = :length",
                ExpressionAttributeNames={"#events": "events"},
                ExpressionAttributeValues={":length": {"N": str(length)}},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # -- errors ----------------------------------------------------------------------------

    async def _run(self, request: Callable[[], T], sender_id: str | None = None) -> T:
        """`request` in a worker thread, with DynamoDB's errors as ours."""
        with self._errors(sender_id):
            return await asyncio.to_thread(request)

    @contextmanager
    def _errors(self, sender_id: str | None) -> Iterator[None]:
        """StoreUnavailable (503) when DynamoDB cannot be reached or throttles,
        StoreRefusedData (400) when it refuses the events themselves (an item over 400 KB),
        StoreFailed (500, logged) for anything else (credentials, permissions, the table)."""
        from botocore import exceptions as boto

        where = f"The tracker store ({self.describe()})"
        try:
            yield
        except (boto.ConnectionError, boto.HTTPClientError) as exc:
            raise StoreUnavailable(f"{where} is unavailable: {first_line(exc)}") from exc
        except (boto.NoCredentialsError, boto.PartialCredentialsError) as exc:
            raise StoreFailed(
                f"{where} has no AWS credentials ({first_line(exc)}): set AWS_ACCESS_KEY_ID "
                "and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the host a role"
            ) from exc
        except boto.ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = str(error.get("Code", "")), str(error.get("Message", ""))
            if code in _BUSY_CODES:
                raise StoreUnavailable(f"{where} cannot take requests now: {code}") from exc
            if code == "ValidationException" and "size" in message and sender_id is not None:
                raise StoreRefusedData(
                    f"Conversation '{sender_id}' has grown past {ITEM_LIMIT_BYTES // 1024} KB, "
                    "the most one DynamoDB item holds (Rasa's layout keeps a conversation "
                    "in one item): these events were not stored. Replace its events with "
                    "fewer (PUT /conversations/<id>/tracker/events; an empty list deletes it)."
                ) from exc
            if code == "ValidationException" and sender_id is not None:
                raise StoreRefusedData(
                    f"The tracker store cannot hold these events: {message[:300]}"
                ) from exc
            raise StoreFailed(f"{where} failed: {code}: {message[:300]}") from exc
        except boto.BotoCoreError as exc:
            raise StoreFailed(f"{where} failed: {first_line(exc)}") from exc


def _key(sender_id: str) -> dict[str, Any]:
    if not sender_id:  # before, DynamoDB's ValidationException: a 500
        raise InvalidConversationId("The conversation id is empty: DynamoDB cannot hold it.")
    if (
        len(sender_id) > KEY_LIMIT_BYTES // 4  # (at most 4 bytes a character)
        and len(sender_id.encode("utf-8", "surrogatepass")) > KEY_LIMIT_BYTES
    ):
        # (the server refuses longer ids before; `botserver export --conversation-ids` not)
        raise InvalidConversationId(
            f"The conversation id takes more than {KEY_LIMIT_BYTES} bytes: DynamoDB cannot hold it."
        )
    return {"sender_id": {"S": sender_id}}


@dataclass
class _Known:
    """A conversation as this process read or wrote it last."""

    token: str | None  # the item's append token then (None: written by Rasa, or replaced)
    events: list[dict[str, Any]]  # only ever grows at its end (see Snapshot)
    # The item's size in bytes, as DynamoDB counts it (None: not measured, and `bound`,
    # the length of the reply that read it, is more than that).
    size: int | None = None
    bound: int | None = None
    # What its events weigh beyond 1 each (see weight.py), from the item's size: the whole
    # item's KiB beyond one per event (events are not weighed one by one here).
    extra: int = 0
    # The token of the replace that wrote the item (`botserver_rewrite`; None: none did):
    # the `generation` its loads hand out.
    rewrite: str | None = None

    def weigh(self) -> int:
        """Weighs it again by its size (or half its reply's length, when not measured);
        returns how much more it weighs."""
        before = self.extra
        size = self.size if self.size is not None else (self.bound or 0) // 2
        self.extra = max(0, size // KIB - len(self.events))
        return self.extra - before


def _size(sender_id: str, response: dict[str, Any]) -> tuple[int | None, int | None]:
    """(size, bound) of the item a GetItem `response` holds: its size as DynamoDB counts
    it, measured only when the reply's length (in JSON, with type names: more than the size,
    about twice) does not show it is well under WARN_AT_BYTES; or None and that length."""
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    length = headers.get("content-length")
    if length is not None and int(length) < WARN_AT_BYTES:
        return None, int(length)
    item = response["Item"]
    # The attributes not read: sender_id, name (the id again).
    size = len("sender_id") + len("name") + 2 * _text_size(sender_id)
    for name, value in item.items():
        size += _text_size(name) + _attribute_size(value)
    return size, None


def _attribute_size(value: dict[str, Any]) -> int:
    """The bytes DynamoDB counts for an attribute value: strings in UTF-8, numbers about
    one byte per two digits, and 3 bytes for a list or map plus 1 per element (AWS's
    "Item sizes and formats")."""
    kind, item = next(iter(value.items()))
    if kind == "S":
        return _text_size(item)
    if kind == "N":
        return len(item) // 2 + 1
    if kind == "M":
        return 3 + sum(_text_size(key) + 1 + _attribute_size(part) for key, part in item.items())
    if kind == "L":
        return 3 + sum(1 + _attribute_size(part) for part in item)
    if kind == "B":
        return len(item)
    return 1  # BOOL, NULL


def _text_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


_UNCHANGED = object()


class _CannotHold(Exception):
    """A value DynamoDB holds in no map or list."""


# How deep an event may nest: DynamoDB takes 32 levels in an item, the list and the
# event's own map are two of them.
_MAX_DEPTH = 30
# DynamoDB's numbers (boto3's context, and no subnormals: DynamoDB's least is 1e-130).
_NUMBERS = decimal.Context(
    prec=38,
    Emin=-128,
    Emax=126,
    traps=[
        decimal.Clamped,
        decimal.Overflow,
        decimal.Inexact,
        decimal.Rounded,
        decimal.Underflow,
        decimal.Subnormal,
        decimal.InvalidOperation,
    ],
)


def _dynamo_value(value: Any, depth: int) -> dict[str, Any]:
    """A JSON value as a DynamoDB attribute value (numbers as text, floats from their
    shortest repr: 0.1 stays 0.1); _CannotHold for a number beyond DynamoDB's (more than
    38 digits, outside 1e-130 to 1e126), a map key that is empty, or deeper nesting."""
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        try:
            number = _NUMBERS.create_decimal(repr(value) if isinstance(value, float) else value)
        except decimal.DecimalException as exc:
            raise _CannotHold from exc
        if not number.is_finite():
            raise _CannotHold
        return {"N": str(number)}
    if value is None:
        return {"NULL": True}
    if depth >= _MAX_DEPTH:
        raise _CannotHold
    if isinstance(value, dict):
        if "" in value:
            raise _CannotHold
        return {"M": {str(key): _dynamo_value(item, depth + 1) for key, item in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [_dynamo_value(item, depth + 1) for item in value]}
    raise _CannotHold


def _latest(sender_id: str, values: list[dict[str, Any]]) -> float:
    """When a stored conversation last moved (see `latest_timestamp`); CorruptConversation
    when one of its events is not a JSON object or has a timestamp that is no number
    (before review73, the latter's ValueError or TypeError stopped the prune)."""
    events = [_event(sender_id, value) for value in values]
    try:
        return latest_timestamp(events)
    except (TypeError, ValueError) as exc:
        raise CorruptConversation(
            f"Conversation '{sender_id}' holds an event whose timestamp is not a number ({exc})"
        ) from exc


def _values(sender_id: str, item: dict[str, Any]) -> list[dict[str, Any]]:
    """An item's stored events; CorruptConversation when it has no `events` attribute or
    that is no list (another program's item: before, read as no conversation, which
    `botserver export` left out saying nothing). botserver and Rasa write none such."""
    events = item.get("events")
    if events is None:
        raise CorruptConversation(
            f"Conversation '{sender_id}' is an item without an `events` attribute (Rasa's "
            "layout holds a list of the conversation's events; another program's item?)"
        )
    if "L" not in events:
        raise CorruptConversation(
            f"Conversation '{sender_id}' is an item whose events are a DynamoDB "
            f"{'/'.join(events) or 'empty'} value, not a list (Rasa's layout; another "
            "program's item?)"
        )
    values: list[dict[str, Any]] = events["L"]
    return values


def _event(sender_id: str, value: dict[str, Any]) -> dict[str, Any]:
    """One stored event; one kept as text that is not JSON is CorruptConversation naming the
    conversation (before: a JSONDecodeError, a 500 with a traceback)."""
    if "S" in value:  # an event DynamoDB cannot hold as a map, kept as JSON text
        return stored_events(sender_id, [value["S"]])[0]
    if "M" not in value:  # (before review73: a TypeError, a 500 with a traceback)
        raise CorruptConversation(
            f"Conversation '{sender_id}' holds a stored event that is not a JSON object "
            f"(a DynamoDB {'/'.join(value) or 'empty'} value, not a map)"
        )
    try:
        return dict(_plain(value))
    except _NoJson as exc:
        # (Before: a StoreFailed naming no conversation, which stopped a prune
        # and `botserver export --skip-unreadable`.)
        raise CorruptConversation(
            f"Conversation '{sender_id}' holds a stored event with a DynamoDB {exc} value, "
            "which no JSON (and no Rasa event) holds"
        ) from None


class _NoJson(Exception):
    """A DynamoDB value JSON has no counterpart for (a set, binary): its type's name."""


def _plain(value: dict[str, Any]) -> Any:
    """A DynamoDB attribute value as JSON: a number as an int when it has no fraction or
    exponent, else a float (a float written `1.0` comes back `1` from DynamoDB, which drops
    trailing zeros)."""
    kind, item = next(iter(value.items()))
    if kind == "S":
        return item
    if kind == "N":
        try:
            return int(item)
        except ValueError:
            return float(item)
    if kind == "M":
        return {key: _plain(part) for key, part in item.items()}
    if kind == "L":
        return [_plain(part) for part in item]
    if kind == "BOOL":
        return bool(item)
    if kind == "NULL":
        return None
    raise _NoJson(kind)
