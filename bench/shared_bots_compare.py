"""Every shared bot trained, tested and talked to with one source tree, to compare two trees.

    python bench/shared_bots_compare.py run --tree /tmp/base --out /tmp/base.json [--bots formbot]
    python bench/shared_bots_compare.py compare /tmp/base.json /tmp/head.json

`run` trains each bot of /work/shared/bots with the tree's `cli.py train`, evaluates its test
stories (`tests/`) and data stories (`data/`) with `cli.py test core`, then serves the model
(`cli.py run --enable-api`, in a copy of the bot's folder so that its SQLite tracker store
stays there) with the bot's rasa-sdk action server of tests/action_servers/ and holds the
REST conversations of CONVERSATIONS. `compare` prints what differs: the stories' counts, each
turn's answers, the slots and the events (knowledgebasebot's lists come from rasa-sdk's
shuffled knowledge base, and responses with variations are drawn at random: both differ
from run to run within one tree).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BOTS = Path("/work/shared/bots")
sys.path.insert(0, str(ROOT))

from bench.tcp_proxy import free_port  # noqa: E402
from tests.action_servers.fixtures import start_action_server  # noqa: E402

ACTION_SERVERS = ROOT / "tests" / "action_servers"
# A turn is a user message, "SLEEP <s>" (a reminder's delay) or "TRIGGER <json>" (a
# /trigger_intent request).
CONVERSATIONS: dict[str, list[list[str]]] = {
    "moodbot": [
        ["hi", "I am sad", "no", "yes", "bye"],
        ["hello", "great", "are you a bot?", "bye"],
    ],
    "initial-project-3.6.21": [["hi", "I am sad", "no", "yes", "bye"], ["hey", "very good", "bye"]],
    "formbot": [
        [
            "hi",
            "I'd like to book a restaurant",
            "chinese",
            '/inform{"number": 4}',
            "yes",
            "no",
            "ok",
        ],
        [
            "book a table for chinese food",
            '/inform{"number": 2}',
            "outside please",
            "a quiet place",
        ],
        ['/request_restaurant{"cuisine": "german"}', "italian", '/inform{"number": 3}', "/deny"],
        ['/request_restaurant{"number": 4}', "chinese", "I would like to sit outside", "no", "ok"],
        ["book a table outside for 3 people with indian food", "/affirm", "no", "/stop"],
        ["/request_restaurant", "/chitchat", "mexican", "/bot_challenge", '/inform{"number": 5}'],
        ["/request_restaurant", "/stop", "/affirm"],
    ],
    "concertbot": [
        ["hi", "search concerts", "compare reviews", "search venues", "compare reviews", "bye"],
        ["hi", "yes", "search concerts", "thanks"],
        ["hello", "no", "bye"],
    ],
    "reminderbot": [
        ["hi", "remind me to call John", "what's my id?", "forget about it", "bye", "SLEEP 6"],
        [
            "remind me to call Sarah",
            "SLEEP 2",
            "hi",
            "SLEEP 5",
            'TRIGGER {"name": "EXTERNAL_dry_plant", "entities": {"plant": "Orchid"}}',
            "bye",
        ],
        ["remind me to call Paul", "remind me to call Anna", "SLEEP 7"],
    ],
    "knowledgebasebot": [
        [
            "hi",
            "what restaurants can you recommend?",
            "what is the price range of the second one?",
            "which hotels are there?",
            "does the first one have wifi?",
            "bye",
        ]
    ],
    "responseselectorbot": [["hi", "what is the weather like?", "who are you?", "bye"]],
    "e2ebot": [["hi", "I am sad", "I want a kitten", "bye"], ["hello", "great", "bye"]],
    "rules": [
        ["hi", "/activate_q_form", "/explain", '/inform{"some_slot": "x"}', "/faq", "/switch_faq"],
        ["/activate_q_form", '/inform{"some_slot": "y"}', "/ask_possibilities", "/greet"],
        ["/switch_faq", "/faq", "/affirm", "/stopp"],
        ['/activate_q_form{"some_slot": "pre"}', "/greet"],
        ["/activate_q_form", "/stopp", "/nlu_fallback", "/affirm", '/inform{"some_slot": "z"}'],
    ],
}
STORIES = re.compile(r"Test stories: (\d+)/(\d+) correct")


def cli(tree: Path, args: list[str], cwd: Path, log: Path) -> int:
    env = dict(os.environ, PYTHONPATH=str(tree))
    with log.open("wb") as out:
        command = [sys.executable, str(tree / "cli.py"), *args]
        return subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=out).returncode


def story_counts(tree: Path, bot: Path, model: Path, work: Path) -> dict[str, str]:
    counts = {}
    for folder in ("tests", "data"):
        if not (bot / folder).is_dir():
            continue
        log = work / f"test_{folder}.log"
        args = ["test", "core", "-m", str(model), "-s", folder, "--out", str(work / folder)]
        cli(tree, [*args, "--no-plot"], bot, log)
        found = STORIES.search(log.read_text(errors="replace"))
        counts[folder] = f"{found[1]}/{found[2]}" if found else "failed"
    return counts


def turn(base: str, sender: str, text: str) -> dict[str, Any] | None:
    if text.startswith("SLEEP "):
        time.sleep(float(text.split()[1]))
        return None
    if text.startswith("TRIGGER "):
        url = f"{base}/conversations/{sender}/trigger_intent?output_channel=latest"
        answer = httpx.post(url, content=text[8:], timeout=60)
        said = answer.json().get("messages", []) if answer.status_code == 200 else answer.text
    else:
        message = {"sender": sender, "message": text}
        answer = httpx.post(f"{base}/webhooks/rest/webhook", json=message, timeout=60)
        said = answer.json() if answer.status_code == 200 else answer.text
    if isinstance(said, list):
        said = [m.get("text") or m.get("image") or m for m in said]
    return {"user": text, "status": answer.status_code, "bot": said}


def event_line(event: dict[str, Any]) -> str:
    kind = event["event"]
    if kind == "user":
        return f"user {event.get('parse_data', {}).get('intent', {}).get('name')}"
    if kind == "slot":
        return f"slot {event['name']} {json.dumps(event.get('value'))}"
    return " ".join(str(x) for x in (kind, event.get("name")) if x is not None)


def converse(tree: Path, bot: Path, model: Path, work: Path) -> list[dict[str, Any]]:
    action = start_action_server(bot.name) if (ACTION_SERVERS / bot.name).is_dir() else None
    project = work / "project"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(bot, project)
    endpoints = project / "endpoints.yml"
    endpoints.write_text(f"action_endpoint:\n  url: {action.url}\n" if action else "")
    port = free_port()
    args = ["run", "-m", str(model), "--enable-api", "--port", str(port)]
    with (work / "run.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, str(tree / "cli.py"), *args, "--endpoints", str(endpoints)],
            cwd=project,
            env=dict(os.environ, PYTHONPATH=str(tree)),
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    held = []
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/status", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        for number, turns in enumerate(CONVERSATIONS.get(bot.name, [])):
            sender = f"compare-{bot.name}-{number}"
            answers = [a for a in (turn(base, sender, t) for t in turns) if a is not None]
            tracker = httpx.get(f"{base}/conversations/{sender}/tracker", timeout=30).json()
            events = [event_line(e) for e in tracker["events"] if e["event"] != "bot"]
            held.append({"turns": answers, "slots": tracker["slots"], "events": events})
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        if action:
            action.stop()
    return held


def run(tree: Path, bots: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="shared-bots-") as tmp:
        for name in bots:
            bot, work = BOTS / name, Path(tmp) / name
            work.mkdir()
            model = work / "models" / "m.tar.gz"
            train = ["train", "--out", str(work / "models"), "--fixed-model-name", "m"]
            trained = cli(tree, train, bot, work / "train.log") == 0 and model.exists()
            results[name] = {"trained": trained}
            if trained:
                results[name]["stories"] = story_counts(tree, bot, model, work)
                results[name]["conversations"] = converse(tree, bot, model, work)
            print(name, {k: v for k, v in results[name].items() if k != "conversations"})
    return results


def compare(before: dict[str, Any], after: dict[str, Any]) -> int:
    differences = 0
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name, {}), after.get(name, {})
        print(f"{name}: trained {old.get('trained')} / {new.get('trained')}, stories", end=" ")
        print(f"{old.get('stories')} / {new.get('stories')}")
        differences += old.get("stories") != new.get("stories")
        pairs = zip(old.get("conversations", []), new.get("conversations", []), strict=False)
        for number, (a, b) in enumerate(pairs):
            if a == b:
                continue
            differences += 1
            print(f"  conversation {number} differs")
            for x, y in zip(a["turns"], b["turns"], strict=False):
                if x != y:
                    print(f"    {x['user']!r}: {x['bot']} / {y['bot']}")
            lines = difflib.unified_diff(a["events"], b["events"], "before", "after", lineterm="")
            for line in lines:
                print("    " + line)
    return 1 if differences else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    running = sub.add_parser("run")
    running.add_argument("--tree", type=Path, default=ROOT)
    running.add_argument("--out", type=Path, required=True)
    running.add_argument("--bots", help="comma-separated names (default: every shared bot)")
    comparing = sub.add_parser("compare")
    comparing.add_argument("before", type=Path)
    comparing.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.command == "compare":
        return compare(json.loads(args.before.read_text()), json.loads(args.after.read_text()))
    bots = args.bots.split(",") if args.bots else sorted(CONVERSATIONS)
    args.out.write_text(json.dumps(run(args.tree.resolve(), bots), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
