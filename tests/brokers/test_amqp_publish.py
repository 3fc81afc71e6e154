"""The broker's message frames are the ones pamqp marshals for aio-pika's message, byte for
byte, whatever the headers, app_id and body size: it packs them itself, pamqp's marshalling
cost 130 Python calls a message."""

from __future__ import annotations

import cProfile
import pstats
from typing import Any

import pamqp.frame
import pytest
from pamqp import commands
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from server.brokers.amqp_publish import Wire, marshal

ON = Wire(channel_number=3, max_content_size=131_064, publish=b"<publish frame>")
PREVIOUS = {"previous_message_id": "ab" * 16}
EXPORTED = {"rasa-export-process-id": "cd" * 16, **PREVIOUS}


def pamqp_frames(
    body: bytes, message_id: str, headers: dict[str, Any], app_id: str | None
) -> bytes:
    """What pamqp writes for aio-pika's persistent JSON message (priority 0)."""
    properties = commands.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        priority=0,
        app_id=app_id,
        headers=headers,
        message_id=message_id,
    )
    frames = [ON.publish, pamqp.frame.marshal(ContentHeader(0, len(body), properties), 3)]
    step = ON.max_content_size
    frames += [
        pamqp.frame.marshal(ContentBody(body[start : start + step]), 3)
        for start in range(0, len(body), step)
    ]
    return b"".join(frames)


@pytest.mark.parametrize(
    ("body", "message_id", "headers", "app_id"),
    [
        (b'{"event": "user"}', "ef" * 16, {}, None),
        (b"{}", "ef" * 16, PREVIOUS, "production"),
        (b"{}", "ef" * 16, EXPORTED, ""),
        (b"", "ef" * 16, {"previous_message_id": "é" * 200}, "é" * 127),  # multi-byte
        (b"x" * 300_000, "ef" * 16, PREVIOUS, None),  # three body frames
        (b"{}", "", PREVIOUS, None),  # pamqp leaves an empty message_id out
        (b"{}", "ef" * 16, {"k" * 130: "v"}, None),  # pamqp cuts a key to 128 bytes
        (b"{}", "ef" * 16, {"n": 5, "t": True, "none": None}, None),
    ],
)
def test_the_frames_are_pamqps(
    body: bytes, message_id: str, headers: dict[str, Any], app_id: str | None
) -> None:
    assert marshal(ON, body, message_id, headers, app_id).frames == pamqp_frames(
        body, message_id, headers, app_id
    )


@pytest.mark.parametrize(("message_id", "app_id"), [("m" * 256, None), ("m", "a" * 256)])
def test_a_property_longer_than_amqp_takes_fails_as_in_pamqp(message_id: str, app_id: str) -> None:
    with pytest.raises(TypeError):
        pamqp_frames(b"{}", message_id, {}, app_id)
    with pytest.raises(TypeError):
        marshal(ON, b"{}", message_id, {}, app_id)


def test_making_a_message_costs_a_few_python_calls() -> None:
    """Counted (cProfile's calls, builtins included, which a loaded machine does not
    change): 143 a message with pamqp's marshalling, now 34."""
    profile = cProfile.Profile()
    profile.enable()
    for number in range(100):
        marshal(ON, b'{"event": "user"}', f"{number:032x}", PREVIOUS, "production")
    profile.disable()

    calls = pstats.Stats(profile).total_calls / 100  # type: ignore[attr-defined]
    assert calls < 50, calls
