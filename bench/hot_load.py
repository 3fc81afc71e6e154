"""CPU of a hot tracker's load: `TrackerRepository.load` of a conversation it served last,
on the SQL store (SQLite), nobody else writing (no read) or another store appending one
event between loads (a read of the new row).

Each tree runs in a process of its own, in alternating rounds, so that a change is measured
against its baseline under the same machine load:

    python bench/hot_load.py [--trees /work/main,.] [--events 1000] [--loads 20000]
        [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def event(n: int) -> dict[str, Any]:
    return {"event": "bot", "timestamp": float(n), "text": f"reply {n}", "data": {}}


async def measure(events: int, loads: int) -> dict[str, float]:
    from server.trackers.factory import create_tracker_store
    from server.trackers.repository import TrackerRepository

    with tempfile.TemporaryDirectory() as tmp:
        config = {"type": "sql", "dialect": "sqlite", "db": f"{tmp}/hot.db"}
        store, other = create_tracker_store(config), create_tracker_store(config)
        try:
            await store.append("alice", [event(n) for n in range(events)])
            repository = TrackerRepository(store)
            tracker = await repository.load("alice", {})
            start = time.process_time()
            for _ in range(loads):
                assert await repository.load("alice", {}) is tracker
            hot = (time.process_time() - start) / loads
            appended = loads // 10
            spent = 0.0
            for n in range(appended):
                await other.append("alice", [event(events + n)])
                start = time.process_time()
                assert await repository.load("alice", {}) is tracker
                spent += time.process_time() - start
            return {"hot_us": hot * 1e6, "appended_elsewhere_us": spent / appended * 1e6}
        finally:
            await store.close()
            await other.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trees", default=f"{Path(__file__).resolve().parent.parent}")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--loads", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a tree's round, in its process
    args = parser.parse_args()
    if args.one:
        sys.path.insert(0, args.one)
        print(json.dumps(asyncio.run(measure(args.events, args.loads))))
        return
    trees = [str(Path(t).resolve()) for t in args.trees.split(",")]
    results: dict[str, list[dict[str, float]]] = {tree: [] for tree in trees}
    for _ in range(args.rounds):
        for tree in trees:
            command = [sys.executable, __file__, "--one", tree]
            command += ["--events", str(args.events), "--loads", str(args.loads)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[tree].append(json.loads(out))
    for tree, rounds in results.items():
        for key in ("hot_us", "appended_elsewhere_us"):
            values = [r[key] for r in rounds]
            print(
                f"{tree} {key}: median {statistics.median(values):.2f} "
                f"(min {min(values):.2f}, max {max(values):.2f}) us of CPU a load"
            )


if __name__ == "__main__":
    main()
