"""Another program reading a SQLite file in a rollback journal (Rasa's default): while its
read transaction lasts, nobody can switch the file to WAL ("database is locked")."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_READER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("CREATE TABLE IF NOT EXISTS other (a)")
conn.execute("BEGIN")
conn.execute("SELECT * FROM other").fetchall()
print("reading", flush=True)
sys.stdin.readline()
"""


@contextmanager
def reading_in_a_rollback_journal(db: Path) -> Iterator[None]:
    """A process with a read transaction open on `db` (made if missing) until the end."""
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "reading\n"
        yield
    finally:
        reader.communicate("done\n", timeout=10)


def open_descriptors(folder: Path) -> list[str]:
    """This process's open descriptors of files in `folder`, by file name."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own)
            continue
        if os.path.dirname(target) == str(folder):
            names.append(os.path.basename(target))
    return sorted(names)
