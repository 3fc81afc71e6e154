"""Instructions of the SQLite tracker store's part of a turn (a load, then an append of the
turn's events), counted by callgrind: the store path alone, without HTTP or the model.

    python bench/sqlite_append_callgrind.py [--turns 2000] [--warmup 500] [--group 3]
        [--rasa | --earlier] [--out FILE]

Runs itself under `valgrind --tool=callgrind --instr-atstart=no` on a fresh SQLite file
(made by the tree's migrations, as `botserver run` makes one; `--rasa`: Rasa 3.6's table
and index first, as an existing Rasa tracker database has them; `--earlier`: the table an
earlier botserver made, with AUTOINCREMENT, as revision 0001 did before 0005): moodbot-like
conversations of four turns (the first one's append starts the session: 7 rows, the others
4), `--group` turns at a time in one event loop iteration (one inline group commit, as under
load), each turn a `load` and an `append` through `SqlTrackerStore`. After `--warmup` turns the
instrumentation is switched on (`callgrind_control -i on`) for `--turns` more, and the
instructions per turn are printed (user space, the checkpoints of the store's thread
included). Compare trees with the same settings. PYTHONPATH=<tree> runs that tree's store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from http_callgrind import total_instructions  # noqa: E402

INTENTS = ["greet", "mood_unhappy", "deny", "goodbye", "mood_great", "bot_challenge", "affirm"]


def _user(text: str, intent: str, timestamp: float) -> dict[str, Any]:
    ranking = [{"name": name, "confidence": 0.9 if name == intent else 0.01} for name in INTENTS]
    return {
        "event": "user",
        "timestamp": timestamp,
        "metadata": {},
        "text": text,
        "parse_data": {
            "intent": {"name": intent, "confidence": 0.9},
            "entities": [],
            "text": text,
            "message_id": f"{int(timestamp * 1000):x}",
            "metadata": {},
            "intent_ranking": ranking[:4],
        },
        "input_channel": "rest",
        "message_id": f"{int(timestamp * 1000):x}",
    }


def _action(name: str, timestamp: float) -> dict[str, Any]:
    return {
        "event": "action",
        "timestamp": timestamp,
        "name": name,
        "policy": "policy_1_RulePolicy",
        "confidence": 1.0,
        "action_text": None,
        "hide_rule_turn": False,
    }


def _bot(text: str, timestamp: float) -> dict[str, Any]:
    return {
        "event": "bot",
        "timestamp": timestamp,
        "metadata": {"utter_action": "utter_greet"},
        "text": text,
        "data": {"elements": None, "quick_replies": None, "buttons": None, "attachment": None},
    }


def turn_events(number: int, timestamp: float) -> list[dict[str, Any]]:
    """A moodbot turn's events: the first one of a conversation starts its session."""
    intent = INTENTS[number % len(INTENTS)]
    events = []
    if number == 0:
        events += [
            _action("action_session_start", timestamp),
            {"event": "session_started", "timestamp": timestamp},
            _action("action_listen", timestamp),
        ]
    events += [
        _user(f"message {number} of this conversation", intent, timestamp),
        _action(f"utter_{intent}", timestamp + 0.001),
        _bot(f"an answer to {intent}", timestamp + 0.002),
        _action("action_listen", timestamp + 0.003),
    ]
    return events


# Rasa 3.6's SQLTrackerStore schema (SQLAlchemy's create_all on SQLite).
RASA_SCHEMA = """
CREATE TABLE events (
    id INTEGER NOT NULL, sender_id VARCHAR(255) NOT NULL, type_name VARCHAR(255) NOT NULL,
    timestamp FLOAT, intent_name VARCHAR(255), action_name VARCHAR(255), data TEXT,
    PRIMARY KEY (id)
);
CREATE INDEX ix_events_sender_id ON events (sender_id);
"""
# botserver's before revision 0005 (revision 0001 gave SQLite tables AUTOINCREMENT).
EARLIER_SCHEMA = """
CREATE TABLE events (
    id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, sender_id VARCHAR(255) NOT NULL,
    type_name VARCHAR(255) NOT NULL, timestamp FLOAT, intent_name VARCHAR(255),
    action_name VARCHAR(255), data TEXT
);
CREATE INDEX ix_events_sender_id_id ON events (sender_id, id);
"""
SCHEMAS = {"rasa": RASA_SCHEMA, "earlier": EARLIER_SCHEMA}


async def replay(database: str, turns: int, warmup: int, group: int, made_by: str | None) -> None:
    from server.trackers.factory import create_tracker_store

    if made_by is not None:
        with contextlib.closing(sqlite3.connect(database)) as conn:
            conn.executescript(SCHEMAS[made_by])

    store = create_tracker_store({"type": "sql", "dialect": "sqlite", "db": database})
    await store.ping()  # migrates

    async def turn(index: int) -> None:
        # A group's turns are of `group` conversations, which take their 4 turns together.
        sender = f"c{index // (4 * group) * group + index % group}"
        number = index // group % 4
        await store.load(sender)
        await store.append(sender, turn_events(number, 1_700_000_000.0 + index))

    async def run(first: int, count: int) -> None:
        # `group` conversations at a time, each taking its turns in order.
        for start in range(first, first + count, group):
            await asyncio.gather(
                *(turn(i) for i in range(start, min(start + group, first + count)))
            )

    await run(0, warmup)
    instrument("on")
    await run(warmup, turns)
    instrument("off")
    await store.close()


def instrument(switch: str) -> None:
    """Callgrind's instrumentation of this process on or off; the loop waits meanwhile (no
    turn is under way)."""
    command = ["callgrind_control", "-i", switch, str(os.getpid())]
    subprocess.run(command, check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=2000, help="measured turns")
    parser.add_argument("--warmup", type=int, default=500, help="turns before measuring")
    parser.add_argument("--group", type=int, default=3, help="turns a loop iteration")
    made_by = parser.add_mutually_exclusive_group()
    made_by.add_argument("--rasa", action="store_true", help="start from Rasa 3.6's table")
    made_by.add_argument(
        "--earlier", action="store_true", help="start from an earlier botserver's table"
    )
    parser.add_argument("--out", help="keep callgrind's output here (default: a temporary file)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the run under valgrind
    args = parser.parse_args(argv)
    if args.child:
        made = "rasa" if args.rasa else "earlier" if args.earlier else None
        asyncio.run(replay(args.child, args.turns, args.warmup, args.group, made))
        return 0
    with tempfile.TemporaryDirectory(prefix="sqlite-append-callgrind-") as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "callgrind.out"
        command = [
            *("valgrind", "--tool=callgrind", "--instr-atstart=no"),
            f"--callgrind-out-file={out}",
            *(sys.executable, __file__, "--child", f"{tmp}/bench.db"),
            *("--turns", str(args.turns), "--warmup", str(args.warmup)),
            *("--group", str(args.group)),
            *(["--rasa"] if args.rasa else []),
            *(["--earlier"] if args.earlier else []),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(command, check=True, env=env, capture_output=True)
        total = total_instructions(out)
    print(
        f"store turns: {total:,} instructions, {total / args.turns / 1000:.1f}k per turn "
        f"(a load and an append; {args.turns} turns after {args.warmup}, {args.group} a group"
        f"{', from a Rasa table' if args.rasa else ''}"
        f"{', from an earlier botserver table' if args.earlier else ''})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
