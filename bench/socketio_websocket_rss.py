"""Resident memory a socket.io server process gains per WebSocket session: the channel
served by uvicorn in a child process, N clients each connected over a WebSocket and joined
to the namespace, left idle; the child's RSS before and after. Runs against whichever tree
PYTHONPATH names:

    PYTHONPATH=/work/wt-x python bench/socketio_websocket_rss.py --sessions 1000
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import websockets

SERVE = """
import sys, uvicorn
from server.api.app import create_app
from server.channels import attach_channels, load_channels
async def ignore(message): return None
app = create_app()
attach_channels(app, load_channels({"socketio": {}}), ignore)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def join(port: int, held: list[Any]) -> None:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket")
    await ws.recv()  # engine.io's OPEN
    await ws.send("40")
    await ws.recv()  # socket.io's CONNECT
    held.append(ws)


async def measure(port: int, pid: int, sessions: int) -> tuple[int, int]:
    held: list[Any] = []
    for _ in range(100):
        try:
            await join(port, held)  # first-use caches out of the figure
            break
        except OSError:
            await asyncio.sleep(0.2)
    await asyncio.sleep(1)
    before = rss_kb(pid)
    for _ in range(0, sessions, 50):
        await asyncio.gather(*(join(port, held) for _ in range(50)))
    await asyncio.sleep(2)
    after = rss_kb(pid)
    for ws in held:
        await ws.close()
    return before, after


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--port", type=int, default=18765)
    args = parser.parse_args()
    child = subprocess.Popen([sys.executable, "-c", SERVE, str(args.port)])
    try:
        before, after = asyncio.run(measure(args.port, child.pid, args.sessions))
    finally:
        child.terminate()
        child.wait()
    print(
        f"RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB with {args.sessions} "
        f"WebSocket sessions: {(after - before) / args.sessions:.0f} KiB a session"
    )


if __name__ == "__main__":
    main()
