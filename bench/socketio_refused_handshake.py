"""CPU (process time) of a socket.io handshake refused at `max_sessions`: the process holds
that many sessions (stand-ins, none closed) and a client keeps opening new ones. Runs
against whichever tree PYTHONPATH names, so that two trees compare in one run:

    for tree in /tmp/base /work/wt-x; do
        PYTHONPATH=$tree python bench/socketio_refused_handshake.py
    done
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

import httpx

import server
from server.api.app import create_app
from server.channels import attach_channels, load_channels
from server.channels.socket_io import SocketIOInput
from server.dialogue.messages import UserMessage

HANDSHAKE = "/socket.io/?EIO=4&transport=polling"


class OpenSession:
    closed = False


async def _ignore(message: UserMessage) -> None:
    return None


async def measure(sessions: int, refusals: int) -> float:
    """CPU seconds a refused handshake takes, on average."""
    (channel,) = load_channels({"socketio": {"max_sessions": sessions}})
    assert isinstance(channel, SocketIOInput)
    app = create_app()
    attach_channels(app, [channel], _ignore)
    engine = channel.sio.eio
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
        await http.get(HANDSHAKE)  # first-use caches out of the figure
        engine.sockets.update({f"held{i}": OpenSession() for i in range(sessions)})
        assert (await http.get(HANDSHAKE)).status_code == 503
        started = time.process_time()
        for _ in range(refusals):
            await http.get(HANDSHAKE)
        spent = time.process_time() - started
        engine.sockets.clear()
    return spent / refusals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--refusals", type=int, default=500)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    spent = asyncio.run(measure(args.sessions, args.refusals))
    print(f"{server.__file__}: {spent * 1e3:.3f} ms CPU a refused handshake at {args.sessions}")


if __name__ == "__main__":
    main()
