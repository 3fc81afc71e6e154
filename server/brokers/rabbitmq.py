"""The RabbitMQ event broker (aio-pika): a durable fanout exchange, publisher confirms.

Rasa's `pika` keys. Events are sent in order by one background task that reconnects with
back-off; each message is `{"sender_id": ..., **event}` JSON, persistent, with a
`message_id` that stays the same if it has to be re-sent.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import re
import time
from collections import deque
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, HeadersType
from aiormq.exceptions import ChannelPreconditionFailed, InvalidFrameError
from yarl import URL

from server.brokers import amqp_publish
from server.brokers.amqp_publish import WRITE_BYTES
from server.brokers.delivery import (
    CLOSE_SECONDS,
    MIN_RETRY_DELAY,
    BackgroundDelivery,
    Outgoing,
    QueuedBroker,
    count_dropped,
    pop_delivered,
    waits_for_delivery,
)
from server.brokers.event_json import rasa_text
from server.brokers.ordering import EXPORT_PROCESS_ID_HEADER, PREVIOUS_ID_HEADER
from server.errors import InvalidConfig, how_many
from server.setting_values import flag, host_and_port
from server.tasks import stop
from server.urls import safe_url
from server.worker_claims import first_to_say

logger = logging.getLogger(__name__)


class _TransportErrorSaidByUs(logging.Filter):
    """aiormq logs an ERROR of its own when it cannot reach RabbitMQ, then raises: our
    warning (at start-up, at each retry) says the same with what is done about it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


logging.getLogger("aiormq.connection").addFilter(_TransportErrorSaidByUs())

DEFAULT_QUEUE = "rasa_core_events"
DEFAULT_EXCHANGE = "rasa-exchange"
# The port aiormq connects to when the URL names none.
_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
CONNECT_TIMEOUT_SECONDS = 5.0
# How long `botserver run` waits for RabbitMQ while it starts; then it starts regardless.
START_TIMEOUT_SECONDS = 3.0
MAX_RETRY_DELAY = 30.0
# A connection that lived this long is taken again retry_delay_in_seconds after it dropped;
# one dropped sooner, twice as late as the one before (up to MAX_RETRY_DELAY).
STEADY_CONNECTION_SECONDS = 30.0
PUBLISH_TIMEOUT_SECONDS = 10.0
# How often a wait for a confirm looks whether RabbitMQ blocked the connection meanwhile
# (aiormq tells no one: it clears an event): a turn waiting then is answered, not held until
# CONFIRM_WAIT_SECONDS, and the block is said when it comes.
BLOCK_CHECK_SECONDS = 0.1
# What kept the events while RabbitMQ blocks publishing, as a stop meanwhile says it.
_BLOCKED = "RabbitMQ blocks publishing: connection.blocked, a memory or disk alarm"
# The least time closing gives RabbitMQ to answer the close of the connection, when the
# delivery took the broker's CLOSE_SECONDS.
LAST_CLOSE_SECONDS = 0.25
# How many messages may await RabbitMQ's confirm at once.
CONFIRM_WINDOW = 256
# Up to how many messages are made (JSON, frames) on the event loop; more, in a thread.
_MARSHALLED_ON_LOOP = 16
# How RabbitMQ refuses our declaration of an exchange Rasa declared (aio-pika's defaults: not
# durable); the only difference, so nothing to warn about.
_RASAS_EXCHANGE = re.compile(r"inequivalent arg 'durable' .*received 'true' but current is 'false'")
# How RabbitMQ closes a channel on a message larger than its max_message_size.
_TOO_LARGE = re.compile(r"message size (\d+) is larger than configured max size (\d+)")


class RabbitMQEventBroker(QueuedBroker):
    """Publishes events to a RabbitMQ fanout exchange bound to the configured queues."""

    # The `event_broker:` keys read: Rasa's PikaEventBroker arguments, and `queue` (Rasa 2's
    # name of `queues`, still read).
    SETTINGS = frozenset(
        {"url", "host", "port", "username", "password", "queues", "queue", "exchange_name"}
        | {"connection_attempts", "retry_delay_in_seconds", "raise_on_failure"}
        | {"should_keep_unpublished_messages"}
        | QueuedBroker.SHARED_SETTINGS
    )

    def __init__(self, config: dict[str, Any]) -> None:
        self.waits_for_delivery = waits_for_delivery(config)
        self.url = amqp_url(config)
        # As the log shows it: no user, password or query (the client key's path).
        self.shown_url = safe_url(self.url, tolerant=True)
        self.exchange_name = str(config.get("exchange_name") or DEFAULT_EXCHANGE)
        self.queues = _queues(config)
        _warn_failure_settings(config)
        self._app_id = os.environ.get("RASA_ENVIRONMENT")
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        # The channel's aiormq side, which the messages are written to (`amqp_publish`).
        self._amqp_channel: aiormq.Channel | None = None
        # How messages are made and published on the channel: frames of our own, or, with an
        # aiormq or pamqp other than botserver[rabbitmq] pins, aio-pika's publish.
        self._publisher: amqp_publish.Publisher | None = None
        self._untested_said = False
        # Since when RabbitMQ blocks publishing (the loop's clock), and when it last lifted it.
        self._blocked_since: float | None = None
        self._unblocked_at = -math.inf
        # RabbitMQ's max_message_size (128 MiB by default), once it refused a message.
        self._max_message_size: int | None = None
        self._opening = asyncio.Lock()  # one connection, whoever opens it
        self._retry_delay = max(float(config.get("retry_delay_in_seconds", 5)), MIN_RETRY_DELAY)
        self._reconnect: asyncio.Task[None] | None = None
        # The first wait of the next background connect, and when the connection opened.
        self._reconnect_delay = self._retry_delay
        self._opened_at = 0.0
        where = URL(self.url)
        port = where.port or _DEFAULT_PORTS.get(where.scheme, 5672)  # before: "host:None"
        self._delivery = BackgroundDelivery(
            f"RabbitMQ event broker at {where.host}:{port}",
            self._send,
            retry_delay=self._retry_delay,
            warn_after_attempts=int(config.get("connection_attempts", 20)),
        )

    async def _send(self, pending: deque[Outgoing]) -> None:
        await self._open()
        publisher = self._publisher
        assert publisher is not None  # set with the exchange
        # The publishes awaiting RabbitMQ's confirm, one per message at the front of
        # `pending`, in order on one channel (up to CONFIRM_WINDOW). Each message is popped
        # once it and those before it are confirmed, and the next ones are sent as the
        # first ones are confirmed: a turn's events wait for their own confirms, not for a
        # whole window sent before them. A failure re-sends every message not popped:
        # consumers drop the repeats by message_id (ConversationOrderer). A full queue drops its
        # oldest messages for room, perhaps some in flight: a confirm pops its own message
        # only, never the one after it.
        in_flight: InFlight = deque()
        # Messages made and not written yet: the one that did not fit in the last write
        # (WRITE_BYTES), those of a write a block held back.
        spare: list[tuple[Outgoing, amqp_publish.Marshalled]] = []
        large = False  # the last write was cut by its bytes: make the next ones in a thread
        try:
            while pending:
                sent = _still_queued(in_flight, pending)
                if sent < min(len(pending), CONFIRM_WINDOW) and not publisher.blocked:
                    batch = list(itertools.islice(pending, sent, min(len(pending), CONFIRM_WINDOW)))
                    # 256 messages' JSON: 3 ms on the loop
                    if large or len(batch) > _MARSHALLED_ON_LOOP:
                        made = await asyncio.to_thread(self._marshalled, publisher, batch, spare)
                    else:
                        made = self._marshalled(publisher, batch, spare)
                    messages, spare = made
                    large = len(messages) < len(batch) or messages[0].size >= WRITE_BYTES
                    if publisher.blocked:  # told while they were made (in a thread)
                        # Written after the unblock as they are: before, all but the first
                        # were made again (a write's worth, up to 1 MiB of JSON).
                        spare = [*zip(batch[: len(messages)], messages, strict=True), *spare]
                        continue
                    batch = batch[: len(messages)]
                    limit = self._max_message_size
                    if limit is not None and any(m.body_size > limit for m in messages):
                        await self._confirmed(publisher, in_flight, pending)
                        _drop_oversize(pending, batch, messages, limit)
                        continue
                    async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                        confirms = await publisher.publish(messages)
                    due = asyncio.get_running_loop().time() + PUBLISH_TIMEOUT_SECONDS
                    in_flight.extend(
                        (confirm, item, due) for confirm, item in zip(confirms, batch, strict=True)
                    )
                elif not in_flight:  # RabbitMQ blocks publishing: nothing more is written
                    await self._through_block(publisher, None, len(pending))
                    continue
                await self._confirm(publisher, in_flight[0], len(pending))
                while in_flight and in_flight[0][0].done():
                    _pop_confirmed(in_flight, pending)
        except BaseException as exc:
            for confirm, _, _ in in_flight:  # none is left running unawaited
                if confirm.done():
                    if not confirm.cancelled():
                        confirm.exception()  # seen: not "never retrieved"
                else:
                    confirm.cancel()
            if not isinstance(exc, Exception):
                raise
            # A message no queue took (RabbitMQ returns it: the queues were deleted) raises
            # too; the next attempt declares them again and re-sends it.
            too_large = _TOO_LARGE.search(str(exc))
            if too_large:  # the next attempt drops what RabbitMQ will never take
                self._max_message_size = int(too_large.group(2))
            await self._disconnect()
            raise

    async def _confirm(
        self,
        publisher: amqp_publish.Publisher,
        publish: tuple[asyncio.Future[Any], Outgoing, float],
        queued: int,
    ) -> None:
        """Waits for the confirm of one publish in flight: fails once it is overdue
        (RabbitMQ went silent), but not while RabbitMQ blocks the connection (a resource
        alarm), which it says within BLOCK_CHECK_SECONDS of the block: then it is due
        PUBLISH_TIMEOUT_SECONDS after the unblock. Never cancels the confirm (it would be
        lost)."""
        confirm, _, due = publish
        loop = asyncio.get_running_loop()
        while not confirm.done():
            if publisher.blocked:
                await self._through_block(publisher, confirm, queued)
                continue
            left = max(due, self._unblocked_at + PUBLISH_TIMEOUT_SECONDS) - loop.time()
            if left <= 0:
                raise TimeoutError(f"no confirm from RabbitMQ in {PUBLISH_TIMEOUT_SECONDS:g} s")
            await asyncio.wait((confirm,), timeout=min(left, BLOCK_CHECK_SECONDS))

    async def _through_block(
        self,
        publisher: amqp_publish.Publisher,
        confirm: asyncio.Future[Any] | None,
        queued: int,
    ) -> None:
        """Waits while RabbitMQ blocks the connection, until it lifts the block (or the
        connection closes, or `confirm` comes): nothing is written meanwhile, and the
        events stay queued, in order."""
        loop = asyncio.get_running_loop()
        if self._blocked_since is None:
            self._blocked_since = loop.time()
            logger.warning(
                "RabbitMQ event broker: RabbitMQ blocks publishing (connection.blocked: a "
                "memory or disk alarm); %s queued, kept in order and sent once it lifts it",
                how_many(queued, "event"),
            )
            # A turn waiting for its events is answered; a stop meanwhile names the block.
            self._delivery.release_turns(_BLOCKED)
        unblocked = asyncio.ensure_future(publisher.unblocked())
        try:
            waited = (unblocked,) if confirm is None else (unblocked, confirm)
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            unblocked.cancel()
        if not self.connected and (confirm is None or not confirm.done()):
            raise ConnectionError("RabbitMQ closed the connection while it blocked publishing")
        if not publisher.blocked:
            self._unblocked_at = loop.time()
            logger.info(
                "RabbitMQ event broker: RabbitMQ lifted its block after %.1f s; sending the "
                "events queued",
                self._unblocked_at - self._blocked_since,
            )
            self._blocked_since = None
            self._delivery.resumed()

    async def _confirmed(
        self,
        publisher: amqp_publish.Publisher,
        in_flight: InFlight,
        pending: deque[Outgoing],
    ) -> None:
        """Waits for every publish in flight, popping its message from `pending`; the first
        failure raises."""
        while in_flight:
            await self._confirm(publisher, in_flight[0], len(pending))
            _pop_confirmed(in_flight, pending)

    def _marshalled(
        self,
        publisher: amqp_publish.Publisher,
        window: list[Outgoing],
        spare: list[tuple[Outgoing, amqp_publish.Marshalled]],
    ) -> tuple[list[amqp_publish.Marshalled], list[tuple[Outgoing, amqp_publish.Marshalled]]]:
        """The messages of the first events of `window` that fit in one write (WRITE_BYTES;
        one at least), each as Rasa's broker sends it: `{"sender_id": ..., **event}` JSON,
        persistent, application/json, the message_id and ordering headers, app_id from
        RASA_ENVIRONMENT. `spare`: messages made before, taken as they are (by the identity
        of their events). And the messages of `window` made and not in the write: the next
        one, when it was made and did not fit, and those of `spare` after it (the next
        call's `spare`)."""
        app_id = self._app_id
        kept = {id(outgoing): (outgoing, message) for outgoing, message in spare} if spare else {}
        messages: list[amqp_publish.Marshalled] = []
        size = 0
        for index, outgoing in enumerate(window):
            made = kept.pop(id(outgoing), None) if kept else None
            if made is not None and made[0] is outgoing:
                message = made[1]
            else:
                body = rasa_text(outgoing.body()).encode()
                message = publisher.make(body, outgoing.message_id, _headers(outgoing), app_id)
            size += message.size
            if messages and size > WRITE_BYTES:
                return messages, [(outgoing, message), *_made_among(kept, window[index + 1 :])]
            messages.append(message)
            if size >= WRITE_BYTES:
                return messages, _made_among(kept, window[index + 1 :])
        return messages, []

    def _holds_turns(self) -> bool:
        """A turn's answer waits for RabbitMQ's confirm of its events while it is connected
        (and does not block publishing); while it is not, turns are answered at once and the
        events wait in memory."""
        return self.connected and not self.blocked and self._delivery.holds_turns()

    def _reachable(self) -> bool:
        return self.connected

    @property
    def blocked(self) -> bool:
        """Whether RabbitMQ blocks publishing on the connection (connection.blocked)."""
        return self._publisher is not None and self._publisher.blocked

    @property
    def connected(self) -> bool:
        """Whether the connection, exchange and queues are up. A connection RabbitMQ dropped
        (a restart) counts as down at once: before, the next event was tried on its dead
        channel, and waited the retry delay behind a false "delivery failed"."""
        return (
            self._exchange is not None
            and self._connection is not None
            and not self._connection.is_closed
            and self._connection.connected.is_set()
            and self._channel is not None
            and not self._channel.is_closed
        )

    def health(self) -> str:
        """What `/health/ready` shows of the broker: `ok`, `unavailable` (not connected) or
        `blocked` (RabbitMQ blocks publishing, a resource alarm: events are queued, not
        published, until it lifts it). None of them makes the server unready: turns are
        answered meanwhile, and an alarm is RabbitMQ's, on every replica at once."""
        if not self.connected:
            return "unavailable"
        return "blocked" if self.blocked else "ok"  # the figure /metrics shows too

    async def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Connect while the server starts, for at most `timeout` seconds, so the log says
        at once whether RabbitMQ is reachable; never raises. If it is not, events are queued
        and connecting is retried in the background (the connected line says when)."""
        try:
            await asyncio.wait_for(self._open(), timeout)
        except Exception as exc:
            reason = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else exc
            cannot_reach = (
                f"event broker: cannot reach {self.shown_url} ({reason or type(exc).__name__}); "
                "events are queued and connecting is retried in the background"
            )
            if first_to_say(cannot_reach):  # once for all workers
                logger.warning(cannot_reach)
            self._connect_later()

    def _connect_later(self) -> None:
        if self._reconnect is None or self._reconnect.done():
            self._reconnect = asyncio.create_task(
                self._connect_in_background(), name="RabbitMQ event broker connect"
            )

    def _lost(self, sender: object, *_: object) -> None:
        """RabbitMQ closed our connection (a restart): connect again in the background, so
        `connected` (`/health/ready`) is true again once it is back, with no event needed."""
        if sender is self._connection:  # not one `_disconnect` closed
            if time.monotonic() - self._opened_at >= STEADY_CONNECTION_SECONDS:
                self._reconnect_delay = self._retry_delay
            self._connect_later()

    async def _connect_in_background(self) -> None:
        delay = self._reconnect_delay
        # A connection dropped again soon after is taken again twice as late: before, a
        # RabbitMQ closing each new connection had it taken every retry_delay_in_seconds for
        # ever, a "connected" line and aiormq's traceback each time.
        self._reconnect_delay = min(delay * 2, MAX_RETRY_DELAY)
        while not self.connected:
            await asyncio.sleep(delay)
            try:
                await self._open()
            except Exception as exc:  # said once at start-up; each delivery failure says it
                logger.debug(
                    "event broker: still cannot reach %s: %s",
                    self.shown_url,
                    exc,
                )
                delay = min(delay * 2, MAX_RETRY_DELAY)

    async def _open(self) -> AbstractExchange:
        async with self._opening:
            return await self._open_once()

    async def _open_once(self) -> AbstractExchange:
        if self._exchange is not None and self.connected:
            return self._exchange
        await self._disconnect()
        # aio_pika.connect leaves a connection that failed to its garbage collector, which
        # closes it off the loop: "RuntimeWarning: coroutine 'Connection.close' was never
        # awaited" on stderr at each failed attempt. Closed here instead.
        connection = aio_pika.Connection(URL(self.url))
        try:
            await connection.connect(timeout=CONNECT_TIMEOUT_SECONDS)
            channel, exchange = await self._declare(connection)
            amqp_channel = await amqp_publish.underlay(channel)
            publisher = self._publisher_on(amqp_channel, exchange)
        except BaseException as exc:  # a start-up attempt cut short (cancelled) too
            await connection.close()
            refused = _vhost_refusal(exc, URL(self.url))
            if refused is not None:
                raise refused from None
            raise
        self._connection, self._channel, self._exchange = connection, channel, exchange
        self._amqp_channel, self._publisher = amqp_channel, publisher
        self._opened_at = time.monotonic()
        connection.close_callbacks.add(self._lost)
        logger.info(
            "event broker: connected to %s, queues %s (exchange '%s')",
            self.shown_url,
            ", ".join(self.queues),
            self.exchange_name,
        )
        return exchange

    def _publisher_on(
        self, channel: aiormq.Channel, exchange: AbstractExchange
    ) -> amqp_publish.Publisher:
        """Frames of our own on aiormq's channel; aio-pika's publish, with one warning, if
        the aiormq or pamqp installed is not what that was tested with."""
        untested = amqp_publish.untested(channel)
        if untested is None:
            return amqp_publish.FrameWriter(channel, self.exchange_name)
        if not self._untested_said:
            self._untested_said = True
            logger.warning(
                "RabbitMQ event broker: %s: publishing through aio-pika's Exchange.publish "
                "instead of writing on aiormq's channel (the same messages, several times "
                "the CPU an event); install the versions botserver[rabbitmq] pins",
                untested,
            )
        return amqp_publish.ExchangePublisher(exchange, getattr(channel, "connection", None))

    async def _declare(
        self, connection: AbstractConnection
    ) -> tuple[AbstractChannel, AbstractExchange]:
        """The exchange and the queues bound to it. One that already exists with other
        settings (a queue a consumer declared with a TTL, a dead-letter exchange, a length
        limit, or as a quorum queue) is used as it is: declaring it again is refused, and
        every event waited for ever."""
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            exchange = await channel.declare_exchange(
                self.exchange_name, aio_pika.ExchangeType.FANOUT, durable=True
            )
        except ChannelPreconditionFailed as exc:
            if _RASAS_EXCHANGE.search(str(exc)):  # Rasa's own: nothing to warn about
                logger.info(
                    "RabbitMQ event broker: the exchange '%s' is not durable (as Rasa declares "
                    "it); publishing through it as it is",
                    self.exchange_name,
                )
            else:
                _warn_existing("exchange", self.exchange_name, exc)
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await channel.get_exchange(self.exchange_name)
        for name in self.queues:
            try:
                queue = await channel.declare_queue(name, durable=True)
            except ChannelPreconditionFailed as exc:
                _warn_existing("queue", name, exc)
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                exchange = await channel.get_exchange(self.exchange_name)
                queue = await channel.declare_queue(name, passive=True)
            await queue.bind(exchange, routing_key="")
        return channel, exchange

    async def _disconnect(self, timeout: float | None = None) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._exchange = self._amqp_channel = self._publisher = None
        self._blocked_since = None  # a new connection's block is told again
        self._delivery.resumed()
        if connection is not None and not connection.is_closed:
            try:
                await asyncio.wait_for(connection.close(), timeout)
            except TimeoutError:  # a silent RabbitMQ: aiormq waits 2 s for its reply
                logger.debug("RabbitMQ did not answer the close within %.2f s", timeout)
            except Exception as exc:  # a dead connection may fail to close: nothing to do
                logger.debug("Closing the RabbitMQ connection failed: %s", exc)

    async def close(self) -> None:
        ends = time.monotonic() + CLOSE_SECONDS
        # The delivery first: a connection lost while it drains starts a background connect.
        await self._close_delivery(CLOSE_SECONDS)
        if self._reconnect is not None:
            await stop(self._reconnect)
        # Within the broker's 5 s: before, a silent RabbitMQ held the stop 2 s beyond them.
        await self._disconnect(max(ends - time.monotonic(), LAST_CLOSE_SECONDS))


def amqp_url(config: dict[str, Any]) -> str:
    """Rasa's `url` (a host or an amqp(s) URL), `port`, `username`, `password` as one URL,
    with Rasa's TLS settings (`_with_rasas_tls`)."""
    host = str(config.get("url") or config.get("host") or "localhost")
    username = config.get("username")
    password = config.get("password")
    if "://" in host:
        url = URL(host)
        if username and not url.user:
            url = url.with_user(str(username))
            if password is not None:
                url = url.with_password(str(password))
        if url.explicit_port is None and config.get("port") is not None:
            # Rasa puts `port` after the URL's host; before, it was dropped (5672 instead).
            _, port = host_and_port(url.host, config["port"], "RabbitMQ")
            url = url.with_port(port)
        return str(_with_rasas_tls(url, scheme_given=True))
    # `rabbit:5673` and `[::1]:5673` as the SQL stores take them: before, "Host 'rabbit:5673'
    # cannot contain ':'".
    host, port = host_and_port(host, config.get("port"), "RabbitMQ")
    url = URL.build(
        scheme="amqp",
        host=str(host),
        port=5672 if port is None else port,
        user=str(username) if username else None,
        password=str(password) if username and password is not None else None,
        path="/",
    )
    return str(_with_rasas_tls(url, scheme_given=False))


def _with_rasas_tls(url: URL, scheme_given: bool) -> URL:
    """The client certificate and key of RABBITMQ_SSL_CLIENT_CERTIFICATE and
    RABBITMQ_SSL_CLIENT_KEY (over TLS when the config names a host), and the CA of the URL's
    `cacertfile`, as Rasa documents them, in the query keys aio-pika reads."""
    query = dict(url.query)
    if "cacertfile" in query:
        query.setdefault("cafile", query.pop("cacertfile"))
    certificate = os.environ.get("RABBITMQ_SSL_CLIENT_CERTIFICATE")
    key = os.environ.get("RABBITMQ_SSL_CLIENT_KEY")
    if certificate and key:
        query.setdefault("certfile", certificate)
        query.setdefault("keyfile", key)
        if not scheme_given:
            url = url.with_scheme("amqps")
    return url.with_query(query) if query != dict(url.query) else url


# Rasa's pika keys for an event it could not publish, and the value that is what we do.
_FAILURE_SETTINGS = {"raise_on_failure": False, "should_keep_unpublished_messages": True}


def _warn_failure_settings(config: dict[str, Any]) -> None:
    """A warning for each of Rasa's failure settings set otherwise than botserver works:
    before, they were dropped without a word."""
    for key, ours in _FAILURE_SETTINGS.items():
        if key in config and flag(config, key, default=ours) != ours:
            logger.warning(
                "event_broker: '%s: %s' is not read: an event RabbitMQ did not take is kept "
                "and sent again in order once it is reachable, and a turn never fails "
                "because of the broker (nor waits for it while it is unreachable)",
                key,
                config[key],
            )


def _queues(config: dict[str, Any]) -> list[str]:
    queues = config.get("queues", config.get("queue"))
    if not queues:
        logger.warning("event_broker has no queues; using '%s'", DEFAULT_QUEUE)
        return [DEFAULT_QUEUE]
    if isinstance(queues, str):
        queues = [queues]
    if not isinstance(queues, list | tuple) or any(
        isinstance(q, dict | list | tuple | bool) for q in queues
    ):  # (before, `- name: events` was a queue called "{'name': 'events'}")
        raise InvalidConfig(f"'queues' must be a list of queue names, not {queues!r}")
    names = [q if isinstance(q, str) else "" if q is None else str(q) for q in queues]
    if any(not name.strip() for name in names):
        # RabbitMQ names a queue declared as "" itself (amq.gen-..., another at each
        # reconnect): the events would pile up where no consumer looks.
        raise InvalidConfig(
            f"every queue in 'queues' needs a name, not {queues!r} (an environment "
            "variable that is not set?)"
        )
    return names


# A publish awaiting RabbitMQ's confirm: its future, its message, when it is overdue (the
# loop's clock).
InFlight = deque[tuple[asyncio.Future[Any], Outgoing, float]]


def _still_queued(in_flight: InFlight, pending: deque[Outgoing]) -> int:
    """How many of the messages in flight are still at the front of `pending`: all of them,
    unless the queue dropped its oldest for room."""
    if not in_flight or not pending:
        return 0
    first = pending[0]
    for index, (_, outgoing, _) in enumerate(in_flight):
        if outgoing is first:
            return len(in_flight) - index
    return 0


def _pop_confirmed(in_flight: InFlight, pending: deque[Outgoing]) -> None:
    """The first publish in flight, done: raises its error, or pops its message from
    `pending` (unless the queue dropped it for room meanwhile)."""
    confirm, outgoing, _ = in_flight.popleft()
    confirm.result()
    pop_delivered(pending, [outgoing])


def _made_among(
    kept: dict[int, tuple[Outgoing, amqp_publish.Marshalled]], window: list[Outgoing]
) -> list[tuple[Outgoing, amqp_publish.Marshalled]]:
    """The messages of `kept` (by their events' identity) made for events of `window`, in
    its order: not those of events dropped from the queue meanwhile."""
    if not kept:
        return []
    made = []
    for outgoing in window:
        found = kept.get(id(outgoing))
        if found is not None and found[0] is outgoing:
            made.append(found)
    return made


def _drop_oversize(
    pending: deque[Outgoing],
    batch: list[Outgoing],
    messages: list[amqp_publish.Marshalled],
    limit: int,
) -> None:
    """Drops, with an error log, the events of `batch` (one per message) whose message is
    larger than RabbitMQ takes: before, RabbitMQ closed the channel on each attempt, and that
    event and every later one waited for ever. The others stay queued where they are (a turn
    waiting for one is woken once it is confirmed, not before)."""
    for outgoing, message in zip(batch, messages, strict=True):
        if message.body_size <= limit:
            continue
        logger.error(
            "RabbitMQ event broker: dropped a '%s' event of conversation %r: its message "
            "takes %s bytes, more than RabbitMQ's max_message_size (%s)",
            outgoing.event.get("event"),
            outgoing.sender_id[:100],
            f"{message.body_size:,}",
            f"{limit:,}",
        )
        # By identity (each has its own delivery_id: none equals another), unless the
        # queue dropped it for room meanwhile.
        if any(queued is outgoing for queued in pending):
            count_dropped(pending)
            pending.remove(outgoing)


def _vhost_refusal(exc: BaseException, url: URL) -> ConnectionError | None:
    """What RabbitMQ meant when it closed the connection instead of opening the virtual host:
    aiormq says only "Expected one of ['Connection.OpenOk'], got <Connection.Close object at
    0x7f...>", which names neither the virtual host nor what to check."""
    said = str(exc)
    if not (isinstance(exc, InvalidFrameError) and "OpenOk" in said and "Connection.Close" in said):
        return None
    vhost = url.path[1:] or "/"  # as aiormq reads it
    return ConnectionError(
        f"RabbitMQ refused to open the virtual host '{vhost}' (the URL's path): it does not "
        f"exist, or the user '{url.user or 'guest'}' has no access to it"
    )


def _warn_existing(kind: str, name: str, refusal: ChannelPreconditionFailed) -> None:
    logger.warning(
        "RabbitMQ event broker: the %s '%s' exists with other settings than botserver "
        "declares (%s); publishing through it as it is",
        kind,
        name,
        refusal,
    )


def _headers(outgoing: Outgoing) -> HeadersType:
    """The link to the conversation's event before (none for its first event: no header,
    not an AMQP void) and, from `botserver export`, Rasa's export run id."""
    headers: HeadersType = {}
    if outgoing.previous_id is not None:
        headers[PREVIOUS_ID_HEADER] = outgoing.previous_id
    if outgoing.export_process_id is not None:
        headers[EXPORT_PROCESS_ID_HEADER] = outgoing.export_process_id
    return headers
