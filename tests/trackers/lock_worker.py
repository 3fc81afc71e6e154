"""Another server process, as far as one conversation's lock and tracker go: each stdin line
`<n>` is a message that takes the conversation's Redis lock and, holding it, appends its user
event to the Redis tracker store.

    python -m tests.trackers.lock_worker <lock_store config JSON> <tracker_store config JSON>

Prints `waiting <n>` once the message waits in line (the lock store called `on_wait`),
`held <n>` when it took the lock at once, `stored <n>` after its turn; `exit` ends it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from server.trackers.factory import create_lock_store, create_tracker_store
from server.trackers.lock import LockStore
from server.trackers.store import TrackerStore

CONVERSATION = "fifo"


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def turn(locks: LockStore, trackers: TrackerStore, number: int) -> None:
    """One message's turn: the lock, then its user event in the tracker."""
    waiting = False

    def on_wait() -> None:
        nonlocal waiting
        if not waiting:
            waiting = True
            say(f"waiting {number}")

    async with locks.lock(CONVERSATION, wait_timeout=60, on_wait=on_wait):
        if not waiting:
            say(f"held {number}")
        await trackers.append(CONVERSATION, [user_event(number)])
    say(f"stored {number}")


def user_event(number: int) -> dict[str, Any]:
    return {"event": "user", "timestamp": float(number), "text": f"message {number}"}


async def main(lock_config: dict[str, Any], tracker_config: dict[str, Any]) -> None:
    locks = create_lock_store(lock_config)
    trackers = create_tracker_store(tracker_config)
    loop = asyncio.get_running_loop()
    turns: list[asyncio.Task[None]] = []
    try:
        while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            if line == "exit":
                break
            turns.append(asyncio.ensure_future(turn(locks, trackers, int(line))))
        await asyncio.gather(*turns)
    finally:
        await locks.close()
        await trackers.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]), json.loads(sys.argv[2])))
