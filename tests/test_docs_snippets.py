"""What README.md and docs/*.md show works as written: each endpoints.yml and credentials.yml
example (and those `botserver init` writes) starts a server, each `botserver ...` and
`bench/...` command names flags its command has, and the configuration reference names every
key a section or channel reads."""

from __future__ import annotations

import argparse
import logging
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from cli import build_parser
from server.api.runner import server_app, spec_from_args
from tests.tls_certificates import self_signed

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
# A fenced YAML block is a whole file when its first line names it: `# endpoints.yml`.
FILE_MARK = re.compile(r"#\s*(endpoints|credentials)\.yml\b")
VARIABLE = re.compile(r"\$\{(\w+)\}")
# A command as the docs write it, in a code span or on a line of a fenced shell block.
COMMAND = re.compile(r"(?:^|&&|\||;)\s*(botserver(?:\s+[^&|#;`]*)?)")


def marked_files() -> list[tuple[str, str, str]]:
    """(where, kind, text) of every fenced YAML block marked as an endpoints or credentials
    file, and of the endpoints.yml the compose file mounts."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in FENCE.finditer(text):
            mark = FILE_MARK.match(block.group(2))
            if block.group(1) == "yaml" and mark:
                line = text.count("\n", 0, block.start()) + 1
                found.append((f"{page.name}:{line}", mark.group(1), block.group(2)))
    deploy = ROOT / "deploy" / "endpoints.yml"
    found.append(("deploy/endpoints.yml", "endpoints", deploy.read_text(encoding="utf-8")))
    # What `botserver init` writes, with the sections it leaves commented out for the user
    # turned on (`# tracker_store:`, `#   type: SQL`; not the prose comments).
    starter = ROOT / "server" / "training" / "starter_project"
    for kind in ("endpoints", "credentials"):
        text = (starter / f"{kind}.yml").read_text(encoding="utf-8")
        text = re.sub(r"(?m)^# (?=\w+:(?:\s|$)|\s+\S)", "", text)
        found.append((f"botserver init's {kind}.yml, commented sections on", kind, text))
    return found


def the_custom_channel_example() -> str:
    """The channel class docs/channels.md shows under "Custom channels"."""
    text = (ROOT / "docs" / "channels.md").read_text(encoding="utf-8")
    section = text.split("## Custom channels", 1)[1]
    (code,) = [b.group(2) for b in FENCE.finditer(section) if b.group(1) == "python"][:1]
    return code


@pytest.mark.parametrize(
    ("kind", "text"),
    [pytest.param(kind, text, id=where) for where, kind, text in marked_files()],
)
def test_a_configuration_file_the_docs_show_starts_the_server_without_a_warning(
    kind: str,
    text: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)  # the default SQLite store's file, if any, lands here
    for name in set(VARIABLE.findall(text)):  # hosts, URLs and secrets the reader brings
        value = {"HOST": "localhost", "URL": "http://localhost:5055/webhook"}.get(
            name.rsplit("_", 1)[-1], f"{name.lower()}-1"
        )
        monkeypatch.setenv(name, value)
    # A file the reader brings (a CA bundle): read at start, so it must be there.
    ca_file, _ = self_signed(tmp_path)
    text = re.sub(r"(?m)^(\s*cafile:\s*)\S+", rf"\g<1>{ca_file}", text)
    # The custom channel a credentials example names: the class docs/channels.md shows.
    package = tmp_path / "my_package"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "channels.py").write_text(the_custom_channel_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / f"{kind}.yml"
    path.write_text(text)
    args = build_parser().parse_args(["run", "--enable-api", f"--{kind}", str(path)])
    with caplog.at_level(logging.WARNING):
        spec = spec_from_args(args)
        server_app(spec.options(), spec.metrics)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_misspelt_key_in_a_marked_example_would_be_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The check above fails on what a user would see: a warning at start."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "endpoints.yml"
    path.write_text(
        "# endpoints.yml\naction_endpoint:\n  url: http://actions:5055/webhook\n  tken: x\n"
    )
    args = build_parser().parse_args(["run", "--endpoints", str(path)])
    with caplog.at_level(logging.WARNING):
        spec = spec_from_args(args)
        server_app(spec.options(), spec.metrics)
    assert any("unknown setting 'tken'" in r.getMessage() for r in caplog.records)


def test_the_docs_mark_the_configuration_files_they_show() -> None:
    marked = {where.split(":")[0] for where, _, _ in marked_files()}
    assert {"actions.md", "channels.md", "configuration.md"} <= marked


def test_the_sub_projects_config_the_docs_show_imports_the_sub_projects_files(
    tmp_path: Path,
) -> None:
    """docs/configuration.md's `importers:`/`imports:` example, beside a sub-project
    (botserver init's starter project) where its `imports` points."""
    import shutil

    from server.training.imports import imported_files

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    (example,) = [
        b.group(2)
        for b in FENCE.finditer(text)
        if b.group(1) == "yaml" and b.group(2).startswith("# config.yml")
    ]
    (folder,) = re.findall(r"(?m)^- (\S+)\s+#", example)
    shutil.copytree(ROOT / "server" / "training" / "starter_project", tmp_path / folder)
    (tmp_path / "config.yml").write_text(example)
    found = imported_files(tmp_path / "config.yml")
    assert [p.name for p in found.domain] == ["domain.yml"]
    assert {p.parent.name for p in found.data} == {"data"}


# -- commands ---------------------------------------------------------------------------------
def commands_in_docs() -> list[tuple[str, str]]:
    """(page, command) for every `botserver ...` in a code span or a fenced shell block."""
    found: set[tuple[str, str]] = set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in FENCE.finditer(text):
            if block.group(1) in ("bash", "sh", ""):
                for line in block.group(2).replace("\\\n", " ").splitlines():
                    found.update((page.name, c.strip()) for c in COMMAND.findall(line))
        prose = FENCE.sub("", text)
        for span in re.findall(r"`([^`\n]+)`", prose):
            found.update((page.name, c.strip()) for c in COMMAND.findall(span))
    return sorted(found)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def flags_of(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def unknown_flags(command: str) -> list[str]:
    """The flags of `command` its (sub)command's parser does not have; the logging flags may
    come before the command, as `main` reads them."""
    top = build_parser()
    parser = top
    words = shlex.split(re.sub(r"[\[\]]", " ", command))[1:]
    flags = []
    for word in words:
        if word in subcommands(parser):
            parser = subcommands(parser)[word]
        elif word.startswith("-") and len(word) > 1:
            flags.append((word.split("=", 1)[0], parser))
    logging_flags = flags_of(subcommands(top)["train"]) & {"-v", "-vv", "--debug", "--quiet"}
    logging_flags |= {"--log-file", "--log-format", "--logging-config-file", "-vv"}
    return [
        flag
        for flag, at in flags
        if flag not in flags_of(at) | flags_of(parser) | flags_of(top) | logging_flags
    ]


# Shown on purpose as what is refused, or not botserver's to parse.
NOT_BOTSERVERS = {
    "botserver test --stories-dir x",  # how an unknown flag is refused
}


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(command, id=f"{page}: {command}")
        for page, command in commands_in_docs()
        if command not in NOT_BOTSERVERS and not command.startswith("botserver run actions")
    ],
)
def test_a_command_in_the_docs_names_flags_its_command_has(command: str) -> None:
    assert unknown_flags(command) == []


def test_a_flag_a_command_lacks_is_found() -> None:
    assert unknown_flags("botserver run -m models --enable-apii") == ["--enable-apii"]
    assert unknown_flags("botserver -v train core --augmentation 0") == []
    assert unknown_flags("botserver train nlu --stories data") == ["--stories"]


def reference_sections() -> list[tuple[str, list[str], set[str]]]:
    """(heading, its commands, the flags its tables name) for each `### botserver ...`
    section of docs/configuration.md."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    parts = re.split(r"^(#{2,3} .*)$", text, flags=re.M)
    sections = []
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        commands = re.findall(r"`botserver ([^`]+)`", heading)
        if not heading.startswith("### ") or not commands:
            continue
        first_cells = [row.split("|")[1] for row in body.splitlines() if row.startswith("| ")]
        flags = {f for cell in first_cells for f in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", cell)}
        sections.append((heading, commands, flags))
    return sections


@pytest.mark.parametrize(
    ("commands", "flags"),
    [
        pytest.param(commands, flags, id=heading)
        for heading, commands, flags in reference_sections()
        if commands != ["run actions"]  # rasa-sdk's own flags
    ],
)
def test_every_flag_in_the_configuration_reference_exists(
    commands: list[str], flags: set[str]
) -> None:
    known: set[str] = set()
    for command in commands:
        parser = build_parser()
        for word in command.split():
            parser = subcommands(parser)[word]
        known |= flags_of(parser)
    assert sorted(flags - known) == []


def bench_commands() -> list[tuple[str, str, list[str]]]:
    """(page, script, flags) for every `bench/<script>.py --flag ...` the docs show."""
    found = set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        prose = FENCE.sub("", text).replace("\n", " ")
        pieces = re.findall(r"`([^`]+)`", prose)
        pieces += [b.group(2).replace("\\\n", " ") for b in FENCE.finditer(text)]
        for line in (line for piece in pieces for line in piece.splitlines()):
            # (`bench/test_x.py` beside `api/test_y.py` names a test module under tests/)
            for script, rest in re.findall(r"(?<![\w/])bench/((?!test_)\w+\.py)(.*)", line):
                flags = re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest.split("bench/")[0])
                found.add((page.name, script, tuple(flags)))
    return [(page, script, list(flags)) for page, script, flags in sorted(found)]


def flags_a_script_lacks(script: str, flags: list[str]) -> list[str]:
    source = (ROOT / "bench" / script).read_text(encoding="utf-8")
    return [f for f in flags if f'"{f}"' not in source and f"'{f}'" not in source]


@pytest.mark.parametrize(
    ("script", "flags"),
    [
        pytest.param(script, flags, id=f"{page}: {script} {' '.join(flags)}")
        for page, script, flags in bench_commands()
    ],
)
def test_a_benchmark_command_in_the_docs_names_flags_its_script_has(
    script: str, flags: list[str]
) -> None:
    assert flags_a_script_lacks(script, flags) == []


def test_a_flag_a_benchmark_script_lacks_is_found() -> None:
    assert flags_a_script_lacks("retention.py", ["--store", "--stor"]) == ["--stor"]


# -- keys -------------------------------------------------------------------------------------
def keys_read() -> dict[str, frozenset[str]]:
    """Every key each endpoints.yml section and credentials.yml channel reads."""
    from server.api.server import _ACTION_ENDPOINT_KEYS, _NLG_KEYS
    from server.brokers.file import FileEventBroker
    from server.brokers.rabbitmq import RabbitMQEventBroker
    from server.brokers.sql import SqlEventBroker
    from server.channels.registry import CHANNELS, channel_class
    from server.models.model_server import ModelServerConfig
    from server.nlu.remote import RemoteNLU
    from server.trackers import redis_lock
    from server.trackers.dynamo_store import DynamoTrackerStore
    from server.trackers.redis_store import RedisTrackerStore
    from server.trackers.sql_store import SqlTrackerStore

    read: dict[str, Any] = {
        "tracker_store": SqlTrackerStore.SETTINGS
        | RedisTrackerStore.SETTINGS
        | DynamoTrackerStore.SETTINGS,
        "lock_store": redis_lock.SETTINGS | {"wait_timeout"},
        "event_broker": RabbitMQEventBroker.SETTINGS
        | SqlEventBroker.SETTINGS
        | FileEventBroker.SETTINGS,
        "action_endpoint": _ACTION_ENDPOINT_KEYS,
        "nlg": _NLG_KEYS,
        "nlu": RemoteNLU.SETTINGS_KEYS,
        "models": ModelServerConfig.SETTINGS_KEYS,
    }
    read.update({name: channel_class(name).settings_keys for name in CHANNELS})
    return {name: frozenset(keys) for name, keys in read.items()}


@pytest.mark.parametrize(
    ("name", "keys"), [pytest.param(n, k, id=n) for n, k in sorted(keys_read().items())]
)
def test_the_configuration_reference_names_every_key_a_section_reads(
    name: str, keys: frozenset[str]
) -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    (row,) = [line for line in text.splitlines() if line.startswith(f"| `{name}` |")]
    assert sorted(keys - set(re.findall(r"`(\w+)`", row))) == []
