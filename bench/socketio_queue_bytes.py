"""CPU of a socket.io session's output queue counting what waits for its client
(`CountedQueue`: each packet counted as it is put and taken), per bot message: a short reply,
one of 60 KB (an image's data), and one in non-ASCII text (escaped by python-socketio's JSON,
so ASCII too).

    python bench/socketio_queue_bytes.py [--rounds 200000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import engineio
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.channels.socketio_engine import CountedQueue, EventPacket  # noqa: E402

MESSAGES = {
    "short reply": "Hey! How are you?",
    "60 KB reply": "x" * 60_000,
    "non-ASCII reply": "你好，世界！今天过得怎么样？",
}


def per_message(text: str, rounds: int) -> float:
    """CPU seconds of one put and one take, the best of 3 runs of `rounds`."""
    data = EventPacket(socketio.packet.EVENT, data=["bot_uttered", {"text": text}]).encode()
    packet = engineio.packet.Packet(engineio.packet.MESSAGE, data=data)
    queue = CountedQueue()
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(rounds):
            queue.put_nowait(packet)
            queue.get_nowait()
        best = min(best, (time.process_time() - started) / rounds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200_000)
    args = parser.parse_args()
    for name, text in MESSAGES.items():
        print(f"{name:>16}: {per_message(text, args.rounds) * 1e9:7.0f} ns CPU a message")


if __name__ == "__main__":
    main()
