"""What a socket.io session's queue of output counts against its byte budget: the bytes its
client is sent, whatever the text."""

from __future__ import annotations

import json
from typing import Any

import engineio
import pytest
import socketio

from server.channels.socketio_engine import PACKET_OVERHEAD, CountedQueue, EventPacket

TEXTS = ["hello", "héllo wörld", "你好，世界", "👋🏽 🤖", "x" * 1000 + "😀"]


class UnescapedJson:
    """A `json` for python-socketio's packets that sends text as it is (`json=` of
    python-socketio's server; the stdlib's default escapes all but ASCII)."""

    @staticmethod
    def dumps(data: Any, **kwargs: Any) -> str:
        return json.dumps(data, ensure_ascii=False, **kwargs)

    loads = staticmethod(json.loads)


def _bot_message(text: str, escaped: bool) -> Any:
    packet = EventPacket(socketio.packet.EVENT, data=["bot_uttered", {"text": text}])
    if not escaped:
        packet.json = UnescapedJson
    return engineio.packet.Packet(engineio.packet.MESSAGE, data=packet.encode())


@pytest.mark.parametrize("escaped", [True, False], ids=["escaped", "as-is"])
async def test_waiting_output_counts_the_bytes_its_client_is_sent(escaped: bool) -> None:
    queue = CountedQueue()
    packets = [_bot_message(text, escaped) for text in TEXTS]
    for packet in packets:
        queue.put_nowait(packet)
    sent = sum(len(packet.encode().encode("utf-8")) - 1 for packet in packets)  # (its type)
    assert queue.bytes == sent + PACKET_OVERHEAD * len(packets)
    while not queue.empty():
        queue.get_nowait()
    assert queue.bytes == 0
