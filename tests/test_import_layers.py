"""Imports run down the list docs/architecture.md gives: cli.py, then the API and channels,
then auth, training and models, then dialogue, then NLU and brokers, then trackers."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEVELS = {
    "server.api": 2,
    "server.channels": 2,
    "server.auth": 3,
    "server.training": 3,
    "server.models": 3,
    "server.dialogue": 4,
    "server.nlu": 5,
    "server.brokers": 5,
    "server.trackers": 6,
}


def _level(module: str) -> int | None:
    for package, level in LEVELS.items():
        if module == package or module.startswith(f"{package}."):
            return level
    return None


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def test_no_module_imports_a_package_above_its_own() -> None:
    """Before, the conversation's story (dialogue) read entity markup through training's
    NLU file reader, and the NLU pipeline and the policy ensemble took their unknown-option
    warning from training."""
    upward = []
    for path in sorted((ROOT / "server").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        own = _level(module)
        if own is None:
            continue
        for line, imported in _imported(ast.parse(path.read_text(encoding="utf-8"))):
            level = _level(imported)
            if level is not None and level < own:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert upward == []
