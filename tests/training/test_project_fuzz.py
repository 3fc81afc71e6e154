"""Broken project files, made by mutating valid ones, never break the loaders: `data
validate`, `train` up to the point where it would start training, and what `run` reads of
endpoints.yml and credentials.yml either take the file or refuse it with the project's own
error naming the file (and its line where a YAML syntax error has one). Seeded, so a case
that once failed is run again by its number."""

from __future__ import annotations

import copy
import json
import logging
import random
import re
import resource
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.api.server import ServerOptions, build_app
from server.config import read_credentials, read_endpoints
from server.dialogue.policies.ensemble import PolicyEnsemble
from server.errors import BotServerError
from server.nlu.pipeline import NLUPipeline
from server.training import train as train_module
from server.training.validation import validate_project
from tests.shared_data import BOTS, TESTDATA

SEED_BOTS = ["initial-project-3.6.21", "formbot", "responseselectorbot", "rules", "e2ebot"]
SEED_NLU_JSON = TESTDATA / "test" / "demo-rasa-small.json"
PROJECT_FILES = ["config.yml", "domain.yml", "data/nlu.yml", "data/stories.yml"]
PROJECT_FILES += ["data/rules.yml", "data/nlu.json"]

# Cases per run, and the seeds of cases that once found a bug (run whatever the count).
CASES = 300
FOUND = [10816, 11090, 12004]

# Any case taking this long is a hang; any case growing the process this much, a blow-up.
CASE_SECONDS = 20
CASE_GROWTH_BYTES = 512 * 1024 * 1024


# -- mutations of the parsed document ---------------------------------------------------------
ODD_TEXTS = [
    "",
    " ",
    "\u0000",
    "a\u0000b",
    "\u202eevil",
    "\ufeffbom",
    "\u2028line",
    "e\u0301\u0301\u0301",
    "\U0001f600",
    "\x85",
    "\ud7ff\ue000\uffff",
    "x" * 200_000,
    "[" * 50,
    "{" * 50 + "}",
    "${UNSET_BOTSERVER_FUZZ_VARIABLE}",
    "$UNSET_BOTSERVER_FUZZ_VARIABLE",
    "/",
    "utter_",
    "action_",
    "a/b/c",
    "[x](y)",
    '[x]{"entity": 1}',
    "null",
    "~",
    "yes",
    "2024-01-01",
    "0x1F",
    "1e999",
    ".nan",
]


def _odd_values(rng: random.Random, node: Any) -> list[Any]:
    nested: Any = "deep"
    for _ in range(rng.choice([20, 99, 150])):
        nested = [nested] if rng.random() < 0.5 else {"k": nested}
    return [
        None,
        0,
        -1,
        1e308,
        2**70,
        True,
        False,
        [],
        {},
        [node],
        {"name": node},
        {node if isinstance(node, str) else "k": node},
        [[]],
        [None],
        [{}],
        {None: None},
        {1: 2},
        {True: [1]},
        nested,
        rng.choice(ODD_TEXTS),
        ["a"] * 5000,
        {f"k{i}": i for i in range(2000)},
    ]


def _nodes(doc: Any) -> list[tuple[tuple[Any, ...], Any]]:
    """Each node and its path, an aliased one once (a text mutation before may have left a
    list that holds itself, or a billion laughs)."""
    found: list[tuple[tuple[Any, ...], Any]] = []
    seen: set[int] = set()
    stack: list[tuple[tuple[Any, ...], Any]] = [((), doc)]
    while stack:
        path, node = stack.pop()
        found.append((path, node))
        if isinstance(node, dict | list):
            if id(node) in seen:
                continue
            seen.add(id(node))
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend(((*path, key), value) for key, value in items)
    return found


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return doc


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


def mutate_document(rng: random.Random, doc: Any) -> Any:
    """One change at a random node: another type or value, a key dropped, renamed, added or
    its value duplicated, an item dropped or duplicated, the node swapped list/map/scalar."""
    doc = copy.deepcopy(doc)
    path, node = rng.choice(_nodes(doc))
    how = rng.choice(["value", "value", "drop", "rename", "add", "duplicate", "swap"])
    if how == "value" or not path:
        return _replace(doc, path, rng.choice(_odd_values(rng, node)))
    parent = _parent(doc, path)
    key = path[-1]
    if how == "drop":
        del parent[key]
    elif how == "rename" and isinstance(parent, dict):
        new_key = rng.choice([key.upper() if isinstance(key, str) else 1, "", None, 1, 1.5, True])
        parent[new_key] = parent.pop(key)
    elif how == "add" and isinstance(parent, dict):
        parent[rng.choice(["unknown", "version", "name", "type", "intent", "steps"])] = node
    elif how == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(node))
    elif how == "duplicate" and isinstance(parent, dict):
        parent[f"{key}_again"] = copy.deepcopy(node)
    elif isinstance(node, list):
        parent[key] = {str(i): v for i, v in enumerate(node)} if rng.random() < 0.7 else "x"
    elif isinstance(node, dict):
        parent[key] = [{k: v} for k, v in node.items()] if rng.random() < 0.7 else list(node)
    else:
        parent[key] = [node] if rng.random() < 0.5 else {str(node): node}
    return doc


# -- mutations of the text ----------------------------------------------------------------------
TAGGED = [
    "!!python/object/apply:os.system ['true']",
    "!!python/name:os.system",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!timestamp 2001-12-14",
    "2001-12-14",
    "!!float .inf",
    "!!float .nan",
    "!!omap [a: 1, b: 2]",
    "!!pairs [a: 1, a: 2]",
    "!!int 0x1F",
    "!custom x",
    "!!str",
    "!!null ''",
    "&a [*a]",
    "*undefined",
    "{<<: {a: 1}}",
    "? [a, b]\n  : c",
    "? {a: 1}\n  : c",
    "|\n  block",
    "'unterminated",
    '"\\x"',
    "@reserved",
    "`reserved",
    "%TAG",
]
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
    for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def mutate_text(rng: random.Random, text: str) -> str | bytes:
    """One change to a file's text: its encoding, line ends, indentation, a line duplicated,
    cut or stretched, a scalar given a YAML tag, anchors, binary bytes."""
    lines = text.splitlines(keepends=True) or ["\n"]
    at = rng.randrange(len(lines))
    how = rng.randrange(16)
    if how == 0:
        return "\ufeff" + text
    if how == 1:
        return text.replace("\n", "\r\n")
    if how == 2:
        line = lines[at]
        lines[at] = "\t" + line.lstrip(" ") if line.startswith(" ") else "\t" + line
    elif how == 3:
        lines.insert(at, lines[at])  # a key given twice, an item twice
    elif how == 4:
        return text[: rng.randrange(len(text) + 1)]
    elif how == 5:
        return rng.choice(["", "\n", "   \n", "---\n", "---\n...\n---\n", "# only\n", "~\n"])
    elif how == 6:
        lines[at] = lines[at].rstrip("\n") + " " + "y" * rng.choice([5_000, 2_000_000]) + "\n"
    elif how == 7:
        line = lines[at].rstrip("\n")
        if ":" in line:
            lines[at] = line.split(":", 1)[0] + ": " + rng.choice(TAGGED) + "\n"
        else:
            lines[at] = line.rsplit("- ", 1)[0] + "- " + rng.choice(TAGGED) + "\n"
    elif how == 8:
        data = text.encode()
        cut = rng.randrange(len(data) + 1)
        return data[:cut] + bytes(rng.randrange(256) for _ in range(8)) + data[cut:]
    elif how == 9:
        return text + "\n" + LAUGHS
    elif how == 10:
        lines[at] = "  " * rng.randrange(1, 6) + lines[at]
    elif how == 11:
        lines.insert(at, rng.choice(["\x00\n", "\x07\n", "\u2029\n", "\ufeff\n", "%YAML 1.1\n"]))
    elif how == 12:
        lines[at] = "[" * rng.choice([50, 101, 5000]) + "\n"
    elif how == 13:
        return text + "\n---\n" + text
    elif how == 14:
        lines.insert(at, "<<: *nowhere\n" if rng.random() < 0.5 else "x: &z {a: 1}\ny: {<<: *z}\n")
    else:
        del lines[at]
    return "".join(lines)


# -- the project, mutated ---------------------------------------------------------------------
def seed_project(bot: str, into: Path) -> None:
    source = BOTS / bot
    (into / "data").mkdir(parents=True)
    for name in ("config.yml", "domain.yml"):
        shutil.copy(source / name, into / name)
    for file in (source / "data").glob("*.yml"):
        shutil.copy(file, into / "data" / file.name)
    shutil.copy(SEED_NLU_JSON, into / "data" / "nlu.json")


def mutate_file(rng: random.Random, path: Path) -> str:
    """Mutates one file in place; says how, for a failure's message."""
    text = path.read_text(encoding="utf-8", errors="replace")
    is_json = path.suffix == ".json"
    try:  # (a file mutated before may no longer parse: its text is mutated then)
        doc = json.loads(text) if is_json else yaml.safe_load(text)
    except (ValueError, RecursionError, yaml.YAMLError):
        doc = None
    if doc is not None and rng.random() < 0.55:
        mutated = mutate_document(rng, doc)
        try:
            if is_json:
                out: str | bytes = json.dumps(mutated, ensure_ascii=rng.random() < 0.5)
            else:
                out = yaml.safe_dump(mutated, allow_unicode=True, sort_keys=False)
        except (ValueError, TypeError, yaml.YAMLError):  # a key JSON cannot write
            out = json.dumps(mutated, default=str, skipkeys=True)
        how = "document"
    else:
        out = mutate_text(rng, text)
        how = "text"
    if isinstance(out, bytes):
        path.write_bytes(out)
    else:
        path.write_text(out, encoding="utf-8", errors="surrogatepass", newline="")
    return how


def mutate_project(seed: int, into: Path) -> str:
    rng = random.Random(seed)
    bot = rng.choice(SEED_BOTS)
    seed_project(bot, into)
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        existing = [f for f in PROJECT_FILES if (into / f).is_file()]
        name = rng.choice(existing)
        done.append(f"{name} ({mutate_file(rng, into / name)})")
    return f"seed {seed}: {bot}, mutated {', '.join(done)}"


# -- the loaders, and what they may do -------------------------------------------------------
class ReachedTraining(Exception):
    """Training was about to start: everything before it took the files."""


def _stop_training(*_args: Any, **_kwargs: Any) -> Any:
    raise ReachedTraining


@contextmanager
def bounded(what: str) -> Iterator[None]:
    """A case that hangs fails rather than holding the run; one that grows the process by
    CASE_GROWTH_BYTES fails too."""

    def hang(_signum: int, _frame: Any) -> None:
        raise AssertionError(f"{what}: still loading after {CASE_SECONDS} s")

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(CASE_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert grown < CASE_GROWTH_BYTES, f"{what}: loading grew the process by {grown:,} bytes"


def names_a_file(message: str, root: Path) -> bool:
    """Whether an error names a file of the project, and its line when the YAML itself is
    broken (the parser knows where)."""
    if str(root) not in message:
        return False
    return (
        "invalid YAML" not in message
        or re.search(r"\.ya?ml:\d+: invalid YAML", message) is not None
    )


@dataclass
class Outcome:
    validate_errors: list[str]
    train: str  # "reached training", or the error it gave


def load_as_the_cli_does(root: Path, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """`data validate`, then `train --skip-validation` up to the first component's training;
    any exception but BotServerError escapes."""
    config, domain, data = root / "config.yml", root / "domain.yml", [root / "data"]
    report = validate_project(config, domain, data, empty_domain_stops=True)
    monkeypatch.setattr(NLUPipeline, "train", _stop_training)
    monkeypatch.setattr(PolicyEnsemble, "fit", _stop_training)
    monkeypatch.setattr(PolicyEnsemble, "train", _stop_training)
    try:
        train_module.train(config, domain, data, root / "models")
    except ReachedTraining:
        trained = "reached training"
    except BotServerError as exc:
        trained = str(exc)
    finally:
        monkeypatch.undo()
    return Outcome(report.errors, trained)


def check_case(seed: int, root: Path, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    what = mutate_project(seed, root)
    with bounded(what):
        outcome = load_as_the_cli_does(root, monkeypatch)
    if outcome.train != "reached training":
        assert names_a_file(outcome.train, root), f"{what}: train said {outcome.train!r}"
    for error in outcome.validate_errors[:1]:
        assert names_a_file(error, root), f"{what}: data validate said {error!r}"
    return outcome


def _seeds() -> list[int]:
    return sorted(set(FOUND) | set(range(1000, 1000 + CASES)))


@pytest.mark.parametrize("seed", _seeds())
def test_a_mutated_project_loads_or_is_refused_naming_the_file(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)
    check_case(seed, tmp_path, monkeypatch)


# -- endpoints.yml and credentials.yml ----------------------------------------------------------
ENDPOINTS_SEED = """\
action_endpoint:
  url: http://localhost:5055/webhook
  token: secret
nlg:
  url: http://localhost:5056/nlg
models:
  url: http://localhost:5057/models/default
  wait_time_between_pulls: 10
tracker_store:
  type: sql
  dialect: sqlite
  db: trackers.db
lock_store:
  type: in_memory
event_broker:
  type: file
  path: events.log
"""
CREDENTIALS_SEED = """\
rest:
socketio:
  user_message_evt: user_uttered
  bot_message_evt: bot_uttered
  session_persistence: true
callback:
  url: http://localhost:5034/bot
rocketchat:
  user: bot
  password: secret
  server_url: https://chat.example.com
"""


def check_run_files(seed: int, root: Path, chdir: Callable[[Path], None]) -> None:
    rng = random.Random(seed)
    chdir(root)  # the SQLite file and the event log land here
    endpoints, credentials = root / "endpoints.yml", root / "credentials.yml"
    endpoints.write_text(ENDPOINTS_SEED)
    credentials.write_text(CREDENTIALS_SEED)
    target = rng.choice([endpoints, credentials])
    what = f"seed {seed}: mutated {target.name} ({mutate_file(rng, target)})"
    with bounded(what):
        try:
            sections = read_endpoints(endpoints)
            channels = read_credentials(credentials)
            build_app(
                ServerOptions(
                    endpoints=sections,
                    credentials=channels,
                    credentials_file=str(credentials),
                    endpoints_file=str(endpoints),
                    models_dir=root / "models",
                )
            )
        except BotServerError as exc:
            assert names_a_file(str(exc), root), f"{what}: run said {exc}"


RUN_CASES = 150
RUN_FOUND: list[int] = []


@pytest.mark.parametrize("seed", sorted(set(RUN_FOUND) | set(range(5000, 5000 + RUN_CASES))))
def test_mutated_endpoints_and_credentials_are_read_or_refused_naming_the_file(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)
    check_run_files(seed, tmp_path, monkeypatch.chdir)
