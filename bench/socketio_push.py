"""What a socket.io bot message costs a worker of `--workers N`, in one process for callgrind:

    PYTHONHASHSEED=0 valgrind --tool=callgrind <python> bench/socketio_push.py MODE COUNT

MODE `pushed`: the room has no socket here, and the message goes to the other worker (a
uvicorn server on a Unix socket in this process, serving what a worker's private socket
serves); `held`: the room has a socket here (a reply to the visitor's own message), through
`Workers.emit`; `plain`: the same emit straight to python-socketio, as with one worker;
`redis`: the same emit with the rooms shared through Redis at 127.0.0.1:6379 (emitted here,
then published; the other workers' reading of it is not counted); `redis-sid`: the same to
the socket's own id (not published: no other server holds it). The cost of one message is
the difference of two runs' instructions (COUNT and 0) over COUNT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path

import socketio
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from server.api.worker_files import private_app, serve_privately
from server.channels.socketio_rooms import RedisRooms
from server.channels.socketio_routing import PUSH_PATH, Workers, push_receiver

REPLY = {"text": "Hey! How are you?", "quick_replies": []}


async def unreachable(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("only pushes are sent")


async def main(mode: str, count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="socketio-push-") as sockets:
        await measure(mode, count, Path(sockets))


async def measure(mode: str, count: int, sockets: Path) -> None:
    quiet = logging.getLogger("quiet")
    quiet.setLevel(logging.CRITICAL)
    other = socketio.AsyncServer(async_mode="asgi", logger=quiet, engineio_logger=quiet)
    serve_privately(PUSH_PATH, push_receiver(other))
    # As `GracefulServer` serves a worker's private socket: uvicorn's protocol on it.
    config = uvicorn.Config(private_app(unreachable), log_level="error", lifespan="off")
    config.load()
    state = ServerState()
    server = await asyncio.get_running_loop().create_unix_server(
        lambda: config.http_protocol_class(config=config, server_state=state, app_state={}),  # type: ignore[call-arg]
        path=str(sockets / "bbbb1111.sock"),
    )
    rooms = (
        RedisRooms({"url": "redis://127.0.0.1:6379/0", "key_prefix": "bench_socketio_push"}, 0)
        if mode.startswith("redis")
        else None
    )
    here = socketio.AsyncServer(
        async_mode="asgi", logger=quiet, engineio_logger=quiet, client_manager=rooms
    )
    sid = await here.manager.connect("aaaa0000.engineio", "/")
    room = "a-session"
    if mode != "pushed":
        await here.enter_room(sid, room)
    if mode == "redis-sid":
        room = sid
    workers = Workers("aaaa0000", sockets, 45)
    for _ in range(count + 1):  # the first one opens the connection
        if mode in ("plain", "redis", "redis-sid"):
            await here.emit("bot_uttered", REPLY, room=room)
        else:
            await workers.emit(here, "bot_uttered", REPLY, room, None)
    await workers.aclose()
    if rooms is not None:
        await rooms.aclose()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["pushed", "held", "plain", "redis", "redis-sid"])
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    asyncio.run(main(args.mode, args.count))
