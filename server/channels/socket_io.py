"""The socket.io channel: python-socketio mounted at `socketio_path`, Rasa's events and payloads.

`user_uttered` in, `bot_uttered` out (names configurable); with `session_persistence` the
conversation is the client's session id, whose sockets share its room, otherwise the socket id.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections import OrderedDict
from itertools import islice
from typing import Any

import jwt
import socketio
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import setting_values as settings
from server.api.errors import BUSY_CONVERSATIONS
from server.api.shutdown import at_stop
from server.api.worker_files import serve_privately, worker_route
from server.auth.config import key_text, prepared_key, supported_jwt_methods
from server.auth.refusals import RefusalLog
from server.channels.channel import (
    InputChannel,
    OnNewMessage,
    counted_in_outage,
    health_router,
    log_failed_turn,
    refused_as_too_long,
    reply_choices,
)
from server.channels.socketio_engine import MAX_SESSIONS, Server
from server.channels.socketio_rooms import RedisRooms, endpoints_redis, rooms_redis_setting
from server.channels.socketio_routing import (
    PUSH_PATH,
    SessionRouter,
    Workers,
    push_receiver,
    routed_server,
)
from server.dialogue.messages import UserMessage, split_message
from server.errors import (
    InvalidConfig,
    InvalidConversationId,
    LockTimeout,
    NoModelLoaded,
    StoreError,
    how_many,
)
from server.json_values import json_can_hold, loads_untrusted, nests_deeper_than
from server.outages import RepeatsCounted
from server.trackers.store import check_conversation_id

logger = logging.getLogger(__name__)

# What the user is told when their message could not be recorded (conversation busy, store
# down): the message is lost unless sent again.
SEND_AGAIN = "Your message could not be handled just now. Please send it again."
# What a socket is told when its message names a session no store can hold: a widget asks
# for its stored session again when the page reloads, and is then given a new one.
INVALID_SESSION = (
    "Your message could not be handled: this chat's session id is not valid. "
    "Please reload the page to start a new chat."
)


# python-socketio puts each socket in a room named by its own id. A session's room is named
# apart, so that no session id names a socket's room: with rooms shared by every worker and
# host, a session id equal to a socket's id held elsewhere would otherwise send that socket
# the session's replies. Socket ids never hold a colon.
_SESSION_ROOM = "session:"


# The most sessions a socket stays in, by default (`sessions_per_socket`).
SESSIONS_PER_SOCKET = 1000
# The most messages of one socket handled at once (running, or waiting for their
# conversation), by default (`messages_per_socket`).
MESSAGES_PER_SOCKET = 100
# Messages refused past `messages_per_socket`: one line a minute, the rest counted.
_OVER_MESSAGES = RepeatsCounted(logger, 60.0)
_OVER_MESSAGES_LINE = (
    "socketio: a message was refused and its socket asked to send it again: the socket had "
    "messages_per_socket of its messages being handled already"
)


def session_room(session_id: str) -> str:
    """The socket.io room of the sockets in session `session_id`."""
    return _SESSION_ROOM + session_id


class SocketSessions:
    """The sessions each connected socket is in, at most `limit` per socket: a gateway
    relaying many users over one long-lived socket would otherwise hold a room for every
    user it ever relayed. Past the limit, the session the socket used least recently is left,
    unless a turn of it is being answered: its reply must reach the socket.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._of: dict[str, OrderedDict[str, None]] = {}  # socket id: its sessions, oldest first
        self._answering: dict[tuple[str, str], int] = {}  # (socket, session): turns running
        self._told: set[str] = set()  # sockets that have left a session: logged once each

    def __len__(self) -> int:
        """How many (socket, session) pairs are held."""
        return sum(len(sessions) for sessions in self._of.values())

    def use(self, sid: str, session_id: str, turn: bool = False) -> tuple[bool, list[str]]:
        """Socket `sid` uses `session_id` now (for a `turn`, kept until `answered`): whether
        it is new to the socket, and the sessions the socket leaves to stay within the limit."""
        if turn:
            key = (sid, session_id)
            self._answering[key] = self._answering.get(key, 0) + 1
        sessions = self._of.setdefault(sid, OrderedDict())
        new = session_id not in sessions
        sessions[session_id] = None
        sessions.move_to_end(session_id)
        return new, self._trim(sid, sessions)

    def answered(self, sid: str, session_id: str) -> list[str]:
        """A turn of `session_id` from socket `sid` is over: the sessions the socket leaves."""
        key = (sid, session_id)
        self._answering[key] -= 1
        if not self._answering[key]:
            del self._answering[key]
        sessions = self._of.get(sid)
        return self._trim(sid, sessions) if sessions is not None else []

    def _trim(self, sid: str, sessions: OrderedDict[str, None]) -> list[str]:
        """Leaves the sessions older than the socket's `limit` latest, but those answering."""
        older = list(islice(sessions, max(len(sessions) - self.limit, 0)))
        left = [session for session in older if (sid, session) not in self._answering]
        for session in left:
            del sessions[session]
        if left and sid not in self._told:
            self._told.add(sid)
            logger.warning(
                "socketio: socket %s is in %s (sessions_per_socket): it leaves the one it "
                "used least recently, whose pushes no longer reach it (once per socket)",
                sid,
                how_many(self.limit, "session"),
            )
        return left

    def forget(self, sid: str) -> None:
        """Socket `sid` is gone (python-socketio takes it out of its rooms itself)."""
        self._of.pop(sid, None)
        self._told.discard(sid)


def socketio_payloads(message: dict[str, Any]) -> list[dict[str, Any]]:
    """One bot message as the payloads Rasa's socket.io channel emits, in order."""
    payloads: list[dict[str, Any]] = []
    for part in split_message(message):
        choices = reply_choices(part)
        if choices is not None:
            # As Rasa: the text's paragraphs one by one, the choices with the last of them.
            # Choices without a text (rasa-sdk's `text: null`) come with an empty one:
            # rasa-webchat would show "null" (Rasa fails the turn).
            text = part.get("text")
            if text is None:
                text = ""
            pieces = text.strip().split("\n\n") if isinstance(text, str) else [text]
            payloads.extend({"text": piece, "quick_replies": []} for piece in pieces[:-1])
            payloads.append(
                {
                    "text": pieces[-1],
                    "quick_replies": [_quick_reply(choice) for choice in choices],
                }
            )
        elif "text" in part:
            payloads.append({"text": part["text"]})
        elif "image" in part:
            payloads.append({"attachment": {"type": "image", "payload": {"src": part["image"]}}})
        elif "attachment" in part:
            payloads.append({"attachment": part["attachment"]})
        elif "elements" in part:
            payloads.append(
                {
                    "attachment": {
                        "type": "template",
                        "payload": {"template_type": "generic", "elements": part["elements"]},
                    }
                }
            )
        elif "custom" in part:
            payloads.append({"custom": part["custom"]})
    return payloads


def _quick_reply(choice: dict[str, Any]) -> dict[str, Any]:
    """A button as Rasa's quick reply, keeping the button's other keys: rasa-webchat shows
    one of `type: web_url` as a link to its `url` (Rasa drops them). A button with a `url`
    and no `payload` or `type`, a link on Rocket.Chat, is given that type."""
    reply = {"content_type": "text", "title": choice.get("title"), "payload": choice.get("payload")}
    reply.update((key, value) for key, value in choice.items() if key not in reply)
    if reply["payload"] is None and reply.get("url") and "type" not in reply:
        reply["type"] = "web_url"  # else the widget's button sends nothing
    return reply


class SocketIOOutput:
    """Emits bot messages to the socket.io room of the conversation: its session's room
    (`session_rooms`, with session_persistence), else its socket's own (with `--workers N`,
    on whichever worker holds its sockets)."""

    name = "socketio"

    def __init__(
        self,
        sio: socketio.AsyncServer,
        bot_message_evt: str,
        namespace: str | None = None,
        workers: Workers | None = None,
        session_rooms: bool = False,
    ) -> None:
        self.sio = sio
        self.bot_message_evt = bot_message_evt
        self.namespace = namespace
        self.workers = workers
        self.session_rooms = session_rooms

    def room_of(self, conversation_id: str) -> str:
        """The room of a conversation's sockets."""
        return session_room(conversation_id) if self.session_rooms else conversation_id

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        try:
            await self._emit(recipient_id, message)
        except Exception as e:  # a failed reply must not fail the turn: it would not be stored
            logger.error(
                "socketio: a bot message to %s was lost: %s: %s", recipient_id, type(e).__name__, e
            )

    async def _emit(self, recipient_id: str, message: dict[str, Any]) -> None:
        for payload in socketio_payloads(message):
            custom = payload.get("custom")
            if isinstance(custom, dict) and "data" in custom:
                # Rasa passes a custom message's keys to emit(): `data` and an optional
                # `room`, which names a conversation as the recipient does.
                await self._send(custom["data"], str(custom.get("room") or recipient_id))
            elif custom is not None:
                await self._send(custom, recipient_id)
            else:
                await self._send(payload, recipient_id)

    async def _send(self, data: Any, conversation_id: str) -> None:
        room = self.room_of(conversation_id)
        if self.workers is None:
            await self.sio.emit(self.bot_message_evt, data, room=room, namespace=self.namespace)
        else:
            await self.workers.emit(self.sio, self.bot_message_evt, data, room, self.namespace)


class SocketIOInput(InputChannel):
    """Rasa's `socketio` channel."""

    name = "socketio"
    settings_keys = frozenset(
        (
            "user_message_evt",
            "bot_message_evt",
            "namespace",
            "session_persistence",
            "socketio_path",
            "jwt_key",
            "jwt_method",
            "metadata_key",
            "cors_allowed_origins",
            "rooms_redis",
            "sessions_per_socket",
            "messages_per_socket",
            "max_sessions",
        )
    )

    def __init__(
        self,
        user_message_evt: str = "user_uttered",
        bot_message_evt: str = "bot_uttered",
        namespace: str | None = None,
        session_persistence: bool = False,
        socketio_path: str = "/socket.io",
        jwt_key: str | None = None,
        jwt_method: str = "HS256",
        metadata_key: str = "metadata",
        cors_allowed_origins: str | list[str] | None = None,
        rooms_redis: dict[str, Any] | bool | None = None,
        sessions_per_socket: int = SESSIONS_PER_SOCKET,
        messages_per_socket: int = MESSAGES_PER_SOCKET,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.user_message_evt = user_message_evt
        self.bot_message_evt = bot_message_evt
        self.namespace = namespace
        self.session_persistence = session_persistence
        self.socketio_path = "/" + (socketio_path or "/socket.io").strip("/")
        self.jwt_key = jwt_key
        self.jwt_method = jwt_method
        self.refusals = RefusalLog()
        # Checked now, so a key that cannot verify stops startup instead of every connection.
        self._verification_key = (
            prepared_key(key_text(jwt_key, "'jwt_key'"), jwt_method, "'jwt_key'")
            if jwt_key
            else None
        )
        self.metadata_key = metadata_key
        self.socket_sessions = SocketSessions(sessions_per_socket)
        # python-socketio runs each event in a task of its own as it arrives, with no bound:
        # one 1 MB long-polling POST (or a WebSocket sending without pause) held thousands of
        # turns at once, each waiting for its conversation.
        self.messages_per_socket = messages_per_socket
        self.handling: dict[str, int] = {}  # socket id: its messages being handled
        # Rasa turns the origin check off ([]); a list or "*" here turns it on.
        options: dict[str, Any] = {
            "async_mode": "asgi",
            "cors_allowed_origins": cors_allowed_origins if cors_allowed_origins else [],
            "engineio_logger": _PeerErrorLog(logging.getLogger("engineio.server"), {}),
            # A bound on the engine.io sessions this process holds (20 to 93 KiB each idle).
            "max_sessions": max_sessions,
        }
        # In a worker of `--workers N`, session ids name the worker that holds the session.
        route = worker_route()
        self.sio = routed_server(route[0], **options) if route is not None else Server(**options)
        # The other workers: their sessions' requests and this worker's pushes go to them.
        self.workers = (
            Workers(route[0], route[1], self.sio.eio.ping_interval + self.sio.eio.ping_timeout)
            if route is not None
            else None
        )
        # Rooms shared through Redis (`rooms_redis`, else endpoints.yml's Redis): then every
        # emit reaches the room's sockets on every worker and host, and needs no relay.
        self.rooms_redis = rooms_redis
        self.rooms: RedisRooms | None = None
        if isinstance(rooms_redis, dict):
            self._share_rooms(RedisRooms(rooms_redis, default_db=0), "rooms_redis")

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> SocketIOInput:
        c = credentials or {}
        jwt_method = settings.text(c, "jwt_method", "HS256") or "HS256"
        if jwt_method not in supported_jwt_methods():
            raise InvalidConfig(
                f"'jwt_method' must be one of {', '.join(sorted(supported_jwt_methods()))}, "
                f"not '{jwt_method}'"
            )
        path = settings.text(c, "socketio_path", "/socket.io") or ""
        if not path.strip("/"):
            raise InvalidConfig(f"'socketio_path' must be a path such as /socket.io, not '{path}'")
        namespace = settings.text(c, "namespace")
        if namespace is not None and not namespace.startswith("/"):
            namespace = "/" + namespace  # socket.io clients always send the leading slash
        return cls(
            user_message_evt=settings.text(c, "user_message_evt", "user_uttered") or "",
            bot_message_evt=settings.text(c, "bot_message_evt", "bot_uttered") or "",
            namespace=namespace,
            session_persistence=settings.flag(c, "session_persistence"),
            socketio_path=path,
            jwt_key=settings.text(c, "jwt_key"),
            jwt_method=jwt_method,
            metadata_key=settings.text(c, "metadata_key", "metadata") or "",
            cors_allowed_origins=_origins(c.get("cors_allowed_origins")),
            rooms_redis=rooms_redis_setting(c.get("rooms_redis")),
            sessions_per_socket=settings.count(c, "sessions_per_socket", SESSIONS_PER_SOCKET),
            messages_per_socket=settings.count(c, "messages_per_socket", MESSAGES_PER_SOCKET),
            max_sessions=settings.count(c, "max_sessions", MAX_SESSIONS),
        )

    def use_endpoints(self, endpoints: dict[str, Any]) -> None:
        # Without `rooms_redis`, the Redis the deployment already has carries the rooms.
        if self.rooms_redis is None and self.rooms is None:
            found = endpoints_redis(endpoints)
            if found is not None:
                config, default_db = found
                self._share_rooms(RedisRooms(config, default_db), "endpoints.yml's Redis")

    def _share_rooms(self, rooms: RedisRooms, source: str) -> None:
        """Put `rooms` in place of the server's own (before any socket connects)."""
        self.rooms = rooms
        self.sio.manager = rooms
        rooms.set_server(self.sio)
        logger.info(
            "socketio: rooms are shared by every worker and host through %s (channel %s)",
            source,
            rooms.channel,
        )

    def router(self, on_new_message: OnNewMessage) -> APIRouter:
        if self.socketio_path == self.url_prefix():
            # socket.io at the webhook's own path: its app gives the health answer, as the
            # route would take the long-polling requests, which go to the same path.
            return APIRouter()
        return health_router(self.url_prefix())

    def get_output_channel(self) -> SocketIOOutput:
        # With shared rooms, python-socketio's manager sends each message to every server.
        workers = self.workers if self.rooms is None else None
        return SocketIOOutput(
            self.sio, self.bot_message_evt, self.namespace, workers, self.session_persistence
        )

    def asgi_mount(self, on_new_message: OnNewMessage) -> tuple[str, ASGIApp]:
        self._register_handlers(on_new_message)
        # socketio_path=None: the mount point, not engine.io, decides which paths are ours.
        app = _asgi_compliant(socketio.ASGIApp(self.sio, socketio_path=None))
        if self.workers is not None:
            app = SessionRouter(app, self.workers)
            serve_privately(PUSH_PATH, push_receiver(self.sio))
        if self.socketio_path == self.url_prefix():
            app = _answering_health(app, self.socketio_path)
        at_stop(self.end_sessions)
        return self.socketio_path, app

    async def aclose(self) -> None:
        """Close the clients of the other workers' sockets and of Redis, when the server stops."""
        if self.workers is not None:
            await self.workers.aclose()
        if self.rooms is not None:
            await self.rooms.aclose()

    async def end_sessions(self) -> None:
        """Close every session, when the server stops: a long-poll in flight gets its answer
        (engine.io's close) at once, rather than holding the stop up to the 25 s ping
        interval; the client reconnects, to the restarted server or another one."""
        eio = self.sio.eio
        for session in list(eio.sockets.values()):
            await session.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)

    def _refusal(self, auth: Any) -> str | None:
        """Why a connection with `auth` is refused; None when it may connect."""
        if self._verification_key is None:
            return None
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str):
            return "no token (a client connects with an auth object whose token is 'Bearer <jwt>')"
        try:
            claims = jwt.decode(
                token.removeprefix("Bearer "), self._verification_key, algorithms=[self.jwt_method]
            )
        except jwt.PyJWTError as exc:
            return f"JWT rejected: {type(exc).__name__}"
        if not claims:  # as Rasa, which lets a socket in only when the claims are not empty
            return "JWT rejected: no claims"
        return None

    def _register_handlers(self, on_new_message: OnNewMessage) -> None:
        sio, ns = self.sio, self.namespace

        async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
            why = self._refusal(auth)
            if why is None:
                return True
            self.refusals.record("socket.io connection", _client_of(environ), why)
            return False

        async def disconnect(sid: str, *args: Any) -> None:
            self.socket_sessions.forget(sid)

        async def join(sid: str, session_id: str, turn: bool = False) -> bool:
            """Puts the socket in the session's room (at once if it is there already), and
            out of its least recently used session past `sessions_per_socket` (for a `turn`,
            the session stays until `answered`); False when it has left meanwhile (its event
            and its disconnect came in one long-polling request: the handler runs after
            both)."""
            if not sio.manager.is_connected(sid, ns or "/"):
                return False
            joined, left = self.socket_sessions.use(sid, session_id, turn)
            if joined:
                await sio.enter_room(sid, session_room(session_id), namespace=ns)
            await leave(sid, left)
            return True

        async def leave(sid: str, sessions: list[str]) -> None:
            for session_id in sessions:
                await sio.leave_room(sid, session_room(session_id), namespace=ns)

        # `*_`: arguments after the first, which some clients send, are ignored rather than
        # failing the handler (and losing the message).
        async def session_request(sid: str, data: Any = None, *_: Any) -> None:
            data = _event_data(data)
            session_id = _session_id(data.get("session_id")) if data is not None else None
            if session_id is not None and not _can_be_stored(session_id):
                # Confirming it would leave the client with a session none of whose messages
                # can be recorded; clients adopt the id they are confirmed.
                logger.warning("socketio: a session_id no store can hold was replaced")
                session_id = None
            if session_id is None:
                session_id = uuid.uuid4().hex
            if self.session_persistence and not await join(sid, session_id):
                return  # the socket has left: nobody to confirm it to
            await sio.emit("session_confirm", session_id, room=sid, namespace=ns)

        async def answer(sender: str, data: dict[str, Any]) -> None:
            """Runs the turn of message `data` of conversation `sender`."""
            text = data.get("message")
            if text is None:
                # rasa-webchat sends its init payload when a session starts, without a
                # `message` when none is configured: routine, not worth a warning.
                logger.debug("socketio: a message without 'message' was ignored")
                return
            if not isinstance(text, str):
                logger.warning("socketio: a message whose 'message' is not a string was dropped")
                return
            metadata = self._metadata(data)
            if not json_can_hold([text, metadata]):
                # python-socketio reads packets with the stdlib's json, which takes NaN,
                # 1e400 and unpaired surrogate escapes: stored, they would fail every later
                # read of the conversation. The REST channel answers 400 to such a body.
                logger.warning(
                    "socketio: a message holding a value JSON cannot carry (NaN, infinity, "
                    "an unpaired surrogate) was dropped"
                )
                return
            output = self.get_output_channel()
            message = UserMessage(
                text=text.strip(),
                sender_id=sender,
                input_channel=self.name,
                metadata=metadata,
                output_channel=output,
            )
            if await refused_as_too_long(message):
                return
            try:
                await on_new_message(message)
            except (StoreError, LockTimeout) as e:
                # Not recorded (the REST channel answers 503): the client has no status to
                # read, so the user is asked to send it again rather than left waiting.
                if isinstance(e, LockTimeout):  # a busy conversation: counted as in REST
                    BUSY_CONVERSATIONS.log(
                        str(e),
                        "socketio: message from %s was not recorded: %s: %s Asked to send it "
                        "again; more of these within %g s are counted in one line.",
                        sender,
                        type(e).__name__,
                        e,
                        BUSY_CONVERSATIONS.window,
                    )
                elif not counted_in_outage(
                    logger, "socketio", sender, e, 'with the bot\'s "send it again"'
                ):
                    logger.error(
                        "socketio: message from %s was not recorded: %s: %s",
                        sender,
                        type(e).__name__,
                        e,
                    )
                await output.send_response(sender, {"text": SEND_AGAIN})
            except NoModelLoaded:
                # Not a failure of the turn (the REST channel answers 409): none could start.
                logger.warning(
                    "socketio: message from %s not handled: no model is loaded; asked to "
                    "send it again",
                    sender,
                )
                await output.send_response(sender, {"text": SEND_AGAIN})
            except Exception as e:
                log_failed_turn(logger, "socketio", sender, e)

        async def user_message(sid: str, data: Any = None, *_: Any) -> None:
            handling = self.handling.get(sid, 0)
            if handling >= self.messages_per_socket:
                _OVER_MESSAGES.log(
                    _OVER_MESSAGES_LINE,
                    "%s (socket %s, %s being handled)",
                    _OVER_MESSAGES_LINE,
                    sid,
                    how_many(handling, "message"),
                )
                await sio.emit(self.bot_message_evt, {"text": SEND_AGAIN}, room=sid, namespace=ns)
                return
            self.handling[sid] = handling + 1
            try:
                await handle_message(sid, data)
            finally:
                if self.handling[sid] > 1:
                    self.handling[sid] -= 1
                else:
                    del self.handling[sid]

        async def handle_message(sid: str, data: Any) -> None:
            data = _event_data(data)
            if data is None:
                logger.warning(
                    "socketio: a %s whose data is not an object (or a JSON text of one) "
                    "was dropped",
                    self.user_message_evt,
                )
                return
            if self.session_persistence:
                sender = _session_id(data.get("session_id"))
                if sender is None:
                    logger.warning(
                        "socketio: a message without a session_id was dropped; the client "
                        "must send session_request first when session_persistence is on"
                    )
                    return
                if not _can_be_stored(sender):
                    # Refused before the turn, which would fail on it: the socket is told
                    # itself, as it can join no session of that id.
                    logger.warning(
                        "socketio: a message for a session_id no store can hold was refused"
                    )
                    await sio.emit(
                        self.bot_message_evt, {"text": INVALID_SESSION}, room=sid, namespace=ns
                    )
                    return
                # A client that sends its session id without a session_request on this
                # socket (a backend client, a widget after a server restart) gets the replies
                # too; knowing the id lets it request the session anyway. A socket that
                # could not join (it left) has its turn run all the same.
                joined = await join(sid, sender, turn=True)
            else:
                sender, joined = sid, False
            try:
                await answer(sender, data)
            finally:
                if joined:  # the session was kept for the turn's reply; now it may go
                    await leave(sid, self.socket_sessions.answered(sid, sender))

        sio.on("connect", connect, namespace=ns)
        sio.on("disconnect", disconnect, namespace=ns)
        sio.on("session_request", session_request, namespace=ns)
        sio.on(self.user_message_evt, user_message, namespace=ns)

    def _metadata(self, data: dict[str, Any]) -> dict[str, Any] | None:
        metadata = data.get(self.metadata_key)
        if isinstance(metadata, str):
            try:
                metadata = loads_untrusted(metadata.encode("utf-8", "surrogatepass"))
            except ValueError:  # TooDeep included
                return None
        if not isinstance(metadata, dict) or nests_deeper_than(metadata):
            return None
        if _holds_bytes(metadata):
            # A binary attachment: events are JSON, and the turn could not be stored.
            logger.warning("socketio: metadata with binary data was dropped")
            return None
        return metadata


class _PeerErrorLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """engine.io's logger. What it logs with a traceback is a packet a client got wrong
    (JSON that does not parse, an unknown packet type): one warning line each, so that no
    client can fill the log with tracebacks."""

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        if msg == "service task exception":  # engine.io's own housekeeping failed
            super().exception(msg, *args, **kwargs)
            return
        error = sys.exc_info()[1]
        name = type(error).__name__
        self.warning("socketio: a malformed packet was ignored (%s: %s)", name, error)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        # engine.io logs an ERROR only the first time a client gets a request wrong (an old
        # protocol version, an unknown session or transport), then INFO: a client's mistake,
        # answered 400, which a port scanner would otherwise raise in a log watched for errors.
        self.warning(msg, *args, **kwargs)


# The first character of an Engine.IO text packet: its type (open ... noop), or `b` (base64).
_EIO_PACKET_TYPES = frozenset("0123456b")
# How long a WebSocket frame may wait for the client to take it (engine.io's ping interval and
# timeout, 25 + 20 s): past it, the client reads nothing and the connection is given up.
WEBSOCKET_SEND_WAIT = 45.0


def _asgi_compliant(app: ASGIApp) -> ASGIApp:
    """engine.io's ASGI app with three fixes.

    Response header names are lowercased, as ASGI requires: engine.io writes
    `Access-Control-Allow-Origin`, which the server's CORS middleware (`--cors`) does not
    recognise as its own and adds a second one; browsers refuse an answer with two, so
    polling failed with both `--cors` and `cors_allowed_origins` set.
    WebSocket text frames that are no Engine.IO packet (empty, an unknown type) are dropped:
    engine.io's reader fails on them outside its error handling, which closes the socket
    with a traceback in the log.
    A WebSocket whose client takes no frame for `WEBSOCKET_SEND_WAIT` is given up: engine.io's
    writer would wait for ever (the server's keepalive closing the connection does not end a
    send waiting for the client), holding the session and every packet queued for it for as
    long as the client kept writing, even after the session was closed.
    """

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":

            async def send_lowercased(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = message.get("headers") or []
                    message["headers"] = [(name.lower(), value) for name, value in headers]
                await send(message)

            await app(scope, receive, send_lowercased)
            return
        if scope["type"] != "websocket":
            await app(scope, receive, send)
            return
        given_up = False

        async def send_or_give_up(message: Message) -> None:
            nonlocal given_up
            if given_up:
                raise OSError("the client takes nothing")
            try:
                async with asyncio.timeout(WEBSOCKET_SEND_WAIT):
                    await send(message)
            except TimeoutError:
                given_up = True
                logger.warning(
                    "socketio: a WebSocket was closed: its client took nothing sent to it for %g s",
                    WEBSOCKET_SEND_WAIT,
                )
                raise OSError("the client takes nothing") from None

        async def receive_packet() -> Message:
            while True:
                message = await receive()
                if given_up:  # engine.io's reader then ends, and its session with it
                    return {"type": "websocket.disconnect", "code": 1006}
                text = message.get("text")
                if message["type"] != "websocket.receive" or text is None:
                    return message
                if text[:1] in _EIO_PACKET_TYPES:
                    return message
                logger.warning("socketio: a frame that is not an Engine.IO packet was ignored")

        await app(scope, receive_packet, send_or_give_up)

    return guarded


def _answering_health(app: ASGIApp, path: str) -> ASGIApp:
    """`app` answering Rasa's health check (`GET <path>/`) too: a GET without engine.io's
    `EIO` parameter is none of its requests."""
    health = JSONResponse({"status": "ok"})

    async def with_health(scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"].rstrip("/") == path
            and b"EIO=" not in scope.get("query_string", b"")
        ):
            await health(scope, receive, send)
            return
        await app(scope, receive, send)

    return with_health


def _client_of(environ: dict[str, Any]) -> str:
    # engine.io's ASGI environ says REMOTE_ADDR 127.0.0.1 whoever connects; the scope knows.
    client = (environ.get("asgi.scope") or {}).get("client")
    return str(client[0]) if client else "an unknown client"


def _event_data(data: Any) -> dict[str, Any] | None:
    """An event's data as an object: as sent, or read from the JSON text of one (some
    widgets emit `JSON.stringify(...)`); None when it is neither. No data is an empty object."""
    if data is None:
        return {}
    if isinstance(data, str):
        try:
            data = loads_untrusted(data.encode("utf-8", "surrogatepass"))
        except ValueError:  # TooDeep included
            return None
    return data if isinstance(data, dict) else None


def _session_id(value: Any) -> str | None:
    """A client's session id as a conversation id: a string, or a number as its digits.

    A number must become the same string everywhere: the socket joins the room of the
    confirmed id and the replies go to the room of the conversation id.
    """
    if isinstance(value, str):
        return value or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _can_be_stored(conversation_id: str) -> bool:
    try:
        check_conversation_id(conversation_id)
    except InvalidConversationId:
        return False
    return True


def _holds_bytes(value: Any) -> bool:
    """Whether socket.io decoded binary data somewhere in `value` (without recursion: the
    JSON may be nested as deep as the decoder allows)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, (bytes, bytearray)):
            return True
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _origins(value: Any) -> str | list[str] | None:
    """`cors_allowed_origins`: "*", one origin, or a list of origins."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return _as_browsers_send(value)
    if isinstance(value, list) and all(isinstance(origin, str) for origin in value):
        return [_as_browsers_send(origin) for origin in value]
    raise InvalidConfig(
        "'cors_allowed_origins' must be \"*\", an origin or a list of origins, "
        f"not {settings.kind(value)}"
    )


_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def _as_browsers_send(origin: str) -> str:
    """`origin` as a browser's `Origin` header spells it: scheme and host in lower case,
    without a trailing slash or the scheme's default port. python-socketio compares the two
    as written, so `https://Example.com/` refused every browser of https://example.com."""
    scheme, separator, rest = origin.partition("://")
    if not separator:
        return origin  # "*", "null"
    host, slash, path = rest.partition("/")
    scheme, host = scheme.lower(), host.lower()
    default_port = _DEFAULT_PORTS.get(scheme)
    if default_port is not None:
        host = host.removesuffix(default_port)
    return f"{scheme}://{host}" + ("" if path == "" else slash + path)
