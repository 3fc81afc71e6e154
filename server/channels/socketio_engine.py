"""The socket.io server the channel runs: python-socketio's, with fixes for what clients can
get wrong (an event without a name, a long-polling POST engine.io refuses or that names a
closed session, a client that takes none of its messages) that would otherwise hold a
request for ever, log a traceback or hold memory without bound."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

import engineio
import socketio

logger = logging.getLogger(__name__)

# The most packets a session holds for its client to take. A client that takes none (a
# long-polling one that never polls, a WebSocket that reads nothing) while it answers
# engine.io's pings, which it may do without reading them, stays connected: the server then
# held every bot message for it, without bound.
MAX_QUEUED_PACKETS = 10_000


def session_of(query_string: bytes) -> str | None:
    """The engine.io session id (`sid`) a request names; None without one."""
    if b"sid=" not in query_string:
        return None
    for name, value in parse_qsl(query_string.decode("latin-1")):
        if name == "sid":
            return value
    return None


class EventPacket(socketio.packet.Packet):  # type: ignore[misc]
    """python-socketio's packet, refusing an event whose name is no string (`42[{"a":1}]`,
    `42[]`): python-socketio would fail on it in the event's task, whose traceback asyncio
    logs; refused while decoding, it is a malformed packet (one warning line)."""

    def decode(self, encoded_packet: Any) -> int:
        attachments: int = super().decode(encoded_packet)
        if self.packet_type in (socketio.packet.EVENT, socketio.packet.BINARY_EVENT):
            data = self.data
            if not (isinstance(data, list) and data and isinstance(data[0], str)):
                raise ValueError("an event whose name is not a string")
        return attachments


class Engine(engineio.AsyncServer):  # type: ignore[misc]
    """engine.io's server, with two fixes to its long-polling POST and a bound on what a
    session holds for its client (`MAX_QUEUED_PACKETS`: past it, the session is closed).

    A POST it refuses (a packet a client may not send, such as OPEN, or a body over
    `max_http_buffer_size`) closes the session, and engine.io would wait, before answering
    400, until a long-poll took the close packet: for ever when the client sends none, as
    nothing bounds a request's time under uvicorn. Here it does not wait: a long-poll
    already waiting still gets the packet, a later one is answered 400 (no such session).

    A POST for a session closed by its client (engine.io's CLOSE packet) but not yet swept
    would fail inside engine.io with a KeyError (a 500 and a traceback): the session is
    dropped first, so the POST is answered 400, as a GET is. "First" is once the request's
    body has begun: engine.io looks the session up right after, with no wait between,
    whereas the session may close while a client holds its body back.
    """

    async def handle_request(self, *args: Any, **kwargs: Any) -> Any:
        scope = args[0] if args else None
        if isinstance(scope, dict) and scope.get("method") == "POST" and len(args) > 1:
            sid = session_of(scope.get("query_string", b""))
            if sid is not None:
                receive = args[1]

                async def receive_then_drop_closed() -> Any:
                    message = await receive()
                    socket = self.sockets.get(sid)
                    if socket is not None and socket.closed:
                        del self.sockets[sid]
                    return message

                args = (scope, receive_then_drop_closed, *args[2:])
        return await super().handle_request(*args, **kwargs)

    async def send_packet(self, sid: str, pkt: Any) -> None:
        socket = self.sockets.get(sid)
        if socket is not None and socket.queue.qsize() >= MAX_QUEUED_PACKETS:
            logger.warning(
                "socketio: session %s was closed: its client took none of the %d packets "
                "waiting for it",
                sid,
                MAX_QUEUED_PACKETS,
            )
            await self.disconnect(sid)
            return
        await super().send_packet(sid, pkt)

    async def disconnect(self, sid: str | None = None) -> None:
        if sid is None:
            await super().disconnect()
            return
        socket = self.sockets.pop(sid, None)
        if socket is not None:
            await socket.close(wait=False, reason=self.reason.SERVER_DISCONNECT)


class Server(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server on `Engine`, reading packets as `EventPacket`s."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("serializer", EventPacket)
        super().__init__(**options)

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return Engine
