"""Imports run down the list docs/architecture.md gives: cli.py, then the API and channels
(with the two top-level modules only they use), then auth, training and models, then
dialogue, then NLU and brokers, then trackers, then the top-level modules every layer uses."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A top-level module sits by who imports it and what it imports:
# - config.py reads endpoints.yml and credentials.yml (through training's YAML reader) for the
#   server assembly, the channels and cli.py; a store or a broker gets its section as values.
# - logs.py sets up logging (with auth's secret redaction) for cli.py and the API.
# - long_jobs.py is the pool the HTTP API runs trainings and evaluations on.
# - run_flags.py checks `run`'s flag values before cli.py imports the server, and holds the
#   channel names the channel registry builds from.
# - the rest import only one another and are imported from every layer, trackers included:
#   errors, JSON and YAML values, setting values, outgoing HTTP clients and bodies, URLs, outage
#   lines, background tasks, unknown options, worker claims, the AWS clients' shared boto3
#   sessions, the third-party imports skipped (import_trims.py), Rasa's module paths of its
#   components and policies (rasa_paths.py), and the package's version.
LEVELS = {
    "server.api": 2,
    "server.channels": 2,
    "server.config": 2,
    "server.logs": 2,
    "server.long_jobs": 2,
    "server.run_flags": 2,
    "server.auth": 3,
    "server.training": 3,
    "server.models": 3,
    "server.dialogue": 4,
    "server.nlu": 5,
    "server.brokers": 5,
    "server.trackers": 6,
    "server.errors": 7,
    "server.json_values": 7,
    "server.yaml_scalars": 7,
    "server.setting_values": 7,
    "server.http_clients": 7,
    "server.http_bodies": 7,
    "server.urls": 7,
    "server.outages": 7,
    "server.tasks": 7,
    "server.unknown_options": 7,
    "server.worker_claims": 7,
    "server.aws_sessions": 7,
    "server.import_trims": 7,
    "server.rasa_paths": 7,
}
SERVER_PACKAGE = 7  # server/__init__.py: the version numbers


def _level(module: str) -> int | None:
    if module in ("server", "server.__init__"):
        return SERVER_PACKAGE
    for package, level in LEVELS.items():
        if module == package or module.startswith(f"{package}."):
            return level
    return None


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "server":  # `from server import setting_values as settings`
                found.extend((node.lineno, _from_server(alias.name)) for alias in node.names)
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def _from_server(name: str) -> str:
    """A name taken from the package: one of its modules, or what __init__.py defines."""
    is_module = (ROOT / "server" / f"{name}.py").exists() or (ROOT / "server" / name).is_dir()
    return f"server.{name}" if is_module else "server"


def _modules() -> list[tuple[Path, str]]:
    return [
        (path, ".".join(path.relative_to(ROOT).with_suffix("").parts))
        for path in sorted((ROOT / "server").rglob("*.py"))
    ]


def test_no_module_imports_a_package_above_its_own() -> None:
    """Before, the conversation's story (dialogue) read entity markup through training's
    NLU file reader, and the NLU pipeline and the policy ensemble took their unknown-option
    warning from training; and the top-level modules were not checked at all, so a store
    importing server.config, or server.errors importing the API, went unseen."""
    upward = []
    for path, module in _modules():
        own = _level(module)
        if own is None:
            continue  # the next test fails for it
        for line, imported in _imported(ast.parse(path.read_text(encoding="utf-8"))):
            level = _level(imported)
            if level is not None and level < own:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert upward == []


def test_every_module_has_a_place_in_the_order() -> None:
    """A new top-level module (or package) is placed on purpose, not skipped."""
    assert [module for _, module in _modules() if _level(module) is None] == []


def test_a_name_taken_from_the_package_is_read_as_its_module() -> None:
    tree = ast.parse("from server import setting_values as settings, __version__\n")
    assert _imported(tree) == [(1, "server.setting_values"), (1, "server")]
