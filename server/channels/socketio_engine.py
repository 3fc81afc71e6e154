"""The socket.io server the channel runs: python-socketio's, on an engine.io server that
answers a refused long-polling POST, or one for a closed session, with a 400 at once."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import engineio
import socketio


def session_of(query_string: bytes) -> str | None:
    """The engine.io session id (`sid`) a request names; None without one."""
    if b"sid=" not in query_string:
        return None
    for name, value in parse_qsl(query_string.decode("latin-1")):
        if name == "sid":
            return value
    return None


class Engine(engineio.AsyncServer):  # type: ignore[misc]
    """engine.io's server, with two fixes to its long-polling POST.

    A POST it refuses (a packet a client may not send, such as OPEN, or a body over
    `max_http_buffer_size`) closes the session and, before answering 400, waited until a
    long-poll had taken the close packet: for ever when the client sent none, as nothing
    bounds a request's time under uvicorn. It no longer waits; a long-poll already waiting
    still gets that packet, a later one is answered 400, the session being gone.

    A POST for a session that is closed (by the client's CLOSE packet) but not yet removed
    failed with a KeyError (a 500, with a traceback in the log): it is answered 400 as a GET
    is.
    """

    async def handle_request(self, *args: Any, **kwargs: Any) -> Any:
        scope = args[0] if args else None
        if isinstance(scope, dict) and scope.get("method") == "POST":
            sid = session_of(scope.get("query_string", b""))
            socket = self.sockets.get(sid) if sid is not None else None
            if socket is not None and socket.closed:
                del self.sockets[sid]
        return await super().handle_request(*args, **kwargs)

    async def disconnect(self, sid: str | None = None) -> None:
        if sid is None:
            await super().disconnect()
            return
        socket = self.sockets.pop(sid, None)
        if socket is not None:
            await socket.close(wait=False, reason=self.reason.SERVER_DISCONNECT)


class Server(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server on `Engine`."""

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return Engine
