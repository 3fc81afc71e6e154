"""The socket.io server the channel runs: python-socketio's, on an engine.io server that
answers a refused long-polling POST at once."""

from __future__ import annotations

import engineio
import socketio


class Engine(engineio.AsyncServer):  # type: ignore[misc]
    """engine.io's server, closing a session it refuses a POST of without waiting.

    engine.io closes the session of a POST it refuses (a packet a client may not send, such
    as OPEN, or a body over `max_http_buffer_size`) and, before answering 400, waits until a
    long-poll has taken its close packet: for ever when the client sends none, as nothing
    bounds a request's time under uvicorn. A long-poll already waiting still gets that packet;
    a later one is answered 400, the session being gone.
    """

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
