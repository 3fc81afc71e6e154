"""Publishing runs of AMQP messages on an aiormq channel, many to a socket write (up to
WRITE_BYTES), each with its own publisher confirm: aio-pika's `Exchange.publish` built, wrote
and awaited each message on its own (0.2-0.9 ms of CPU a message, most of the RabbitMQ
broker's cost a turn). With an aiormq or pamqp other than the ones this was tested with,
aio-pika's publish instead."""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aio_pika
import pamqp.frame
from aio_pika.abc import AbstractChannel, AbstractExchange, HeadersType
from aiormq.abc import AbstractConnection, ChannelFrame
from aiormq.channel import Channel
from aiormq.exceptions import ChannelInvalidStateError
from pamqp import commands
from pamqp.header import ContentHeader

# The properties every message has; `priority` 0 as aio-pika's Message sets it (the same
# header frame, byte for byte).
_JSON_PERSISTENT = functools.partial(
    commands.Basic.Properties, content_type="application/json", delivery_mode=2, priority=0
)
# The most bytes of messages one write holds (a message larger than that goes alone, its body
# in frames of the connection's frame_max): 256 messages of a 1 MB event each made a 256 MB
# buffer (three copies of it while it was made), and held the loop while it was joined.
WRITE_BYTES = 1 << 20
# The versions `FrameWriter` was tested with (botserver[rabbitmq]'s pins: at least, below).
TESTED_VERSIONS = {
    "aio-pika": ("10.2.1", "10.3"),
    "aiormq": ("7.2.4", "7.3"),
    "pamqp": ("4.0.1", "4.1"),
}
# aiormq's Connection keeps RabbitMQ's connection.blocked in this private asyncio.Event
# (set: not blocked); its public `ready()` waits for it.
_UNBLOCKED = "_Connection__connection_unblocked"
# What `FrameWriter` uses of aiormq's Channel beyond its public API.
_CHANNEL_INTERNALS = (
    "lock",
    "delivery_tag",
    "confirmations",
    "message_id_delivery_tag",
    "write_queue",
    "max_content_size",
    "number",
    "create_future",
    "connection",
)
# How long a look at aiormq's `ready()` stays unanswered before the connection counts as
# blocked (ExchangePublisher): it answers in the loop iteration after it starts unless
# RabbitMQ blocks; the margin is for an aiormq whose `ready()` awaits something first.
BLOCK_SEEN_SECONDS = 0.05
# How many of aio-pika's publishes are started in one iteration of the event loop: each
# one's first step (its frames, up to the channel's lock) runs where it is started.
_STARTED_AT_ONCE = 16


@dataclass(frozen=True, slots=True)
class Marshalled:
    """One message as it goes on the wire (its header and body frames, or aio-pika's
    message), and what a confirm or a return of it is matched by."""

    message_id: str
    body_size: int
    frames: bytes = b""
    message: aio_pika.Message | None = None

    @property
    def size(self) -> int:
        """The bytes it takes in a write."""
        return len(self.frames) or self.body_size


class Publisher(Protocol):
    """Makes and publishes persistent JSON messages, each with its own publisher confirm."""

    def make(
        self, body: bytes, message_id: str, headers: HeadersType, app_id: str | None
    ) -> Marshalled:
        """A message; touches no shared state (runs in a thread)."""

    async def publish(self, messages: Sequence[Marshalled]) -> list[asyncio.Future[Any]]:
        """Writes `messages` in order; the future of each one's confirm."""

    @property
    def blocked(self) -> bool:
        """Whether RabbitMQ said connection.blocked (a resource alarm) and not yet unblocked."""

    async def unblocked(self) -> None:
        """Returns once RabbitMQ lifts its block, or the connection closes."""


class FrameWriter:
    """Writes messages' frames on aiormq's channel, many in one write (`publish`)."""

    def __init__(self, channel: Channel, exchange: str) -> None:
        self.channel = channel
        self.on = wire(channel, exchange)
        self._unblocked: asyncio.Event = getattr(channel.connection, _UNBLOCKED)

    def make(
        self, body: bytes, message_id: str, headers: HeadersType, app_id: str | None
    ) -> Marshalled:
        return marshal(self.on, body, message_id, headers, app_id)

    async def publish(self, messages: Sequence[Marshalled]) -> list[asyncio.Future[Any]]:
        return await publish(self.channel, messages)

    @property
    def blocked(self) -> bool:
        return not self._unblocked.is_set()

    async def unblocked(self) -> None:
        await ready_or_closing(self.channel.connection)


async def ready_or_closing(connection: AbstractConnection) -> None:
    """Returns once aiormq's `connection` is connected and not blocked (its public
    `ready()`), or closes."""
    ready = asyncio.ensure_future(connection.ready())
    closing, ours = closing_of(connection)
    try:
        await asyncio.wait((ready, closing), return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.cancel()
        if ours:
            closing.cancel()


def closing_of(connection: AbstractConnection) -> tuple[asyncio.Future[Any], bool]:
    """The future done when aiormq's `connection` closes, and whether it is ours to cancel:
    aiormq 7.2.4 hands each caller an observer of its own; an older one (6.x, taken through
    aio-pika's publish) its connection's own future, which a cancel marks closed (the
    connection given up and opened again at each block, what it had not confirmed resent)."""
    closing, again = connection.closing, connection.closing
    if closing is again:
        return closing, False
    again.cancel()
    return closing, True


class ExchangePublisher:
    """aio-pika's `Exchange.publish`, one message at a time (several under way at once):
    only its public API, five to seven times the CPU a message of `FrameWriter`'s. A block is
    seen through aiormq's public `Connection.ready()` (`blocked`)."""

    def __init__(self, exchange: AbstractExchange, connection: AbstractConnection | None) -> None:
        self.exchange = exchange
        # aiormq's connection under the exchange's channel (None: a block is not seen).
        self.connection = connection
        # The last look at `ready()`, and when the loop started running it (its clock).
        self._look: asyncio.Task[None] | None = None
        self._look_since: float | None = None
        if connection is not None:
            # One observer for the publisher's life: a look waits on a closed connection's
            # `ready()` for ever, unless cancelled.
            connection.closing.add_done_callback(self._stop_looking)

    def make(
        self, body: bytes, message_id: str, headers: HeadersType, app_id: str | None
    ) -> Marshalled:
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            message_id=message_id,
            app_id=app_id,
            headers=headers,
        )
        return Marshalled(message_id, len(body), message=message)

    async def publish(self, messages: Sequence[Marshalled]) -> list[asyncio.Future[Any]]:
        """Starts the publishes in order, a few per iteration of the event loop (a window
        started at once held the loop 11-13 ms); the broker bounds the wait for each."""
        started: list[asyncio.Future[Any]] = []
        try:
            for first in range(0, len(messages), _STARTED_AT_ONCE):
                if first:
                    await asyncio.sleep(0)
                # No timeout of aio-pika's: the broker bounds each confirm, but not while
                # RabbitMQ blocks the connection (one ran out during a block, and the
                # connection was given up and every message not confirmed sent again).
                started += [
                    asyncio.ensure_future(self.exchange.publish(message.message, routing_key=""))
                    for message in messages[first : first + _STARTED_AT_ONCE]
                    if message.message is not None
                ]
        except BaseException:
            for publish in started:  # none is left running unawaited
                publish.cancel()
            raise
        return started

    @property
    def blocked(self) -> bool:
        """Whether the last look at `ready()` has not returned for BLOCK_SEEN_SECONDS (it
        returns at once while RabbitMQ does not block); a read after it returned starts the
        next look and says not blocked. aiormq tells no one of a block, so it is seen at the
        first read BLOCK_SEEN_SECONDS after one that started a look: the broker reads every
        BLOCK_CHECK_SECONDS while it waits for a confirm."""
        if self.connection is None or self.connection.is_closed:
            return False  # (a look then would wait for ever: none cancels it)
        look = self._look
        if look is None or look.done():
            self._look_since = None
            self._look = asyncio.ensure_future(self._looking(self.connection))
            return False
        since = self._look_since
        return since is not None and asyncio.get_running_loop().time() - since >= BLOCK_SEEN_SECONDS

    async def _looking(self, connection: AbstractConnection) -> None:
        """A look at `ready()`: ends in its first step unless RabbitMQ blocks (however
        crowded the event loop, no block is seen where there is none)."""
        self._look_since = asyncio.get_running_loop().time()
        await connection.ready()

    def _stop_looking(self, _: object) -> None:
        if self._look is not None:
            self._look.cancel()

    async def unblocked(self) -> None:
        if self.connection is not None:
            await ready_or_closing(self.connection)


def untested(channel: Channel) -> str | None:
    """Why `FrameWriter` cannot be used on `channel`: the installed aio-pika, aiormq or
    pamqp outside the versions it was tested with, or an internal of aiormq it uses missing;
    None when it can."""
    installed = {name: installed_version(name) for name in TESTED_VERSIONS}
    outside = [
        f"{name} {installed[name]} (tested: >={low},<{below})"
        for name, (low, below) in TESTED_VERSIONS.items()
        if not _within(installed[name], low, below)
    ]
    if outside:
        return ", ".join(outside)
    missing = [name for name in _CHANNEL_INTERNALS if not hasattr(channel, name)]
    connection = getattr(channel, "connection", None)
    if not isinstance(getattr(connection, _UNBLOCKED, None), asyncio.Event):
        missing.append("connection's blocked state")
    if "drain_future" not in getattr(ChannelFrame, "__dataclass_fields__", {}):
        missing.append("ChannelFrame.drain_future")
    if missing:
        versions = ", ".join(f"{name} {version}" for name, version in installed.items())
        return f"aiormq's channel lacks {', '.join(missing)} ({versions})"
    return None


@functools.cache
def installed_version(name: str) -> str:
    """The version of the distribution `name` installed when it was first asked ("none" when
    it is not installed): the one this process loaded, read once (an upgrade in place under a
    running server changes the files, not the code it runs; a read took 1 ms of CPU)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _release(version: str) -> tuple[int, ...]:
    """The leading numbers of a version ("10.2.1rc1" -> (10, 2, 1)); () when there are none."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def _within(version: str, low: str, below: str) -> bool:
    release = _release(version)
    return bool(release) and _release(low) <= release < _release(below)


@dataclass(frozen=True, slots=True)
class Wire:
    """What marshalling a channel's messages needs, read on the event loop (the messages
    may be marshalled in a thread)."""

    channel_number: int
    max_content_size: int  # a body frame's most, from the connection's frame_max
    publish: bytes  # the Basic.Publish frame, the same for every message


async def underlay(channel: AbstractChannel) -> Channel:
    """aiormq's channel under aio-pika's, whose confirms and delivery tags `publish` keeps."""
    underlay = await channel.get_underlay_channel()
    if not isinstance(underlay, Channel):
        raise TypeError(f"not an aiormq channel: {underlay!r}")
    return underlay


def wire(channel: Channel, exchange: str) -> Wire:
    """The framing of messages published to the fanout `exchange` on `channel`: mandatory,
    as aio-pika publishes (a message no queue takes comes back and fails its publish)."""
    method = commands.Basic.Publish(exchange=exchange, routing_key="", mandatory=True)
    return Wire(
        channel.number, channel.max_content_size, pamqp.frame.marshal(method, channel.number)
    )


def marshal(
    on: Wire, body: bytes, message_id: str, headers: dict[str, Any], app_id: str | None
) -> Marshalled:
    """A persistent JSON message's frames; touches no shared state (runs in a thread)."""
    number = on.channel_number
    header = _header_payload(len(body), message_id, headers, app_id)
    if header is None:  # a value pamqp refuses or cuts: its own error or frame
        properties = _JSON_PERSISTENT(app_id=app_id, headers=headers, message_id=message_id)
        header = ContentHeader(0, len(body), properties).marshal()
    parts = [on.publish, _FRAME_HEAD.pack(_HEADER_FRAME, number, len(header)), header, _FRAME_END]
    step = on.max_content_size
    for start in range(0, len(body), step):
        chunk = body[start : start + step]
        parts += (_FRAME_HEAD.pack(_BODY_FRAME, number, len(chunk)), chunk, _FRAME_END)
    return Marshalled(message_id, len(body), b"".join(parts))


# A frame's type, channel and size, and its end (AMQP 0-9-1, 2.3.5); the header frame's
# class, weight and body size, then its property flags (4.2.6.1).
_FRAME_HEAD = struct.Struct(">BHI")
_FRAME_END = b"\xce"
_HEADER_FRAME, _BODY_FRAME = 2, 3
_HEADER_START = struct.Struct(">HxxQH")
_LENGTH = struct.Struct(">I")  # of a table, of a long string
# Basic's properties that every message has, in their order: content_type, headers (the flag:
# the table follows the content type), delivery_mode 2 and priority 0, message_id; app_id
# when set.
_FLAGS = 0x8000 | 0x2000 | 0x1000 | 0x0800 | 0x0080
_APP_ID_FLAG = 0x0008
_CONTENT_TYPE = b"\x10application/json"
_PERSISTENT_PRIORITY_0 = b"\x02\x00"
_SHORT_STRING_BYTES = 255
_TABLE_KEY_BYTES = 128


def _header_payload(
    body_size: int, message_id: str, headers: dict[str, Any], app_id: str | None
) -> bytes | None:
    """The header frame's payload pamqp marshals for `_JSON_PERSISTENT`'s properties, byte
    for byte, with a few packs (pamqp's took 130 Python calls a message); None for what it
    would refuse or change: a string past its limit, a header that is not a string."""
    message_id_bytes = message_id.encode()
    app_id_bytes = app_id.encode() if app_id else b""
    if not message_id_bytes or max(len(message_id_bytes), len(app_id_bytes)) > _SHORT_STRING_BYTES:
        return None  # (pamqp leaves an empty message_id out)
    table: list[bytes] = []
    for key, value in sorted(headers.items()):
        if not isinstance(key, str) or not isinstance(value, str):
            return None
        key_bytes = key.encode()
        if len(key_bytes) > _TABLE_KEY_BYTES:
            return None
        value_bytes = value.encode()
        table += (bytes((len(key_bytes),)), key_bytes, b"S", _LENGTH.pack(len(value_bytes)))
        table.append(value_bytes)
    entries = b"".join(table)
    parts = [
        _HEADER_START.pack(
            commands.Basic.frame_id, body_size, _FLAGS | (_APP_ID_FLAG if app_id_bytes else 0)
        ),
        _CONTENT_TYPE,
        _LENGTH.pack(len(entries)),
        entries,
        _PERSISTENT_PRIORITY_0,
        bytes((len(message_id_bytes),)),
        message_id_bytes,
    ]
    if app_id_bytes:
        parts += (bytes((len(app_id_bytes),)), app_id_bytes)
    return b"".join(parts)


async def publish(channel: Channel, messages: Sequence[Marshalled]) -> list[asyncio.Future[Any]]:
    """Writes `messages` to the connection in one frame write, in order, and returns the
    future of each one's confirm: RabbitMQ's ack, or the error of a nack, of a return (no
    queue took it) or of the channel's close. Under the channel's lock, as aiormq's own
    publish takes delivery tags, so the tags match RabbitMQ's count."""
    if not messages:
        return []
    async with channel.lock:
        if channel.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} closed")
        loop = asyncio.get_running_loop()
        first_tag = channel.delivery_tag + 1
        tags = range(first_tag, first_tag + len(messages))
        # Plain futures: one of the channel's own per message added four callbacks to each
        # confirm (half the broker's event loop work). One of the channel's stands for the
        # run: the channel's close fails it, and it fails those not confirmed yet.
        confirms: list[asyncio.Future[Any]] = [loop.create_future() for _ in messages]
        run = channel.create_future()
        run.add_done_callback(functools.partial(_closed, confirms))
        returned = channel.message_id_delivery_tag
        for tag, message, confirm in zip(tags, messages, confirms, strict=True):
            channel.confirmations[tag] = confirm
            returned[message.message_id] = tag  # a return names the message by its id
        # Watched from the last confirm, which is most often the last to come (not always:
        # RabbitMQ acks a small persistent message before a large one written before it).
        done = functools.partial(_run_done, run, returned, messages, tags, confirms)
        confirms[-1].add_done_callback(done)
        channel.delivery_tag = tags[-1]
        payload = b"".join(message.frames for message in messages)
        # Drained after it is written (a future only aiormq's writer sets): its next frame
        # waits until the socket took this one, so a RabbitMQ reading slowly holds our writes
        # in its queue of 10 frames, not in a buffer that grows.
        drained = ChannelFrame(payload, should_close=False, drain_future=loop.create_future())
        try:
            await channel.write_queue.put(drained)
        except BaseException:
            # Not written: RabbitMQ counts none of these, so their tags are taken again.
            channel.delivery_tag = first_tag - 1
            for tag, confirm in zip(tags, confirms, strict=True):
                channel.confirmations.pop(tag, None)
                confirm.cancel()
            raise
    return confirms


def _closed(confirms: list[asyncio.Future[Any]], run: asyncio.Future[None]) -> None:
    """The channel closed before the run was confirmed: its close error fails the rest."""
    if not run.cancelled() and run.exception() is None:
        return  # every message of the run was confirmed (or failed) on its own
    if run.cancelled():
        error: BaseException = asyncio.CancelledError()
    else:
        error = run.exception() or ChannelInvalidStateError("channel closed")
    for confirm in confirms:
        if not confirm.done():
            confirm.set_exception(error)


def _run_done(
    run: asyncio.Future[None],
    returned: dict[str, int],
    messages: Sequence[Marshalled],
    tags: range,
    confirms: list[asyncio.Future[Any]],
    _: object,
) -> None:
    """Once every confirm of the run came (or failed): its ids no longer name their delivery
    tags (unless sent again since), and the run leaves the channel's futures."""
    for confirm in confirms:
        if not confirm.done():  # confirmed out of order: watch the first still awaited
            confirm.add_done_callback(
                functools.partial(_run_done, run, returned, messages, tags, confirms)
            )
            return
    for message, tag in zip(messages, tags, strict=True):
        if returned.get(message.message_id) == tag:
            del returned[message.message_id]
    if not run.done():
        run.set_result(None)
