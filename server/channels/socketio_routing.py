"""socket.io sessions across `botserver run --workers N`: each engine.io session id names the
worker that holds the session, and a request for another worker's session is relayed to it.

A session lives in one worker's memory, but its HTTP long-polling requests (a GET held open,
a POST per message, the WebSocket upgrade) come on several connections, which the kernel
spreads over the workers. Each worker serves its app on a private Unix socket as well
(`server.api.workers`), and puts its route (a short random name) in front of the session ids
it makes: `<route>.<engine.io's id>`. A request whose `sid` names another worker is forwarded
to that worker's socket and its answer relayed; the session's own worker answers as if the
client had reached it. A WebSocket upgrade for another worker's session is refused: the
client stays on long-polling, which keeps working. A worker that is gone leaves its sessions
unknown, and the client gets engine.io's own 400 for an unknown session and opens a new one.

A bot message the server pushes (trigger_intent, a reminder) may be sent by any worker: it is
emitted here when this worker holds the room's sockets, else sent on to the worker a session
id names, or to every other worker for a named room (a session_id), over the same sockets;
each emits it to the sockets it holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import engineio
import httpx
import socketio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.worker_files import RELAYED_HEADER
from server.channels.socketio_engine import Engine, Server, session_of
from server.http_clients import KEEPALIVE_SECONDS, async_client_off_loop

logger = logging.getLogger(__name__)

# What `server.api.workers` names a worker by: 8 hex digits. A sid is the client's input:
# only a route of this shape ever becomes a path.
_ROUTE = re.compile(r"[0-9a-f]{8}")
# Headers of one connection, not of the request: the relayed request has its own.
_HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te", b"trailer")
)
# ...and the mark of a relayed request, which only the relay sets.
_NOT_RELAYED = _HOP_BY_HOP | {RELAYED_HEADER}
# A forwarded connection is local: it opens at once, or the worker is gone.
_CONNECT_SECONDS = 2.0
# Beyond engine.io's longest wait for a long-poll (ping interval plus ping timeout).
_READ_MARGIN_SECONDS = 10.0
# A push is a local request whose answer comes once the message is queued for the sockets.
_PUSH_TIMEOUT = httpx.Timeout(3.0, connect=_CONNECT_SECONDS)
# A worker that did not take a push is skipped this long, with one warning, rather than
# waited for at every bot message.
_SKIP_SECONDS = 30.0
# How long the list of the other workers is reused before their directory is read again.
_LIST_SECONDS = 1.0
# Where a worker takes the pushes of the others, on its private socket only.
PUSH_PATH = "/_push/socketio"


def routed_server(route: str, **options: Any) -> socketio.AsyncServer:
    """A socket.io server (the channel's `Server`) whose engine.io session ids begin with
    `route`."""

    class NamedSessions(Engine):
        def generate_id(self) -> str:
            return f"{route}.{super().generate_id()}"

    class RoutedServer(Server):
        def _engineio_server_class(self) -> type[engineio.AsyncServer]:
            return NamedSessions

    return RoutedServer(**options)


def route_of(query_string: bytes) -> str | None:
    """The worker route a request's `sid` names; None without one."""
    sid = session_of(query_string)
    if sid is None:
        return None
    route, dot, _ = sid.partition(".")
    return route if dot and _ROUTE.fullmatch(route) else None


class Workers:
    """The other workers, over their private sockets: one HTTP client each, made when first
    needed and closed when this worker stops (`aclose`)."""

    def __init__(self, route: str, sockets: Path, long_poll_seconds: float) -> None:
        self.route = route
        self.sockets = sockets  # the workers' Unix sockets, `<route>.sock` each
        self.timeout = httpx.Timeout(
            _CONNECT_SECONDS, read=long_poll_seconds + _READ_MARGIN_SECONDS
        )
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._others: list[str] = []
        self._listed_at = -_LIST_SECONDS
        self._listing: asyncio.Future[list[str]] | None = None
        self._skipped: dict[str, float] = {}  # route: until when (time.monotonic())

    async def client(self, target: str) -> httpx.AsyncClient | None:
        """The client for worker `target`; None when its socket is gone."""
        client = self._clients.get(target)
        if client is None:
            path = self.sockets / f"{target}.sock"
            # A file-system call, in a thread: a slow disk would stall every session here.
            if not await asyncio.to_thread(path.exists):  # another run's, or one that stopped
                return None
            # Built by http_clients, as every outgoing client (no proxy of the environment),
            # in a thread (a client loads the CA bundle, 27-42 ms of CPU; the transport
            # another, unless told there is no TLS: plain HTTP over a local socket).
            client = await async_client_off_loop(
                transport=httpx.AsyncHTTPTransport(
                    uds=str(path),
                    verify=False,
                    # One connection per long-poll in flight: as many as this worker has
                    # clients. An idle one kept less long than the other worker's uvicorn
                    # keeps it (5 s): httpx's own 5 s met it, and a push as it closed the
                    # connection was lost. (A client's `limits` are not its transport's.)
                    limits=httpx.Limits(
                        max_connections=None,
                        max_keepalive_connections=32,
                        keepalive_expiry=KEEPALIVE_SECONDS,
                    ),
                ),
                timeout=self.timeout,
            )
            made = self._clients.setdefault(target, client)  # or by another request meanwhile
            if made is not client:
                await client.aclose()
            return made
        return client

    async def drop(self, target: str, client: httpx.AsyncClient) -> None:
        """Close worker `target`'s client (it did not answer): another is made when needed."""
        if self._clients.get(target) is client:
            del self._clients[target]
        await client.aclose()

    async def aclose(self) -> None:
        """Close every client, when this worker stops."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def emit(
        self,
        sio: socketio.AsyncServer,
        event: str,
        data: Any,
        room: str,
        namespace: str | None,
    ) -> None:
        """Emit to `room`'s sockets here, or on the workers that may hold them: the one a
        session id names, or every other worker for a named room (a session_id) none of
        whose sockets is here.

        A named room with sockets here is not sent on: a reply to a visitor's own message
        (the common case) costs nothing more, where a push is an HTTP request to each other
        worker, costing more than a whole turn (docs/benchmarks.md).
        """
        route, dot, _ = room.partition(".")
        if dot and _ROUTE.fullmatch(route):
            targets = [] if route == self.route else [route]
        elif _holds(sio, room, namespace):
            targets = []
        else:
            targets = await self._listed()
        if not targets:
            await sio.emit(event, data, room=room, namespace=namespace)
            return
        body = json.dumps({"event": event, "data": data, "room": room, "namespace": namespace})
        await asyncio.gather(*(self._push(target, body.encode(), room) for target in targets))

    async def _listed(self) -> list[str]:
        """The other workers' routes, read from their directory (in a thread: a directory
        listing is a file-system call) at most once a second."""
        now = time.monotonic()
        if self._listing is None and now - self._listed_at >= _LIST_SECONDS:
            self._listed_at = now
            self._listing = asyncio.ensure_future(asyncio.to_thread(self._read_others))
        if self._listing is not None:  # pushes meanwhile wait for the same listing
            listing = self._listing
            try:
                self._others = await asyncio.shield(listing)
            finally:
                if self._listing is listing and listing.done():
                    self._listing = None
        return [route for route in self._others if self._skipped.get(route, 0.0) <= now]

    def _read_others(self) -> list[str]:
        return sorted(
            path.stem
            for path in self.sockets.glob("*.sock")
            if path.stem != self.route and _ROUTE.fullmatch(path.stem)
        )

    async def _push(self, target: str, body: bytes, room: str) -> None:
        if self._skipped.get(target, 0.0) > time.monotonic():
            return
        client = await self.client(target)
        if client is None:
            self._skip(target, room, "it is gone")
            return
        try:
            answer = await client.post(
                "http://worker" + PUSH_PATH,
                content=body,
                headers={"content-type": "application/json"},
                timeout=_PUSH_TIMEOUT,
            )
        except httpx.TransportError as exc:
            await self.drop(target, client)
            if _refused(exc):
                await self._forget(target, room)
                return
            self._skip(target, room, f"it did not answer: {type(exc).__name__}")
            return
        if not answer.is_success:
            logger.warning(
                "socketio: worker %s refused a bot message for %s (%d)",
                target,
                room,
                answer.status_code,
            )

    async def _forget(self, target: str, room: str) -> None:
        """Worker `target` is dead (killed: it could not remove its socket, and nothing
        listens there): its socket is removed, so that no later push tries it. Before, every
        push to a named room tried it again once the skip ended, with a warning each time,
        for as long as the server ran."""
        path = self.sockets / f"{target}.sock"
        await asyncio.to_thread(path.unlink, missing_ok=True)
        self._others = [route for route in self._others if route != target]
        self._skipped[target] = time.monotonic() + _SKIP_SECONDS  # its sessions' pushes too
        logger.warning(
            "socketio: a bot message for %s did not reach worker %s (it is gone: nothing "
            "listens on its socket, which is removed)",
            room,
            target,
        )

    def _skip(self, target: str, room: str, why: str) -> None:
        self._skipped[target] = time.monotonic() + _SKIP_SECONDS
        logger.warning(
            "socketio: a bot message for %s did not reach worker %s (%s); its sockets are "
            "skipped for %g s",
            room,
            target,
            why,
            _SKIP_SECONDS,
        )


def _refused(exc: BaseException) -> bool:
    """Whether a connection to a Unix socket failed because nothing listens there (its
    worker died) rather than because the worker is slow."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:  # a chain may loop back on itself
        if isinstance(seen, ConnectionRefusedError):
            return True
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return False


def _holds(sio: socketio.AsyncServer, room: str, namespace: str | None) -> bool:
    """Whether a socket of this worker is in `room`."""
    return any(True for _ in sio.manager.get_participants(namespace or "/", room))


def push_receiver(sio: socketio.AsyncServer) -> ASGIApp:
    """Takes another worker's push (`Workers.emit`) and emits it to the sockets held here."""

    async def receive_push(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            push = json.loads(await _body(receive))
            event, data, room, namespace = (
                push["event"],
                push["data"],
                push["room"],
                push["namespace"],
            )
        except (ValueError, KeyError, TypeError):
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await sio.emit(event, data, room=room, namespace=namespace)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return receive_push


class SessionRouter:
    """In front of a worker's socket.io app: requests for its own sessions (and new ones) go
    to the app, requests for another worker's sessions to that worker."""

    def __init__(self, app: ASGIApp, workers: Workers) -> None:
        self.app = app
        self.route = workers.route
        self.workers = workers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = route_of(scope.get("query_string", b"")) if scope["type"] != "lifespan" else None
        if target is None or target == self.route:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            # Refused before it is accepted (a 403): the client goes on with long-polling.
            await receive()
            await send({"type": "websocket.close", "code": 1008})
        else:
            await self._forward(target, scope, receive, send)

    async def _forward(self, target: str, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _body(receive)
        client = await self.workers.client(target)
        if client is None:
            await self._answer_locally(scope, body, send)
            return
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        request = client.build_request(
            scope["method"],
            "http://worker" + path.decode("latin-1") + ("?" + query.decode("latin-1")),
            headers=[
                *((k, v) for k, v in scope["headers"] if k not in _NOT_RELAYED),
                (RELAYED_HEADER, b"1"),
            ],
            content=body,
        )
        if request.url.raw_path.partition(b"?")[0] != path:
            # httpx resolved a `..` (`/socket.io/../_push/socketio`): the request would reach
            # another path of that worker than the socket.io one it came for.
            await self._answer_locally(scope, body, send)
            return
        try:
            response = await client.send(request, stream=True)
        except httpx.TransportError as exc:
            # The worker is gone (or stuck): its sessions are too. engine.io's answer for an
            # unknown session makes the client open a new one here.
            logger.info("socketio: worker %s did not answer (%s)", target, type(exc).__name__)
            await self.workers.drop(target, client)
            await self._answer_locally(scope, body, send)
            return
        try:
            headers = [
                (name.lower(), value)
                for name, value in response.headers.raw
                if name.lower() not in _HOP_BY_HOP
            ]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": headers}
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except httpx.TransportError as exc:  # cut off midway: the client sees a broken answer
            logger.info("socketio: worker %s's answer broke off (%s)", target, type(exc).__name__)
        finally:
            await response.aclose()

    async def _answer_locally(self, scope: Scope, body: bytes, send: Send) -> None:
        """engine.io's own answer here: for another worker's sid, a 400 for an unknown session."""
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _body(receive: Receive) -> bytes:
    """The whole request body (engine.io reads it whole too, up to its 1 MB packet limit)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
