"""Publishing a run of AMQP messages on an aiormq channel in one socket write, each with its
own publisher confirm: aio-pika's `Exchange.publish` built, wrote and awaited each message on
its own (0.2-0.9 ms of CPU a message, most of the RabbitMQ broker's cost a turn)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pamqp.frame
from aio_pika.abc import AbstractChannel
from aiormq.abc import ChannelFrame
from aiormq.channel import Channel
from aiormq.exceptions import ChannelInvalidStateError
from pamqp import commands
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

# The properties every message has; `priority` 0 as aio-pika's Message sets it (the same
# header frame, byte for byte).
_JSON_PERSISTENT = functools.partial(
    commands.Basic.Properties, content_type="application/json", delivery_mode=2, priority=0
)


@dataclass(frozen=True, slots=True)
class Marshalled:
    """One message as it goes on the wire (its header and body frames), and what a confirm
    or a return of it is matched by."""

    message_id: str
    body_size: int
    frames: bytes


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
    properties = _JSON_PERSISTENT(app_id=app_id, headers=headers, message_id=message_id)
    number = on.channel_number
    parts = [on.publish, pamqp.frame.marshal(ContentHeader(0, len(body), properties), number)]
    step = on.max_content_size
    parts += [
        pamqp.frame.marshal(ContentBody(body[start : start + step]), number)
        for start in range(0, len(body), step)
    ]
    return Marshalled(message_id, len(body), b"".join(parts))


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
        try:
            await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False))
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
