"""Memory (tracemalloc) a socket.io channel holds per idle engine.io session: N long-polling
sessions, each joined to the namespace, opened through the ASGI app and left open. Runs
against whichever tree PYTHONPATH names, so that two trees compare in one run:

    for tree in /tmp/base /work/wt-x; do
        PYTHONPATH=$tree python bench/socketio_session_memory.py
    done
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tracemalloc

import httpx

import server
from server.api.app import create_app
from server.channels import attach_channels, load_channels
from server.dialogue.messages import UserMessage


async def _ignore(message: UserMessage) -> None:
    return None


async def measure(sessions: int) -> tuple[int, int]:
    """Bytes allocated while `sessions` sessions are open, and the peak's growth."""
    app = create_app()
    attach_channels(app, load_channels({"socketio": {}}), _ignore)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:

        async def open_one() -> None:
            opened = await http.get("/socket.io/?EIO=4&transport=polling")
            sid = json.loads(opened.text[1:])["sid"]
            polling = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
            await http.post(polling, content="40")
            await http.get(polling)

        await open_one()  # first-use caches out of the figure
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(sessions):
            await open_one()
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return held - before, peak - before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=500)
    args = parser.parse_args()
    held, _ = asyncio.run(measure(args.sessions))
    print(
        f"{server.__file__}: {args.sessions} sessions held {held / 1e6:.2f} MB, "
        f"{held / args.sessions / 1e3:.1f} KB a session"
    )


if __name__ == "__main__":
    main()
