"""The SQLite store keeps SQLite's locks on the -shm file while it serves.

SQLite locks the -shm file beside a WAL database with POSIX record locks; closing any
descriptor of that file drops every such lock of the process. A store that opened and closed
the file to read the WAL-index header (as it did until this test) dropped SQLite's "in use"
lock: another process opening the database (a second worker, the sqlite3 shell, a backup)
then took the -shm for abandoned and rebuilt it under the serving process's connections.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.trackers.test_sqlite_inline_commits import database_of, sqlite_store
from tests.trackers.test_tracker_stores import session_start, user

# What SQLite's unix VFS does when it opens a -shm file: try to lock its "in use" byte
# (UNIX_SHM_DMS, offset 128) exclusively; it succeeds only if no process has the file open
# through SQLite.
PROBE = """
import fcntl, os, sys
try:
    fd = os.open(sys.argv[1], os.O_RDWR)
except FileNotFoundError:
    sys.exit(print("gone"))
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128, os.SEEK_SET)
except OSError:
    print("in use")
else:
    print("abandoned")
"""


def seen_from_another_process(db: Path) -> str:
    shm = Path(str(db.resolve()) + "-shm")
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(shm)], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


async def test_another_process_sees_the_database_in_use_while_the_store_serves(
    tmp_path: Path,
) -> None:
    db = tmp_path / "served.db"
    store = sqlite_store(db)
    try:
        await store.append("a", session_start(0.0))  # opens the inline connection
        assert database_of(store)._wal_index is not None  # the header is read from the map
        assert seen_from_another_process(db) == "in use"
        await store.append("a", [user("hello", 1.0)])
        assert await store.load("a") == [*session_start(0.0), user("hello", 1.0)]
        assert seen_from_another_process(db) == "in use"
    finally:
        await store.close()
    # Closed: nothing of this process holds the file any more (SQLite's last connection
    # removes it when it can).
    assert seen_from_another_process(db) in ("abandoned", "gone")


async def test_closing_one_of_two_stores_of_a_file_keeps_the_other_ones_locks(
    tmp_path: Path,
) -> None:
    db = tmp_path / "shared.db"
    first, second = sqlite_store(db), sqlite_store(db)
    try:
        await first.append("a", session_start(0.0))
        await second.append("b", session_start(0.0))
        await first.close()
        assert seen_from_another_process(db) == "in use"
        await second.append("b", [user("still here", 1.0)])
        assert await second.load("b") == [*session_start(0.0), user("still here", 1.0)]
    finally:
        await first.close()
        await second.close()
    assert seen_from_another_process(db) in ("abandoned", "gone")
