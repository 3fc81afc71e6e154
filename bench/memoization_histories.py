"""What memoization predicts, and what a prediction costs, with this code and another checkout.

`python bench/memoization_histories.py --base DIR same` trains MemoizationPolicy (without
`max_history` and with 3) and AugmentedMemoizationPolicy (its 5, and without) on every shared
bot and every project of Rasa's test data that loads, in a process per tree, and predicts at
every action of every story and of every story without its first turn (a miss, or for the
augmented policy a shorter history), by intent and, where the story's message has a text,
by that text; it also restores the policy from its written state and predicts again. It
prints how many predictions there were and each one that differs between the trees (none
should).

`python bench/memoization_histories.py --base DIR size` trains MemoizationPolicy (without
`max_history` and with 5) on 2,000 random stories of 10 user turns (20 intents, 20 actions)
and prints the bytes of its `policy.json` (a user turn's share), and the Python peak and the
memory kept (`tracemalloc`) loading it.

`python bench/memoization_histories.py --base DIR cost [--steps N] [--repeat R]` times
MemoizationPolicy's predictions: CPU seconds per `predict` (from `time.process_time`, over R
passes) at every action of moodbot's, formbot's and e2ebot's stories, and along a story of N
steps (`intent` and `action` in turn) trained without `max_history`, each conversation
following the story (a hit at every action) and the same story after another opening (a
miss).

`python bench/memoization_histories.py --base DIR augmented [--steps N] [--repeat R]` times
AugmentedMemoizationPolicy without `max_history` (trained on moodbot's stories): CPU seconds
per `predict` at the end of conversations of N / 4, N / 2 and N events, moodbot's stories one
after the other, each ending in a message no whole conversation of the stories matches (its
shorter histories are tried).

`python bench/memoization_histories.py --base DIR rules [--turns 10,1000,10000] [--base-most
1000] [--repeat R]` times the same policy at the end of conversations of that many turns only
a rule knows (moodbot's bot challenge, its answer and listen with `hide_rule_turn`), ending in
one more challenge: no story follows from any cut, so every shorter history is tried. The
base tree runs only the conversations of up to `--base-most` turns (it took its length
squared: 10,000 turns would be some ten minutes a prediction). With `--slot-kb K` a slot
(not the domain's, as an action's results kept in an `any` slot) is set first to a list of
K kB.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BOTSERVER_SHARED_DATA", "/work/shared"))
POLICIES: list[tuple[str, dict[str, Any]]] = [
    ("MemoizationPolicy", {}),
    ("MemoizationPolicy", {"max_history": 3}),
    ("AugmentedMemoizationPolicy", {}),
    ("AugmentedMemoizationPolicy", {"max_history": None}),
]


def _projects() -> Iterator[tuple[str, Any]]:
    """(name, loaded project) of every shared bot and every project of Rasa's test data that
    loads: its folders with a domain, and its story files read with the first of its test
    domains they load with (or an empty one)."""
    from server.training.project import load_project

    testdata = SHARED / "reference" / "rasa-testdata"
    folders = [p for p in (SHARED / "bots").iterdir() if (p / "domain.yml").exists()]
    folders += [p for p in testdata.iterdir() if (p / "domain.yml").exists()]
    for folder in sorted(folders):
        config = folder / "config.yml"
        data = (
            [folder / "data"]
            if (folder / "data").is_dir()
            else [f for f in folder.glob("*.yml") if f.name not in ("config.yml", "domain.yml")]
        )
        try:
            yield (
                folder.name,
                load_project(config if config.exists() else None, folder / "domain.yml", data),
            )
        except Exception as e:  # a project of Rasa's test data meant to fail
            yield f"{folder.name}: not loaded ({type(e).__name__})", None
    domains = [*sorted((testdata / "test_domains").glob("*.yml")), testdata / "no-domain.yml"]
    story_files = [
        *sorted((testdata / "test_yaml_stories").glob("*.y*ml")),
        *sorted((testdata / "test_multifile_yaml_stories").glob("*.yml")),
        *sorted((testdata / "test_evaluations").glob("*.yml")),
    ]
    for file in story_files:
        for domain in domains:
            try:
                project = load_project(None, domain, [file], missing_domain_is_empty=True)
            except Exception:
                continue
            yield f"{file.parent.name}/{file.name}+{domain.name}", project
            break
        else:
            yield f"{file.parent.name}/{file.name}: not loaded", None


def _load(folder: Path) -> Any:
    from server.training.project import load_project

    return load_project(folder / "config.yml", folder / "domain.yml", [folder / "data"])


def _conversations(stories: list[Any]) -> Iterator[tuple[str, list[Any]]]:
    """(name, events) of every story and of the story from its second user turn on."""
    from server.trackers.events import UserUttered

    for story in stories:
        if story.is_rule:
            continue
        yield story.name, story.events
        users = [i for i, e in enumerate(story.events) if isinstance(e, UserUttered)]
        if len(users) > 1:
            yield story.name + " (later)", story.events[users[1] - 1 :]


def _points(events: list[Any], domain: Any) -> Iterator[Any]:
    """A tracker at each action of `events`."""
    from server.trackers.events import ActionExecuted
    from server.trackers.tracker import Tracker

    for i, event in enumerate(events):
        if isinstance(event, ActionExecuted) and i:
            yield Tracker("bench", domain.slot_defaults(), events[:i])


def predictions() -> dict[str, Any]:
    """Every prediction of every policy on every project, by a readable key."""
    from server.dialogue.policies.featurization import ConversationStates
    from server.dialogue.policies.memoization import (
        AugmentedMemoizationPolicy,
        MemoizationPolicy,
    )

    classes = {c.__name__: c for c in (MemoizationPolicy, AugmentedMemoizationPolicy)}
    out: dict[str, Any] = {}
    for project_name, project in _projects():
        if project is None:
            out[project_name] = None
            continue
        stories = project.training_stories()
        domain = project.domain
        for class_name, options in POLICIES:
            trained = classes[class_name](class_name, **options)
            trained.train(stories, domain)
            with tempfile.TemporaryDirectory() as written:
                trained.persist(Path(written))
                restored = type(trained).load(Path(written), class_name, 3, domain)
            label = f"{project_name} {class_name} {options}"
            out[f"{label} window"] = [trained.prediction_window(), trained.reads_message_text()]
            for name, events in _conversations(stories):
                for index, tracker in enumerate(_points(events, domain)):
                    for policy, which in ((trained, "trained"), (restored, "restored")):
                        conversation = ConversationStates(tracker, domain)
                        p = policy.predict(conversation, domain)
                        out[f"{label} {name} {index} {which}"] = [
                            p.action_name,
                            p.confidence,
                            p.is_end_to_end_prediction,
                        ]
    return out


def _long_story_events(steps: int) -> list[Any]:
    from server.trackers.events import ACTION_LISTEN, ActionExecuted, UserUttered

    events: list[Any] = []
    for index in range(steps // 2):
        intent = ("ask", "greet")[index % 2]
        events.append(ActionExecuted(action_name=ACTION_LISTEN))
        events.append(UserUttered(text=f"/{intent}", parse_data={"intent": {"name": intent}}))
        events.append(ActionExecuted(action_name=f"utter_{'ab'[index % 2]}"))
    events.append(ActionExecuted(action_name=ACTION_LISTEN))
    return events


def cost(steps: int, repeat: int) -> dict[str, Any]:
    """CPU seconds per prediction: shared bots' stories, a long story's hits and misses."""
    from server.dialogue.domain import Domain
    from server.dialogue.policies.featurization import ConversationStates
    from server.dialogue.policies.memoization import MemoizationPolicy
    from server.dialogue.story_steps import TrainingStory
    from server.trackers.events import ACTION_LISTEN, ActionExecuted, UserUttered
    from server.trackers.tracker import Tracker

    def per_prediction(policy: Any, trackers: list[Any], domain: Any) -> tuple[float, int]:
        # As in a turn: the conversation's states are new at each prediction, the texts of
        # its states before the last are kept with the tracker (a first pass writes them).
        for tracker in trackers:
            policy.predict(ConversationStates(tracker, domain), domain)
        hits, spent = 0, 0.0
        for _ in range(repeat):
            conversations = [ConversationStates(t, domain) for t in trackers]
            started = time.process_time()
            for conversation in conversations:
                hits += policy.predict(conversation, domain).confidence > 0
            spent += time.process_time() - started
        return spent / (repeat * len(trackers)), hits // repeat

    figures: dict[str, Any] = {}
    for bot in ("moodbot", "formbot", "e2ebot"):
        project = _load(SHARED / "bots" / bot)
        stories, domain = project.training_stories(), project.domain
        for options in ({}, {"max_history": 5}):
            policy = MemoizationPolicy("MemoizationPolicy", **options)
            policy.train(stories, domain)
            trackers = [t for _, events in _conversations(stories) for t in _points(events, domain)]
            figures[f"{bot} {options}"] = per_prediction(policy, trackers, domain)
    domain = Domain.from_dict(
        {"intents": ["greet", "ask"], "responses": {f"utter_{a}": [{"text": a}] for a in "ab"}}
    )
    events = _long_story_events(steps)
    policy = MemoizationPolicy("MemoizationPolicy")
    policy.train([TrainingStory(name="long", is_rule=False, events=events)], domain)
    opening = [
        ActionExecuted(action_name=ACTION_LISTEN),
        UserUttered(text="/ask", parse_data={"intent": {"name": "ask"}}),
        ActionExecuted(action_name="utter_b"),
    ]
    step = max(1, steps // 200)  # 200 or so points along the story
    for name, prefix in (("follows", []), ("after another opening", opening)):
        trackers = [
            Tracker("bench", domain.slot_defaults(), prefix + events[:i])
            for i, e in enumerate(events)
            if isinstance(e, ActionExecuted) and i and i % step == 0
        ]
        figures[f"long story of {steps} steps, {name}"] = per_prediction(policy, trackers, domain)
    return figures


def augmented(steps: int, repeat: int) -> dict[str, Any]:
    """CPU seconds per prediction of AugmentedMemoizationPolicy without `max_history` at
    the end of ever longer conversations, and what it predicted."""
    from server.dialogue.policies.featurization import ConversationStates
    from server.dialogue.policies.memoization import AugmentedMemoizationPolicy
    from server.trackers.events import UserUttered
    from server.trackers.tracker import Tracker

    project = _load(SHARED / "bots" / "moodbot")
    stories, domain = project.training_stories(), project.domain
    policy = AugmentedMemoizationPolicy("AugmentedMemoizationPolicy", max_history=None)
    policy.train(stories, domain)
    chained: list[Any] = []
    plain = [s for s in stories if not s.is_rule]
    while len(chained) < steps:
        for story in plain:
            chained += story.events[:-1]  # without its last listen: the next story's first
    figures: dict[str, Any] = {}
    for length in (steps // 4, steps // 2, steps):
        events = chained[:length]
        while events and not isinstance(events[-1], UserUttered):
            events = events[:-1]
        tracker = Tracker("bench", domain.slot_defaults(), events)
        spent, predicted = 0.0, None
        for _ in range(repeat):
            conversation = ConversationStates(tracker, domain)
            started = time.process_time()
            predicted = policy.predict(conversation, domain).action_name
            spent += time.process_time() - started
        figures[f"{len(events)} events"] = [spent / repeat, predicted]
    return figures


def rule_turns(turns: list[int], repeat: int, slot_kb: int = 0) -> dict[str, Any]:
    """CPU seconds per prediction of AugmentedMemoizationPolicy without `max_history` after
    each number of turns only a rule knows (with `slot_kb`: after a slot set to a list of
    that many 100-byte items first), and what it predicted (nothing: no story)."""
    from server.dialogue.policies.featurization import ConversationStates
    from server.dialogue.policies.memoization import AugmentedMemoizationPolicy
    from server.trackers.events import ActionExecuted, SlotSet, UserUttered
    from server.trackers.tracker import Tracker

    project = _load(SHARED / "bots" / "moodbot")
    stories, domain = project.training_stories(), project.domain
    policy = AugmentedMemoizationPolicy("AugmentedMemoizationPolicy", max_history=None)
    policy.train(stories, domain)
    parse = {"intent": {"name": "bot_challenge", "confidence": 1.0}, "entities": []}
    figures: dict[str, Any] = {}
    for count in turns:
        events: list[Any] = [ActionExecuted(action_name="action_listen")]
        if slot_kb:
            results = [{"title": "x" * 80, "id": i} for i in range(slot_kb * 10)]
            events.append(SlotSet(key="results", value=results))
        for _ in range(count):
            events += [
                UserUttered("are you a bot?", dict(parse)),
                ActionExecuted(action_name="utter_iamabot", hide_rule_turn=True),
                ActionExecuted(action_name="action_listen", hide_rule_turn=True),
            ]
        events.append(UserUttered("are you a bot?", dict(parse)))
        tracker = Tracker("bench", domain.slot_defaults(), events)
        conversation = ConversationStates(tracker, domain)  # the tracker's states, before
        spent, predicted = 0.0, None
        for _ in range(repeat):
            started = time.process_time()
            prediction = policy.predict(conversation, domain)
            spent += time.process_time() - started
            predicted = prediction.action_name if max(prediction.probabilities) else None
        figures[f"{count} turns"] = [spent / repeat, predicted]
    return figures


def random_stories(count: int = 2000, turns: int = 10) -> tuple[Any, list[Any]]:
    """A domain of 20 intents and 20 responses, and `count` random stories of `turns` user
    turns."""
    import random

    from server.dialogue.domain import Domain
    from server.dialogue.story_steps import TrainingStory
    from server.trackers.events import ACTION_LISTEN, ActionExecuted, UserUttered

    intents, actions = [f"intent_{i}" for i in range(20)], [f"utter_{i}" for i in range(20)]
    domain = Domain.from_dict(
        {"intents": intents, "responses": {a: [{"text": a}] for a in actions}}
    )
    chosen = random.Random(1)
    stories = []
    for number in range(count):
        events: list[Any] = []
        for _ in range(turns):
            intent = chosen.choice(intents)
            events.append(ActionExecuted(action_name=ACTION_LISTEN))
            events.append(UserUttered(text=f"/{intent}", parse_data={"intent": {"name": intent}}))
            events.append(ActionExecuted(action_name=chosen.choice(actions)))
        events.append(ActionExecuted(action_name=ACTION_LISTEN))
        stories.append(TrainingStory(name=str(number), is_rule=False, events=events))
    return domain, stories


def size() -> dict[str, Any]:
    """Bytes written a user turn, and the memory loading them takes, on random stories."""
    import gc
    import tracemalloc

    from server.dialogue.policies.memoization import MemoizationPolicy

    turns = 10
    domain, stories = random_stories(2000, turns)
    figures: dict[str, Any] = {}
    for options in ({}, {"max_history": 5}):
        policy = MemoizationPolicy("MemoizationPolicy", **options)
        policy.train(stories, domain)
        with tempfile.TemporaryDirectory() as written:
            policy.persist(Path(written))
            del policy
            gc.collect()
            tracemalloc.start()
            loaded = MemoizationPolicy.load(Path(written), "MemoizationPolicy", 3, domain)
            kept, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            del loaded
            size = (Path(written) / "policy.json").stat().st_size
        figures[str(options)] = [size, size // (len(stories) * turns), peak, kept]
    return figures


def _child(tree: Path, argv: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, __file__, "--child", *argv]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"{tree}: the run failed")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _augmented_argv(args: argparse.Namespace, base: bool) -> list[str]:
    """The child's command line for `augmented` or `rules` (the base: its shorter runs)."""
    if args.what == "augmented":
        return ["augmented", str(args.steps), str(args.repeat)]
    turns = [int(n) for n in args.turns.split(",")]
    if base:
        turns = [n for n in turns if n <= args.base_most]
    return ["rules", ",".join(map(str, turns)), str(args.repeat), str(args.slot_kb)]


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        logging.disable(logging.WARNING)  # slots the stories set and their domain lacks
        if argv[1] == "same":
            print(json.dumps(predictions()))
        elif argv[1] == "size":
            print(json.dumps(size()))
        elif argv[1] == "augmented":
            print(json.dumps(augmented(int(argv[2]), int(argv[3]))))
        elif argv[1] == "rules":
            turns = [int(n) for n in argv[2].split(",") if n]
            slot_kb = int(argv[4]) if len(argv) > 4 else 0
            print(json.dumps(rule_turns(turns, int(argv[3]), slot_kb)))
        else:
            print(json.dumps(cost(int(argv[2]), int(argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="another checkout")
    parser.add_argument("what", choices=["same", "size", "cost", "augmented", "rules"])
    parser.add_argument("--steps", type=int, default=2000, help="the long story's steps")
    parser.add_argument("--repeat", type=int, default=20, help="passes over the predictions")
    parser.add_argument("--turns", default="10,1000,10000", help="rules: conversations' turns")
    parser.add_argument("--base-most", type=int, default=1000, help="rules: base's longest")
    parser.add_argument("--slot-kb", type=int, default=0, help="rules: a slot's kB set first")
    args = parser.parse_args(argv)
    trees = {"head": ROOT, "base": args.base.resolve()}
    if args.what == "same":
        head, base = (_child(tree, ["same"]) for tree in trees.values())
        differ = sorted(k for k in head.keys() | base.keys() if head.get(k) != base.get(k))
        counted = sum(1 for k in head if k.endswith("trained"))
        print(f"{counted} predictions (and as many restored), {len(differ)} differ")
        for key in differ[:50]:
            print(f"  {key}: head {head.get(key)}, base {base.get(key)}")
        return
    if args.what == "size":
        sizes = {name: _child(tree, ["size"]) for name, tree in trees.items()}
        print("options               tree  policy.json  a turn  load peak  kept")
        for options in sizes["head"]:
            for name in ("base", "head"):
                written, a_turn, peak, kept = sizes[name][options]
                print(f"{options:21} {name}  {written:11,} {a_turn:7,} {peak:10,} {kept:,}")
        return
    if args.what in ("augmented", "rules"):
        runs = {
            name: _child(tree, _augmented_argv(args, name == "base"))
            for name, tree in trees.items()
        }
        print("conversation   base ms   head ms   ratio  predicted (base, head)")
        for case, (head_cpu, head_action) in runs["head"].items():
            if case not in runs["base"]:
                print(f"{case:13} {'-':>8} {head_cpu * 1e3:9.2f} {'-':>7}  -, {head_action}")
                continue
            base_cpu, base_action = runs["base"][case]
            ratio = base_cpu / head_cpu if head_cpu else float("inf")
            print(
                f"{case:13} {base_cpu * 1e3:8.2f} {head_cpu * 1e3:9.2f} {ratio:7.1f}  "
                f"{base_action}, {head_action}"
            )
        return
    figures = {
        name: _child(tree, ["cost", str(args.steps), str(args.repeat)])
        for name, tree in trees.items()
    }
    print("case                                    base us  head us  ratio  hits")
    for case, (head_cpu, hits) in figures["head"].items():
        base_cpu, base_hits = figures["base"][case]
        hits_text = str(hits) if hits == base_hits else f"{hits} (base {base_hits})"
        ratio = base_cpu / head_cpu if head_cpu else float("inf")
        print(f"{case:40} {base_cpu * 1e6:7.1f} {head_cpu * 1e6:8.1f} {ratio:6.2f}  {hits_text}")


if __name__ == "__main__":
    main(sys.argv[1:])
