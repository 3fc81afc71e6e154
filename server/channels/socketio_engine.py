"""The socket.io server the channel runs: python-socketio's, with fixes for what clients can
get wrong (an event without a name, a long-polling POST engine.io refuses or that names a
closed session, a client that takes none of its messages, sessions opened without end or
never joined) that would otherwise hold a request for ever, log a traceback or hold memory
without bound."""

from __future__ import annotations

import asyncio
import logging
import time
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
# The most bytes of packets a session holds for its client to take: 10,000 packets of bot
# messages with images or custom payloads could be hundreds of megabytes.
MAX_QUEUED_BYTES = 4 * 1024 * 1024
# A packet's cost beyond its data (the packet object and the queue's slot).
PACKET_OVERHEAD = 100
# Seconds output may wait past the byte budget before the session is closed: a client
# taking what is sent to it empties its queue at each take (a long-poll, the WebSocket's
# writer), so a turn bigger than the budget (one large payload, images' data) is taken
# within this, whereas a client taking nothing lets it grow.
QUEUED_BYTES_GRACE = 10.0
# Within that grace, what waits may still not pass this many times the budget (16 MiB): a
# client taking nothing while its bot answers fast holds no more than that.
QUEUED_BYTES_BURST = 4
# The engine.io sessions a process holds by default (`max_sessions`): an idle one costs about
# 20 KB over long-polling, 93 KiB over a WebSocket (its connection included), so 0.2 to 0.9
# GiB at the bound.
MAX_SESSIONS = 10_000
# Seconds a session has to join a namespace (socket.io's CONNECT) before it is closed, as
# socket.io's own server does (`connectTimeout`).
JOIN_TIMEOUT = 45.0
# Seconds a long-polling session's upgrade to a WebSocket may take, as in socket.io's own
# server (`upgradeTimeout`).
UPGRADE_TIMEOUT = 10.0
# Seconds a refused client is told to wait (`Retry-After`).
RETRY_AFTER = 10


class CountedQueue(asyncio.Queue[Any]):
    """A session's queue of packets waiting for its client, keeping the bytes they hold."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bytes = 0
        self.waiting_since = 0.0  # when the queue last went from empty to not empty

    def _put(self, item: Any) -> None:
        if self.empty():
            self.waiting_since = time.monotonic()
        self.bytes += packet_bytes(item)
        super()._put(item)

    def _get(self) -> Any:
        item = super()._get()
        self.bytes -= packet_bytes(item)
        return item

    def over_budget(self, pkt: Any) -> bool:
        """Whether `pkt` would take what waits past `MAX_QUEUED_BYTES` while the oldest of it
        has waited longer than `QUEUED_BYTES_GRACE` (a client taking its packets empties the
        queue at each take), or past `QUEUED_BYTES_BURST` times it. A packet for an empty
        queue never is: a client gets one bot message, whatever its size."""
        if self.empty():
            return False
        waiting = self.bytes + packet_bytes(pkt)
        return waiting > QUEUED_BYTES_BURST * MAX_QUEUED_BYTES or (
            waiting > MAX_QUEUED_BYTES
            and time.monotonic() - self.waiting_since > QUEUED_BYTES_GRACE
        )


def packet_bytes(pkt: Any) -> int:
    """About what an engine.io packet waiting in a queue holds, its text counted as the bytes
    sent (UTF-8). python-socketio's JSON escapes all but ASCII (`\u00e9`, 6 bytes), so its
    text is ASCII, its length those bytes, told without reading it (`isascii()` reads a flag);
    other text, as a `json` sending it unescaped makes, costs up to 4 bytes a character."""
    data = getattr(pkt, "data", None)
    if isinstance(data, str):
        return PACKET_OVERHEAD + (len(data) if data.isascii() else len(data.encode()))
    return PACKET_OVERHEAD + (len(data) if isinstance(data, bytes) else 0)


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
    """engine.io's server, with two fixes to its long-polling POST, a bound on what a
    session holds for its client (`MAX_QUEUED_PACKETS`, `MAX_QUEUED_BYTES`: past either, the
    session is closed) and on the sessions it holds (`max_sessions`: a new one past it is
    answered 503, those open keep working).

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

    max_sessions = MAX_SESSIONS
    refused = 0  # sessions refused since the last line logged
    refused_logged: float | None = None  # when the last line was logged
    closes = 0  # sessions closed (engine.io's disconnect event), for the sweep below
    swept_closes = 0  # `closes` when the sessions were last swept

    def create_queue(self, *args: Any, **kwargs: Any) -> asyncio.Queue[Any]:
        return CountedQueue(*args, **kwargs)

    async def _handle_connect(self, environ: Any, transport: str, jsonp_index: Any = None) -> Any:
        if len(self.sockets) >= self.max_sessions and self.closes != self.swept_closes:
            # Sessions closed (by their client, or timed out) wait for engine.io's sweep.
            # Swept here only when one has closed since: each handshake refused at the bound
            # would otherwise go through every session (0.3 ms CPU at 10,000).
            self.swept_closes = self.closes
            for sid in [sid for sid, socket in self.sockets.items() if socket.closed]:
                del self.sockets[sid]
        if len(self.sockets) >= self.max_sessions:
            self.refused += 1
            now = time.monotonic()
            if self.refused_logged is None or now - self.refused_logged >= 60:
                logger.warning(
                    "socketio: %d new session(s) refused: the process holds %d, its max_sessions",
                    self.refused,
                    self.max_sessions,
                )
                self.refused, self.refused_logged = 0, now
            return {
                "status": "503 SERVICE UNAVAILABLE",
                "headers": [("Content-Type", "text/plain"), ("Retry-After", str(RETRY_AFTER))],
                "response": b'"Too many sessions"',
            }
        return await super()._handle_connect(environ, transport, jsonp_index)

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._trigger_event(event, *args, **kwargs)
        finally:
            if event == "disconnect":
                # Counted once its handlers have run: the session is closed right after,
                # with nothing awaited between, so the next sweep finds it closed.
                self.closes += 1

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
        elif isinstance(scope, dict) and scope.get("type") == "websocket" and len(args) > 1:
            socket = self.sockets.get(session_of(scope.get("query_string", b"")) or "")
            if socket is not None and not socket.upgraded:
                return await self._upgrade(socket, scope, args[1], *args[2:], **kwargs)
        return await super().handle_request(*args, **kwargs)

    async def _upgrade(
        self, socket: Any, scope: Any, receive: Any, *args: Any, **kwargs: Any
    ) -> Any:
        """A long-polling session's upgrade to a WebSocket, given `UPGRADE_TIMEOUT` to finish
        (the probe and the UPGRADE packet): engine.io waits for them without end, holding
        the connection, while the session's long-polls get nothing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UPGRADE_TIMEOUT

        async def receive_until_upgraded() -> Any:
            if socket.upgraded:
                return await receive()
            try:
                return await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except TimeoutError:
                logger.warning(
                    "socketio: session %s's WebSocket was closed: its upgrade did not finish "
                    "within %g s",
                    socket.sid,
                    UPGRADE_TIMEOUT,
                )
                return {"type": "websocket.disconnect", "code": 1006}

        try:
            return await super().handle_request(scope, receive_until_upgraded, *args, **kwargs)
        finally:
            if not socket.upgraded:
                socket.upgrading = False  # its long-polls get its packets again

    async def send_packet(self, sid: str, pkt: Any) -> None:
        socket = self.sockets.get(sid)
        if socket is not None and (
            socket.queue.qsize() >= MAX_QUEUED_PACKETS or socket.queue.over_budget(pkt)
        ):
            logger.warning(
                "socketio: session %s was closed: its client took none of the %d packets "
                "(%d bytes) waiting for it",
                sid,
                socket.queue.qsize(),
                socket.queue.bytes,
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
    """python-socketio's server on `Engine`, reading packets as `EventPacket`s, closing a
    session that joins no namespace within `JOIN_TIMEOUT` (python-socketio keeps it as long
    as its client answers pings)."""

    def __init__(self, max_sessions: int = MAX_SESSIONS, **options: Any) -> None:
        options.setdefault("serializer", EventPacket)
        super().__init__(**options)
        self.eio.max_sessions = max_sessions
        self._closing: set[asyncio.Task[None]] = set()

    async def _handle_eio_connect(self, eio_sid: str, environ: Any) -> Any:
        result = await super()._handle_eio_connect(eio_sid, environ)
        asyncio.get_running_loop().call_later(JOIN_TIMEOUT, self._close_unjoined, eio_sid)
        return result

    def _close_unjoined(self, eio_sid: str) -> None:
        socket = self.eio.sockets.get(eio_sid)
        if socket is None or socket.closed:
            return
        namespaces = list(self.manager.get_namespaces())
        if any(self.manager.sid_from_eio_sid(eio_sid, ns) is not None for ns in namespaces):
            return
        logger.warning(
            "socketio: session %s was closed: it joined no namespace within %g s",
            eio_sid,
            JOIN_TIMEOUT,
        )
        task = asyncio.get_running_loop().create_task(self.eio.disconnect(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return Engine
