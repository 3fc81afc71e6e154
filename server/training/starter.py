"""`botserver init`: a small starter project of our own, copied from package data."""

from __future__ import annotations

import shutil
from pathlib import Path

from server.errors import BotServerError

STARTER_DIR = Path(__file__).with_name("starter_project")


def write_starter_project(target: Path) -> list[Path]:
    """Copies the starter project into `target`; refuses to overwrite existing files."""
    sources = sorted(p for p in STARTER_DIR.rglob("*") if p.is_file() and not _compiled(p))
    clashes = [target / p.relative_to(STARTER_DIR) for p in sources]
    clashes = [p for p in clashes if p.exists()]
    if clashes:
        names = ", ".join(str(p) for p in clashes[:5])
        exist = "already exists" if len(clashes) == 1 else "already exist"
        raise BotServerError(f"{names} {exist}; choose an empty --init-dir")
    written = []
    for source in sources:
        dest = target / source.relative_to(STARTER_DIR)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        written.append(dest)
    return written


def _compiled(path: Path) -> bool:
    """Python's cache of the starter actions: pip compiles every .py file a wheel installs,
    so an installed botserver holds `actions/__pycache__/*.pyc` beside them (not ours to
    copy: `rasa init` writes none, and they name this interpreter's version)."""
    return "__pycache__" in path.relative_to(STARTER_DIR).parts or path.suffix in (".pyc", ".pyo")
