"""The SQL tracker store's SQLite access: the stdlib driver, appends committed on the event
loop's thread, everything else on one thread of its own.

Appends are group-committed: those of one event loop iteration go in together, in one
transaction, each in a savepoint of its own (one conversation's failure rolls back only its
rows). In WAL mode with synchronous=NORMAL (the default) a commit only writes the new pages
to the WAL file, in the OS page cache, so it runs inline, as Redis writes its AOF: the thread
hop and the GIL hand-offs it saves were most of an append's cost. What may fsync stays on the
store's thread: the checkpoints (the inline connection never checkpoints), a commit that would
start the WAL file afresh (the thread starts it), synchronous=FULL. An inline transaction that
cannot start at once (another connection or process is writing) goes to the thread, which
waits its turn in SQLite's busy handler. The SQL event broker writes through `run` alone: each
batch one hop to a thread of its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import mmap
import operator
import os
import pathlib
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from server.trackers.events import EVENT_TYPES, OFF_LOOP_EVENTS
from server.trackers.session_start import ACTION_SESSION_START
from server.trackers.sql_schema import SESSION_START_WHERE, VERSION_TABLE
from server.trackers.store import RowBudget

T = TypeVar("T")

logger = logging.getLogger(__name__)

Row = tuple[str, str | None, float | None, str | None, str | None, str]

_COLUMNS = "sender_id, type_name, timestamp, intent_name, action_name, data"
# The stdlib driver binds int, float, str and bytearray directly but looks any other value up
# as an adapter first (two failed attribute lookups: 3.3k instructions for a None). intent_name
# and action_name are None in most rows: an append binds _NULL there instead, the integer 0,
# which NULLIF turns into NULL and no text equals (those columns are only ever bound a str or
# _NULL). An integer binds without a copy: a one-byte blob (bytearray) cost 0.8k instructions
# (SQLite copies it, and the driver takes and releases a buffer), an integer 0.2k.
_NULL = 0
_INSERT_ONE = "(?1, ?, ?, NULLIF(?, 0), NULLIF(?, 0), ?)"
# SQLite limits a statement to 32,766 parameters (999 before 3.32): stay far below.
_ROWS_PER_INSERT = 150
# Pages the WAL file may hold before a checkpoint (SQLite's own default, about 4 MB). A
# commit's pages vary with its group (one moodbot append: 5, a group of 40: about 300), so the
# commits between two checkpoints follow from what the last checkpoint found. Appends wait
# only for its last step; 4,000 and 10,000 pages made those waits rarer but longer, and the
# p99 at c=50 no better (docs/benchmarks.md, eleventh round).
CHECKPOINT_FRAMES = 1000
# A checkpoint copies the WAL beside the appends (see SqliteDatabase._checkpoint); if the WAL
# grows past this many times checkpoint_frames meanwhile (a slow disk), appends wait for it.
_WAL_GROWTH_LIMIT = 2
# Passes copying beside the appends; each leaves what was appended during it to the next.
_COPY_PASSES = 2
_SMALL_REMAINDER = 64  # frames: copied with appends held rather than in one more pass
_FIRST_CHECKPOINT_AFTER = 50  # commits
_CHECKPOINT_AFTER_LIMITS = (8, 10_000)  # commits
# What commits without an fsync in WAL mode; FULL and EXTRA sync the WAL at every commit.
_INLINE_SYNCHRONOUS = ("NORMAL", "OFF")


class SqliteDatabase:
    """Rasa's `events` table in one SQLite file: appends inline when they can be, the rest on
    one dedicated thread."""

    def __init__(
        self,
        path: str,
        busy_timeout_ms: int,
        synchronous: str,
        checkpoint_frames: int = CHECKPOINT_FRAMES,
        read_only: bool = False,
        autocheckpoint: bool = True,
        thread_name: str = "sqlite-store",
    ) -> None:
        """`read_only`: the file is opened read-only, its journal mode left as it is (a
        command that reads, as `botserver export`, changes nothing in it).
        `autocheckpoint=False`: the thread's commits never checkpoint (the caller does, with
        `checkpoint` through `run`). `thread_name`: its thread's, as a thread dump shows it."""
        self.path = path
        self.read_only = read_only
        self.checkpoint_frames = checkpoint_frames
        self.checkpoint_after = _FIRST_CHECKPOINT_AFTER  # commits
        self._busy_timeout_ms = busy_timeout_ms
        self._synchronous = synchronous
        self._autocheckpoint = autocheckpoint
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._local = threading.local()
        self._readers = threading.local()
        # Each read-only connection with its cursor (closed first: see close()).
        self._reader_connections: list[tuple[sqlite3.Connection, sqlite3.Cursor]] = []
        self._closed = False
        self._pending: list[_Append] = []  # appends waiting for the thread's next group
        # Conversations with an append pending or under way on the thread: their next append
        # goes there too, so that a conversation's rows keep the order of its appends.
        self._on_thread: collections.Counter[str] = collections.Counter()
        self._flushing: asyncio.Task[None] | None = None
        # The event loop thread's connection (None: appends go to the thread).
        self._inline: sqlite3.Connection | None = None
        # Its one cursor: conn.execute makes a cursor a statement (1.3k instructions, four
        # statements a commit).
        self._inline_cursor: sqlite3.Cursor | None = None
        self._inline_opening: asyncio.Task[None] | None = None
        self._inline_group: list[_Append] = []  # appends of this loop iteration
        self._sequential_ids = False  # see _insert
        self._checkpointing: asyncio.Task[None] | None = None
        # While a checkpoint restarts the WAL, appends wait here (not on the thread: see
        # _checkpoint); while it copies the WAL beside them, _held is None and
        # _checkpoint_token is set.
        self._held: list[_Append] | None = None
        # The store's thread starts the hold: under this lock, against _commit_inline's look
        # at _held; _inline_busy tells it an inline transaction is under way (SQLite releases
        # the GIL inside it), which it lets finish before the held step.
        self._hold_lock = threading.Lock()
        self._inline_busy = False
        self._checkpoint_token: object | None = None  # the checkpoint the loop waits for
        # Connections of the store's thread whose read transactions keep the WAL from being
        # restarted by an inline commit while a checkpoint copies it (see _copy_pinned).
        self._pins: list[sqlite3.Connection] = []
        self._commits_at_restart = 0  # group_commits when the WAL last started afresh
        # For tests and stats: transactions that committed appends (either way), those of
        # them committed inline, groups handed to the thread because SQLite was busy,
        # checkpoints run, the seconds they took and the seconds appends were held by them.
        self.group_commits = 0
        self.inline_commits = 0
        self.busy_fallbacks = 0
        self.checkpoints = 0
        self.checkpoint_seconds = 0.0
        self.held_seconds = 0.0
        # What epoch() reads: the WAL-index header as of the current epoch, and the inline
        # connection's data_version after its last commit.
        self._wal_index: _WalIndex | None = None
        # Every -shm file opened (see _WalIndex), released once the connections are closed.
        self._shm_files: list[_WalIndex] = []
        self._epoch = 0
        self._epoch_header: bytes | None = None
        self._carried = 0  # inline commits carried into an epoch, ever
        self._data_version: int | None = None

    async def run(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `function(connection)` on the store's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, function)

    def _call(self, function: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return function(conn)

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            uri = f"{pathlib.Path(self.path).absolute().as_uri()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            return conn
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_ms / 1000,
            isolation_level=None,
            cached_statements=64,
        )
        try:
            # WAL lets readers in other processes run while one process writes; in WAL mode
            # synchronous=NORMAL never corrupts and survives a process crash.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            if not self._autocheckpoint:
                conn.execute("PRAGMA wal_autocheckpoint=0")
        except BaseException:
            # "database is locked" (WAL cannot be set while another program reads in a
            # rollback journal): the file stayed open, one descriptor more at each attempt.
            conn.close()
            raise
        return conn

    def _reader(self) -> sqlite3.Cursor:
        """This thread's read-only connection's cursor; busy at once rather than waiting.

        One cursor for every read (a cursor a statement cost 1.3k instructions): each read
        takes all its rows, so no statement is left open to hold a snapshot of the WAL."""
        cursor: sqlite3.Cursor | None = getattr(self._readers, "cursor", None)
        if cursor is None:
            if self._closed:
                raise sqlite3.OperationalError("the store is closed")
            uri = f"{pathlib.Path(self.path).absolute().as_uri()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=0")
            cursor = self._readers.cursor = conn.cursor()
            self._reader_connections.append((conn, cursor))
        return cursor

    async def close(self) -> None:
        def close() -> None:
            if inline is not None:  # before the thread's, which checkpoints when last
                # Its cursor first: a failed append's error (a full disk) holds it in a
                # reference cycle until the collector runs, and SQLite keeps a connection
                # with a statement alive open, its file descriptors with it.
                if inline_cursor is not None:
                    inline_cursor.close()
                inline.close()
            for pin in self._pins:
                pin.close()
            conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
            if conn is not None:
                conn.close()
                self._local.conn = None

        if self._closed:
            return
        while True:  # what is under way may start more (a fallback, a checkpoint)
            busy = [
                asyncio.shield(task)
                for task in (self._inline_opening, self._checkpointing, self._flushing)
                if task is not None and not task.done()
            ] + [asyncio.shield(append.future) for append in self._inline_group]
            if not busy:
                break
            await asyncio.gather(*busy, return_exceptions=True)
        self._closed = True
        self._wal_index = None
        inline, self._inline = self._inline, None
        inline_cursor, self._inline_cursor = self._inline_cursor, None
        for reader, reader_cursor in self._reader_connections:
            # sqlite3 refuses to close another thread's connection; those end with the process.
            with contextlib.suppress(sqlite3.ProgrammingError):
                # Its cursor first: one whose last read failed (a damaged file) keeps its
                # statement, and SQLite the connection open with it (four descriptors).
                reader_cursor.close()
                reader.close()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, close)
        finally:
            self._executor.shutdown(wait=False)
            # After the connections (see _WalIndex); other threads' readers end with the
            # process, unused.
            for shm_file in self._shm_files:
                shm_file.release()
            self._shm_files.clear()

    # -- operations (each one hop to the thread, or none) -----------------------------------

    async def ping(self) -> None:
        await self.run(lambda conn: conn.execute("SELECT 1").fetchall())

    def epoch(self) -> int | None:
        """A number that stays the same while no connection but this store's inline one
        commits to the file (another process, this store's thread, another store): what was
        read at an epoch, and kept up with this store's appends since, is still what the file
        holds while it lasts. None: cannot tell (no WAL index to read, a writer mid-way).

        No SQL: SQLite's WAL-index header, which every commit rewrites, compared with the one
        of the current epoch; the inline commits carry the epoch forward (see _commit_inline)."""
        wal_index = self._wal_index
        if wal_index is None:
            return None
        header = wal_index.header()
        if header is None:
            return None
        if header != self._epoch_header:
            self._epoch_header = header
            self._epoch += 1
        return self._epoch

    def read_mark(self) -> tuple[int, int] | None:
        """The epoch and the inline commits carried into it so far: a read between two
        equal marks saw the rows of that epoch, as nobody (this store included) committed
        meanwhile. None: cannot tell."""
        epoch = self.epoch()
        return None if epoch is None else (epoch, self._carried)

    async def insert(
        self, sender_id: str, rows: Sequence[Row], known: tuple[int | None, int] | None = None
    ) -> _AppendResult:
        """Appends rows atomically (all or none): the conversation's last row id before, the
        (id, data) of each new row, in order, and the epoch (see epoch()) at which these are
        the conversation's last rows (None: unknown). Committed with the other appends of this
        event loop iteration, inline when it can be, else on the store's thread.

        `known`: (last row id, epoch) when the caller read or wrote the conversation's last
        row at that epoch and has no other append of it under way; while the epoch lasts, the
        last row id needs no SELECT."""
        if self._inline_opening is None:
            self._inline_opening = asyncio.get_running_loop().create_task(self._open_inline())
        if not self._inline_opening.done():
            await asyncio.shield(self._inline_opening)
        loop = asyncio.get_running_loop()
        append = _Append(sender_id, rows, loop.create_future(), known)
        # An append of more rows (a bulk POST of tracker events) goes to the store's thread:
        # 100,000 rows are about 0.17 s of inserts that would hold the event loop.
        if self._inline is None or sender_id in self._on_thread or len(rows) > OFF_LOOP_EVENTS:
            self._to_thread([append])
        elif self._held is not None:
            self._held.append(append)
        else:
            self._inline_group.append(append)
            if len(self._inline_group) == 1:
                loop.call_soon(self._commit_inline)
        return await append.future

    def _to_thread(self, appends: list[_Append]) -> None:
        self._pending.extend(appends)
        self._on_thread.update(append.sender_id for append in appends)
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _open_inline(self) -> None:
        """Opens the inline connection when commits need no fsync (WAL, synchronous=NORMAL)."""
        try:
            self._sequential_ids = await self.run(_ids_sequential)
            if self._synchronous.upper() not in _INLINE_SYNCHRONOUS:
                return
            inline = await self.run(self._connect_inline)
            if inline is not None:
                self._inline_cursor = inline.cursor()
            self._inline = inline
        except sqlite3.Error as error:  # the appends will report it from the thread
            logger.debug("SQLite appends stay on the store's thread for now: %s", error)
            self._inline_opening = None  # the next append tries again

    def _connect_inline(self, conn: sqlite3.Connection) -> sqlite3.Connection | None:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() != "wal":
            return None
        wal_index = _WalIndex.open(self.path)
        if wal_index is not None:
            self._shm_files.append(wal_index)  # kept open while the connections are
            if not wal_index.mapped:
                wal_index = None
        inline = sqlite3.connect(
            self.path,
            timeout=0,
            isolation_level=None,
            cached_statements=64,
            check_same_thread=False,  # opened here, used on the event loop's thread only
        )
        try:
            inline.execute("PRAGMA busy_timeout=0")
            inline.execute(f"PRAGMA synchronous={self._synchronous}")
            # Checkpoints (they fsync the database file) only on this thread, when we say so.
            inline.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            before = wal_index.header() if wal_index is not None else None
            _start_wal(conn)
            # The mapped header must be the one SQLite rewrites (the same file, not a copy).
            if wal_index is not None and (before is None or wal_index.header() in (None, before)):
                logger.debug("%s: WAL index not usable, every turn reads", self.path)
                wal_index = None
        except BaseException:
            inline.close()
            conn.execute("PRAGMA wal_autocheckpoint=1000")
            raise
        self._wal_index = wal_index
        return inline

    def _commit_inline(self) -> None:
        """Commits this iteration's appends on the loop's thread; busy: hands them over."""
        group, self._inline_group = self._inline_group, []
        with self._hold_lock:
            copying = self._checkpoint_token is not None and self._held is None
            if copying and self._wal_outgrown():
                self._held = []  # the checkpoint copies the rest with the appends held
            if self._held is not None:  # a checkpoint started since these were grouped
                self._held.extend(group)
                return
            self._inline_busy = True
        try:
            self._commit_group_inline(group)
        finally:
            self._inline_busy = False

    def _commit_group_inline(self, group: list[_Append]) -> None:
        conn, cursor = self._inline, self._inline_cursor
        if conn is None or cursor is None:
            self._to_thread(group)
            return
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:  # nothing written: the thread waits out a writer, or says why
            self.busy_fallbacks += 1
            self._to_thread(group)
            return
        wal_index = self._wal_index
        try:
            # Stable while this transaction holds the write lock: no commit since the epoch's
            # header was read if they are the same.
            started = wal_index.header() if wal_index is not None else None
            current = (
                started is not None and started == self._epoch_header and not _any_settled(group)
            )
            epoch = self._epoch if current else None
            outcomes = _appends(conn, group, self._sequential_ids, epoch, cursor)
            cursor.execute("COMMIT")
        except BaseException as error:  # nothing of the group committed
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            for append in group:
                _settle(append.future, error)
            if not isinstance(error, Exception):
                raise
            return
        self.inline_commits += 1
        epoch = None
        if wal_index is not None and started is not None:
            epoch = self._carry_epoch(cursor, wal_index, started, group)
        self._committed()
        for append, outcome in zip(group, outcomes, strict=True):
            _settle(append.future, outcome if isinstance(outcome, Exception) else (*outcome, epoch))

    def _carry_epoch(
        self,
        cursor: sqlite3.Cursor,
        wal_index: _WalIndex,
        started: bytes | None,
        group: Sequence[_Append],
    ) -> int | None:
        """After an inline commit (or the WAL restart made through the inline connection,
        with no appends): the epoch goes on (its header becomes this commit's) when
        this commit is the only one since the epoch's header was read, and every append of
        it has a caller waiting to bring its cache up to date (one cancelled meanwhile would
        leave its conversation's cache behind). The header read after COMMIT may include
        another connection's commit made in between: data_version, which only other
        connections' commits change, tells (one statement per group, not per turn)."""
        header = wal_index.header()
        (version,) = cursor.execute("PRAGMA data_version").fetchone()
        previous_version, self._data_version = self._data_version, version
        if (
            started != self._epoch_header
            or version != previous_version
            or header is None
            or _any_settled(group)
        ):
            return None  # the next epoch() starts a new epoch
        self._epoch_header = header
        self._carried += 1
        return self._epoch

    def _committed(self) -> None:
        """Counts a commit; after `checkpoint_after` of them, checkpoints on the thread."""
        self.group_commits += 1
        if (
            self.group_commits - self._commits_at_restart >= self.checkpoint_after
            and self._inline is not None
            and self._checkpointing is None
        ):
            self._checkpointing = asyncio.get_running_loop().create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        """Copies the WAL into the database file and starts the WAL afresh, in two steps.

        First, beside the appends: a read transaction pins the WAL (no inline commit restarts
        it, which would fsync its header on the loop) and a PASSIVE checkpoint copies it up
        to the pinned frame, then once more what was appended meanwhile. Then, appends held
        (an inline commit into a wholly copied WAL would restart it itself): the thread copies
        the rest, a few frames, and starts the WAL afresh; the held appends then commit
        inline, as one group (on the thread they would hold SQLite's write lock, so the next
        inline groups would find it busy and follow them there, one hop each). Holding the
        appends for the whole copy made every turn in flight wait for it: 13 ms per
        checkpoint at c=50 (1,000 frames), now about 5 ms in process. Both steps run in one
        call on the thread (_checkpoint_steps), which starts the hold itself.

        The thread starts the WAL afresh through the inline connection (unused while appends
        are held): a commit by another connection would make it drop its page cache, and
        start a new epoch, after which every cached session reads again; that made the turns
        of the 20 ms after each checkpoint ~20 % slower (c=50)."""
        started = time.perf_counter()
        inline, cursor, wal_index = self._inline, self._inline_cursor, self._wal_index
        token = self._checkpoint_token = object()
        try:
            frames, before, held_at, commits_at = await self.run(
                functools.partial(self._checkpoint_steps, token, inline)
            )
            # The commits whose frames the WAL held (those of the first step included).
            commits, self._commits_at_restart = commits_at - self._commits_at_restart, commits_at
            if cursor is not None and wal_index is not None:
                # The restart commit writes no rows: an inline commit with no appends.
                self._carry_epoch(cursor, wal_index, before, ())
            self.checkpoints += 1
            self.checkpoint_seconds += time.perf_counter() - started
            self.held_seconds += time.perf_counter() - held_at
            low, high = _CHECKPOINT_AFTER_LIMITS
            if frames > 0:
                self.checkpoint_after = max(
                    low, min(high, commits * self.checkpoint_frames // frames)
                )
        except sqlite3.Error as error:  # the next one will try again
            logger.warning("SQLite checkpoint of %s failed: %s", self.path, error)
            self._commits_at_restart = self.group_commits  # not at the next commit
        finally:
            with self._hold_lock:  # a thread still under way (cancelled) holds nothing now
                self._checkpoint_token = None
                held, self._held = self._held, None
            self._checkpointing = None
            if any(pin.in_transaction for pin in self._pins):  # the finish did not run
                self._executor.submit(self._unpin)
            if held:  # before the appends grouped since, if any (their commit is scheduled)
                if not self._inline_group:
                    asyncio.get_running_loop().call_soon(self._commit_inline)
                self._inline_group[:0] = held

    def _checkpoint_steps(
        self, token: object, inline: sqlite3.Connection | None, conn: sqlite3.Connection
    ) -> tuple[int, bytes | None, float, int]:
        """Both steps, on the store's thread, with no trip through the loop between them
        (under load each trip waits for a loop iteration's worth of turns: 7-25 ms with
        unique texts at c=50). Returns the WAL's frames, the WAL-index header as the hold
        began, when it began and group_commits then."""
        wal_index = self._wal_index
        if inline is not None and wal_index is not None:
            try:
                for step in range(_COPY_PASSES):
                    copied = self._copy_pinned(step % 2, conn)
                    header = wal_index.header()
                    if (
                        self._held is not None  # the WAL outgrew its limit meanwhile
                        or header is None
                        or _WalIndex.frames(header) - copied <= _SMALL_REMAINDER
                    ):
                        break
            except sqlite3.Error as error:  # the held step copies it all
                logger.debug("SQLite checkpoint of %s: copy beside appends: %s", self.path, error)
        with self._hold_lock:
            abandoned = self._checkpoint_token is not token  # the loop stopped waiting
            if not abandoned and self._held is None:
                self._held = []
        if abandoned:
            self._unpin()
            raise sqlite3.OperationalError("checkpoint abandoned")
        while self._inline_busy:  # an inline commit already under way ends first
            time.sleep(0.0001)
        held_at = time.perf_counter()
        commits_at = self.group_commits
        before = wal_index.header() if wal_index is not None else None
        return self._finish_checkpoint(inline, conn), before, held_at, commits_at

    def _copy_pinned(self, pin_index: int, conn: sqlite3.Connection) -> int:
        """Starts a read transaction on pin `pin_index` (the WAL's frames up to now are
        then in use, so no writer restarts the WAL), ends the other pin's, and copies the WAL
        up to the pinned frame. Returns the frames copied so far (nBackfill).

        A read transaction that starts while the WAL is wholly copied would not pin it (it
        reads the database file alone): the caller pins again only when frames are left."""
        while len(self._pins) <= pin_index:
            self._pins.append(sqlite3.connect(self.path, timeout=0, isolation_level=None))
        pin = self._pins[pin_index]
        pin.execute("BEGIN")
        pin.execute("PRAGMA schema_version").fetchone()  # the read transaction starts here
        self._unpin(keep=pin)
        _busy, _frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return max(0, int(copied))

    def _unpin(self, keep: sqlite3.Connection | None = None) -> None:
        for pin in self._pins:
            if pin is not keep and pin.in_transaction:
                pin.execute("COMMIT")

    def _finish_checkpoint(
        self, inline: sqlite3.Connection | None, conn: sqlite3.Connection
    ) -> int:
        """The held step: unpins, copies the rest and starts the WAL afresh (_checkpoint)."""
        self._unpin()
        return _checkpoint(conn, restart_with=inline)

    def _wal_outgrown(self) -> bool:
        wal_index = self._wal_index
        header = wal_index.header() if wal_index is not None else None
        return header is not None and (
            _WalIndex.frames(header) > _WAL_GROWTH_LIMIT * self.checkpoint_frames
        )

    async def _flush(self) -> None:
        """Commits the pending appends, a group at a time, until none is left."""
        try:
            while self._pending:
                group, self._pending = self._pending, []
                try:
                    outcomes = await self.run(
                        functools.partial(_commit_group, group, self._sequential_ids)
                    )
                except BaseException as error:  # nothing of the group committed
                    self._thread_done(group, [error] * len(group))
                    if not isinstance(error, Exception):
                        raise
                    continue
                self._committed()
                self._thread_done(group, outcomes)
        finally:
            self._flushing = None
            for append in self._pending:  # only when the loop is going away
                _settle(append.future, sqlite3.OperationalError("the store is closing"))
            self._pending = []
            self._on_thread.clear()

    def _thread_done(self, group: list[_Append], outcomes: Sequence[Any]) -> None:
        for append, outcome in zip(group, outcomes, strict=True):
            left = self._on_thread[append.sender_id] - 1
            if left > 0:
                self._on_thread[append.sender_id] = left
            else:
                del self._on_thread[append.sender_id]
            # Another connection's commit: the next epoch() starts a new epoch.
            _settle(
                append.future,
                outcome if isinstance(outcome, BaseException) else (*outcome, None),
            )

    async def replace(self, sender_id: str, rows: Sequence[Row]) -> None:
        def replace(conn: sqlite3.Connection) -> None:
            # The new rows first: their ids are above the old ones even where SQLite may
            # reuse ids (no AUTOINCREMENT), so a cache of the conversation in another process
            # cannot take a new row for the last one it saw.
            (last,) = conn.execute(_LAST_ID, (sender_id,)).fetchone()
            if rows:
                _insert(conn, rows, self._sequential_ids)
            if last is not None:
                conn.execute(
                    "DELETE FROM events WHERE sender_id = ? AND id <= ?", (sender_id, last)
                )

        await self.run(lambda conn: write_transaction(conn, lambda: replace(conn)))

    async def delete_senders(self, sender_ids: Sequence[str]) -> None:
        marks = ", ".join("?" * len(sender_ids))
        sql = f"DELETE FROM events WHERE sender_id IN ({marks})"
        await self.run(
            lambda conn: write_transaction(conn, lambda: conn.execute(sql, tuple(sender_ids)))
        )

    async def delete_stale(self, sender_ids: Sequence[str], cutoff_timestamp: float) -> int:
        """Deletes those of `sender_ids` whose newest event is still older than the cutoff;
        the look and the delete are one write transaction, which no append can enter."""
        marks = ", ".join("?" * len(sender_ids))
        look = (
            f"SELECT sender_id FROM events WHERE sender_id IN ({marks}) "
            "GROUP BY sender_id HAVING max(timestamp) < ?"
        )

        def delete_stale(conn: sqlite3.Connection) -> int:
            stale = [row[0] for row in conn.execute(look, (*sender_ids, cutoff_timestamp))]
            if stale:
                sql = f"DELETE FROM events WHERE sender_id IN ({', '.join('?' * len(stale))})"
                conn.execute(sql, stale)
            return len(stale)

        return await self.run(lambda conn: write_transaction(conn, lambda: delete_stale(conn)))

    async def rows_from(self, sender_id: str, first_id: int) -> list[tuple[int, str]]:
        """(id, data) of the conversation's rows with id >= first_id, in order.

        This is the read of every turn on a cached session: a few index-seeked rows, read
        on the caller's thread from a WAL snapshot, which waits for no writer. Should SQLite
        still answer busy (a checkpoint being reset), the read goes to the store's thread.
        """
        sql = "SELECT id, data FROM events WHERE sender_id = ? AND id >= ? ORDER BY id"
        try:
            rows: list[tuple[int, str]] = (
                self._reader().execute(sql, (sender_id, first_id)).fetchall()
            )
            return rows
        except sqlite3.OperationalError:
            return await self.run(lambda conn: conn.execute(sql, (sender_id, first_id)).fetchall())

    async def session_rows(self, sender_id: str) -> list[tuple[int, str]]:
        """(id, data) of the current session's rows, in order.

        A conversation without rows (every new one: a quarter of the benchmark's turns) is
        answered on the caller's thread, from a WAL snapshot, with one index seek, as in
        rows_from; a session's rows, which may be many, are read on the store's thread.
        """
        try:
            (last,) = self._reader().execute(_LAST_ID, (sender_id,)).fetchone()
            if last is None:
                return []
        except sqlite3.OperationalError:
            pass  # the thread answers
        return await self.run(lambda conn: _session_rows(conn, sender_id))

    async def all_data(self, sender_id: str) -> list[str]:
        sql = "SELECT data FROM events WHERE sender_id = ? ORDER BY id"
        # Taken out of the rows on the store's thread: 100,000 rows gone through and freed on
        # the event loop held it 7-10 ms at every read of a whole conversation.
        return await self.run(lambda conn: [row[0] for row in conn.execute(sql, (sender_id,))])

    async def all_data_of(
        self, sender_ids: Sequence[str], max_bytes: int | None = None
    ) -> tuple[list[tuple[str, str]], bool]:
        marks = ", ".join("?" * len(sender_ids))
        sql = (
            f"SELECT sender_id, data FROM events WHERE sender_id IN ({marks}) "
            "ORDER BY sender_id, id"  # (ix_events_sender_id_id's order: no sort)
        )

        def read(conn: sqlite3.Connection) -> tuple[list[tuple[str, str]], bool]:
            budget = RowBudget(max_bytes)
            cursor = conn.execute(sql, tuple(sender_ids))
            try:
                for sender_id, data in cursor:  # (a row at a time: no round trip to save)
                    if not budget.take(sender_id, data):
                        return budget.rows, False
                return budget.rows, True
            finally:
                cursor.close()

        return await self.run(read)

    async def events_schema(self) -> tuple[set[str] | None, str | None]:
        """The `events` table's columns (None: no such table) and the schema's revision
        (None: never migrated by botserver), read without writing."""

        def read(conn: sqlite3.Connection) -> tuple[set[str] | None, str | None]:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
            if not columns:
                return None, None
            versions = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)
            ).fetchone()
            if versions is None:
                return columns, None
            row = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
            return columns, None if row is None else row[0]

        return await self.run(read)

    async def senders(self) -> list[str]:
        rows = await self.run(
            lambda conn: conn.execute("SELECT DISTINCT sender_id FROM events").fetchall()
        )
        return [row[0] for row in rows]

    async def senders_older_than(
        self, cutoff_timestamp: float, after: str | None, limit: int
    ) -> list[str]:
        """Up to `limit` stale senders above `after` (None: from the first), in order
        (through ix_events_sender_id_id)."""
        above = "" if after is None else "WHERE sender_id > ? "
        sql = (
            f"SELECT sender_id FROM events {above}GROUP BY sender_id "
            "HAVING max(timestamp) < ? ORDER BY sender_id LIMIT ?"
        )
        args = (cutoff_timestamp, limit) if after is None else (after, cutoff_timestamp, limit)
        rows = await self.run(lambda conn: conn.execute(sql, args).fetchall())
        return [row[0] for row in rows]


def write_transaction(conn: sqlite3.Connection, body: Callable[[], T]) -> T:
    """`body` in one write transaction (taken at once, so it never upgrades and deadlocks),
    rolled back if it or its COMMIT fails, and the error raised is theirs. SQLite may have
    rolled it back already (a full disk met while the pages of a large transaction go to the
    WAL file: a ROLLBACK then failed with "cannot rollback - no transaction is active", said
    in its place); a COMMIT that fails may leave it open (the next BEGIN failed with "cannot
    start a transaction within a transaction", the write lock kept meanwhile)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return result


def _checkpoint(conn: sqlite3.Connection, restart_with: sqlite3.Connection | None = None) -> int:
    """Copies the WAL into the database file; when all of it was, starts the WAL afresh
    (through `restart_with` when given and SQLite's write lock is free at once, else through
    `conn`, which waits for it). Returns how many pages the WAL held."""
    busy, wal_frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if not busy and wal_frames == copied:
        try:
            _start_wal(restart_with or conn)
        except sqlite3.OperationalError:  # busy (restart_with does not wait): conn waits
            if restart_with is None:
                raise
            _start_wal(conn)
    return max(0, int(wal_frames))


def checkpoint(conn: sqlite3.Connection) -> int:
    """A checkpoint by another writer of the file (the SQL event broker's connection of its
    own): copies the WAL and, when all of it was, starts it afresh with a commit of its own,
    so the fsync of the fresh WAL's header is not left to the next writer's commit (a
    tracker store's on the event loop). Returns how many pages the WAL held."""
    return _checkpoint(conn)


def _start_wal(conn: sqlite3.Connection) -> None:
    """The first commit into an empty or fully checkpointed WAL rewrites its header and
    fsyncs it: this thread does that commit (a page-1 write that changes nothing), so that
    the inline commits after it only add frames."""

    def rewrite_version() -> None:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        conn.execute(f"PRAGMA user_version={int(version)}")

    write_transaction(conn, rewrite_version)


class _Append:
    __slots__ = ("sender_id", "rows", "future", "known")

    def __init__(
        self,
        sender_id: str,
        rows: Sequence[Row],
        future: asyncio.Future[_AppendResult],
        known: tuple[int | None, int] | None = None,
    ) -> None:
        self.sender_id, self.rows, self.future, self.known = sender_id, rows, future, known


# The conversation's last row id before, the new rows' (id, data), the epoch of the commit.
_AppendResult = tuple[int | None, list[tuple[int, str]], int | None]
_Written = tuple[int | None, list[tuple[int, str]]]


def _commit_group(
    group: Sequence[_Append], sequential_ids: bool, conn: sqlite3.Connection
) -> list[_Written | Exception]:
    return write_transaction(conn, lambda: _appends(conn, group, sequential_ids))


def _appends(
    conn: sqlite3.Connection,
    group: Sequence[_Append],
    sequential_ids: bool,
    epoch: int | None = None,
    cursor: sqlite3.Cursor | None = None,
) -> list[_Written | Exception]:
    """Each append all or nothing, inside the caller's transaction: one INSERT statement is
    (SQLite undoes a failed statement's rows and keeps the transaction; a shape's statement
    can only fail on its first row, see _shape_sql), longer appends take
    a savepoint each (SAVEPOINT and RELEASE cost 11k instructions, a tenth of an append).
    `epoch`: the transaction started in it (nobody else committed since, no append of the
    group was cancelled), so an append's `known` last row id of that epoch holds. `cursor`:
    the connection's cursor to run them with (default: one for the group)."""
    if cursor is None:
        own = conn.cursor()
        try:
            return _appends(conn, group, sequential_ids, epoch, own)
        except BaseException:
            # The error's traceback holds this cursor, in a reference cycle through the
            # group's futures until the collector runs: its statement would keep the
            # connection open (file descriptors included) after the store's close.
            own.close()
            raise
    outcomes: list[_Written | Exception] = []
    for append in group:
        savepoint = len(append.rows) > _ROWS_PER_INSERT
        if savepoint:
            cursor.execute("SAVEPOINT append")
        changes = conn.total_changes
        try:
            known = append.known
            if known is not None and known[1] == epoch:
                previous = known[0]
            else:
                (previous,) = cursor.execute(_LAST_ID, (append.sender_id,)).fetchone()
            outcomes.append((_int_or_none(previous), _insert(cursor, append.rows, sequential_ids)))
        except sqlite3.OperationalError:
            raise  # locked, disk full, I/O: the whole transaction fails
        except Exception as error:  # this append's rows only
            if savepoint:
                cursor.execute("ROLLBACK TO append")
            elif conn.total_changes != changes or not conn.in_transaction:
                raise  # rows written before the error, or the transaction gone: all fail
            outcomes.append(error)
        if savepoint:
            cursor.execute("RELEASE append")
    return outcomes


def _any_settled(group: Sequence[_Append]) -> bool:
    """Whether an append of `group` has its outcome already (its caller was cancelled). A
    loop, not `any()` of a generator: a generator object and its frame at every commit."""
    for append in group:
        if append.future.done():
            return True
    return False


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():  # its caller was cancelled: the outcome is the store's alone
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _insert(
    conn: sqlite3.Connection | sqlite3.Cursor, rows: Sequence[Row], sequential_ids: bool = False
) -> list[tuple[int, str]]:
    """Inserts the rows, all of one conversation: (id, data) of each. `sequential_ids`: one
    INSERT's rows get consecutive ids (see _ids_sequential), and the last one tells them all;
    RETURNING cost 12 us of an append's 69 (5 moodbot rows)."""
    out: list[tuple[int, str]] = []
    sender = rows[0][0] if rows else ""
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        sql = None
        if len(chunk) <= _SHAPED_ROWS:
            # A turn's append binds only what varies: the sender once (`?1` of every row:
            # SQLite copies each text it is bound, 0.8k instructions for a sender id), each
            # row's timestamp, JSON and the names it has. Its type names and missing names
            # are literals of a statement made for the append's shape (see _shape_sql).
            params: list[Any] = [sender]
            shape: list[Any] = []
            for sender_id, type_name, timestamp, intent_name, action_name, data in chunk:
                if sender_id != sender:
                    raise ValueError("an append's rows are all of one conversation")
                if intent_name is None:
                    if action_name is None:
                        params += (timestamp, data)
                        shape.append(type_name)
                    else:
                        params += (timestamp, action_name, data)
                        shape += (type_name, _NAMED_ACTION)
                elif action_name is None:
                    params += (timestamp, intent_name, data)
                    shape += (type_name, _NAMED_INTENT)
                else:
                    params += (timestamp, intent_name, action_name, data)
                    shape += (type_name, _NAMED_BOTH)
            key = tuple(shape)
            sql = _SHAPES.get(key) or _shape_sql(key)
        if sql is None:  # a bulk append's chunk, or a shape not kept
            sql, params = _bound_insert(sender, chunk)
        ids: Sequence[int]
        if sequential_ids:
            last = conn.execute(sql, params).lastrowid
            if last is None:
                raise sqlite3.DatabaseError("INSERT returned no row id")
            ids = range(last - len(chunk) + 1, last + 1)
        else:
            # SQLite may pick random ids once the largest possible one is taken.
            # RETURNING's order is unspecified; rowids are handed out in the order of VALUES.
            ids = sorted(row[0] for row in conn.execute(f"{sql} RETURNING id", params))
        out.extend(zip(ids, map(_DATA, chunk), strict=True))
    return out


# A row's JSON (its last column), taken without a Python frame per append.
_DATA = operator.itemgetter(5)

# Statements by shape: an append of up to _SHAPED_ROWS rows whose type names are Rasa's
# event types gets an INSERT of its own, with the type names and the NULL of each missing
# name written in it; binding them cost some 2k instructions a row (a text copied, the
# integer marker and its NULLIF: docs/benchmarks.md, twenty-fourth round). A bot's turns have
# a few shapes; past _SHAPES_KEPT (a process's, every database's) the others bind every
# column, so the connections' statement caches (64) are not churned.
_SHAPED_ROWS = 16
_SHAPES_KEPT = 32
_SHAPES: dict[tuple[Any, ...], str] = {}
# After a row's type name in a shape: which of its names it binds (none: no marker).
_NAMED_ACTION, _NAMED_INTENT, _NAMED_BOTH = object(), object(), object()
_NAMED_SQL = {
    _NAMED_ACTION: "NULL, ?",
    _NAMED_INTENT: "?, NULL",
    _NAMED_BOTH: "?, ?",
}
# Written into statements as literals: identifiers only (no quote can be among them).
_LITERAL_TYPES = frozenset(name for name in EVENT_TYPES if name.isidentifier() and name.isascii())


def _shape_sql(shape: tuple[Any, ...]) -> str | None:
    """The INSERT of a shape (a type name per row, each followed by the marker of the names it
    binds, if any), kept in _SHAPES; None when it may not be (a type name that is not one
    of Rasa's events, or _SHAPES_KEPT shapes kept already).

    `OR FAIL`: no constraint of such a statement can fail but on its first row (the sender,
    `?1`, NOT NULL; the type names are literals), so it needs no statement journal, which an
    INSERT of several rows that may abort keeps inside a transaction: SQLite copied there each
    page the group's earlier appends had changed before this one changed it (4.5k
    instructions an append in a group of 40). A constraint error leaves no row written, the
    append fails alone; an I/O error or a full disk rolls the whole transaction back (as it
    did: _appends fails the group), and any error after a row was written fails the group
    (_appends), so an append is still all or nothing."""
    if len(_SHAPES) >= _SHAPES_KEPT:
        return None
    values: list[str] = []
    for part in shape:
        names = _NAMED_SQL.get(part) if type(part) is object else None
        if names is not None:
            values[-1] = values[-1].replace("NULL, NULL", names)
        elif part in _LITERAL_TYPES:
            values.append(f"(?1, '{part}', ?, NULL, NULL, ?)")
        else:
            return None
    sql = _SHAPES[shape] = f"INSERT OR FAIL INTO events ({_COLUMNS}) VALUES {', '.join(values)}"
    return sql


def _bound_insert(sender: str, chunk: Sequence[Row]) -> tuple[str, list[Any]]:
    """The INSERT of `chunk` with every column bound (but the sender, `?1` of every row),
    one statement per number of rows, and its parameters."""
    sql = _INSERT_SQL.get(len(chunk)) or _insert_sql(len(chunk))
    params: list[Any] = [sender]
    for sender_id, type_name, timestamp, intent_name, action_name, data in chunk:
        if sender_id != sender:
            raise ValueError("an append's rows are all of one conversation")
        params += (
            type_name,
            timestamp,
            _NULL if intent_name is None else intent_name,
            _NULL if action_name is None else action_name,
            data,
        )
    return sql, params


_INSERT_SQL: dict[int, str] = {}


def _insert_sql(rows: int) -> str:
    """The INSERT of `rows` rows of one sender, built once per number of rows: the sender is
    parameter 1 in every row, the other columns unnumbered (`?` after `?1` takes the next
    number: 2 to 6 in the first row, 7 to 11 in the second...)."""
    values = ", ".join([_INSERT_ONE] * rows)
    sql = _INSERT_SQL[rows] = f"INSERT INTO events ({_COLUMNS}) VALUES {values}"
    return sql


class _WalIndex:
    """SQLite's WAL-index header, the first 96 bytes of the -shm file beside a WAL database:
    two copies of the same 48 bytes, which every commit rewrites (mxFrame, the salts and a
    checksum change), the second copy first (https://www.sqlite.org/walformat.html). Read
    through a read-only map, it tells without a statement whether anyone committed.

    SQLite locks the -shm file with POSIX record locks, and closing any descriptor of a file
    drops every such lock the process holds on it: SQLite's "in use" lock, without which
    another process opening the database takes the -shm as abandoned and rebuilds it under
    this one's connections, and its WAL read locks, without which another process may start
    the WAL afresh under a reader. So the file is opened once per process (one descriptor,
    one map, shared by the stores of that file) and closed only by the last store to
    release it, after its connections closed. A read past the end of the map cannot happen:
    SQLite truncates the file to 3 bytes at the least, within the map's page, and only once
    no connection has it open."""

    SIZE = 136  # the header's two copies and the checkpoint information after them
    # (st_dev, st_ino) of a -shm file -> its descriptor and map, and the stores using them
    _files: ClassVar[dict[tuple[int, int], _ShmFile]] = {}
    _files_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, key: tuple[int, int], mapped: mmap.mmap | None) -> None:
        self._key = key
        self._map = mapped
        self._released = False

    @classmethod
    def open(cls, database: str) -> _WalIndex | None:
        """The database's -shm file (SQLite names it after the resolved path), mapped when it
        holds a header; None when it cannot be opened. Release it with release()."""
        path = os.path.realpath(database) + "-shm"
        with cls._files_lock:
            try:
                info = os.stat(path)  # no descriptor to close if this store is not the first
                key = (info.st_dev, info.st_ino)
                shm = cls._files.get(key)
                if shm is None:
                    shm = cls._files[key] = _ShmFile(os.open(path, os.O_RDONLY))
            except OSError:
                return None
            if shm.map is None:
                with contextlib.suppress(OSError, ValueError):
                    if os.fstat(shm.descriptor).st_size >= cls.SIZE:
                        shm.map = mmap.mmap(shm.descriptor, cls.SIZE, access=mmap.ACCESS_READ)
            shm.users += 1
            return cls(key, shm.map)

    @property
    def mapped(self) -> bool:
        return self._map is not None

    def header(self) -> bytes | None:
        """The header; None while a commit is rewriting it (the copies differ, read in the
        order SQLite's readers read them), before it was first written (isInit), or when the
        file could not be mapped."""
        mapped = self._map
        if mapped is None:
            return None
        first = mapped[0:48]
        if first != mapped[48:96] or first[12] != 1:
            return None
        return first

    @staticmethod
    def frames(header: bytes) -> int:
        """mxFrame: the WAL's frames (valid ones) as of this header, in native byte order."""
        return int.from_bytes(header[16:20], sys.byteorder)

    def release(self) -> None:
        """This store is done with the file (its connections are closed); the last store of
        the process to release it closes it."""
        with self._files_lock:
            if self._released:
                return
            self._released = True
            self._map = None
            shm = self._files.get(self._key)
            if shm is None:
                return
            shm.users -= 1
            if shm.users > 0:
                return
            del self._files[self._key]
        if shm.map is not None:
            shm.map.close()
        os.close(shm.descriptor)


class _ShmFile:
    """A -shm file's descriptor and map in this process, and how many stores use them."""

    __slots__ = ("descriptor", "map", "users")

    def __init__(self, descriptor: int) -> None:
        self.descriptor = descriptor
        self.map: mmap.mmap | None = None
        self.users = 0


# Below this largest id, an INSERT's rows get consecutive ids without AUTOINCREMENT too.
_SEQUENTIAL_IDS_BELOW = 2**62


def _ids_sequential(conn: sqlite3.Connection) -> bool:
    """Whether one INSERT's rows get consecutive ids: with AUTOINCREMENT (a table an earlier
    botserver made that revision 0006 could not change) always; without (every other), each
    row gets the largest id + 1 until the largest is 2^63 - 1, after which SQLite picks
    unused ids at random. Neither Rasa nor botserver writes an id: from below 2^62 the
    table would need 2^62 more rows to get there."""
    row = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'"
    ).fetchone()
    if row is not None and "AUTOINCREMENT" in str(row[0]).upper():
        return True
    (largest,) = conn.execute("SELECT max(id) FROM events").fetchone()
    return largest is None or int(largest) < _SEQUENTIAL_IDS_BELOW


def _session_rows(conn: sqlite3.Connection, sender_id: str) -> list[tuple[int, str]]:
    start_id = _session_start_id(conn, sender_id)
    if start_id is None:
        sql = "SELECT id, data FROM events WHERE sender_id = ? ORDER BY id"
        return conn.execute(sql, (sender_id,)).fetchall()
    sql = "SELECT id, data FROM events WHERE sender_id = ? AND id >= ? ORDER BY id"
    return conn.execute(sql, (sender_id, start_id)).fetchall()


_LAST_ID = "SELECT max(id) FROM events WHERE sender_id = ?"
# Walks the conversation's rows back from its last through ix_events_sender_id_id (a row
# lookup each) to the last session start: no further back than the session a load reads.
_LAST_SESSION_START = (
    f"SELECT id, type_name FROM events WHERE sender_id = ? AND {SESSION_START_WHERE}"
    " ORDER BY id DESC LIMIT 1"
)
_ROW_BEFORE = (
    "SELECT id, type_name, action_name FROM events WHERE sender_id = ? AND id < ?"
    " ORDER BY id DESC LIMIT 1"
)


def _session_start_id(conn: sqlite3.Connection, sender_id: str) -> int | None:
    """Row id where the current session starts (None: no session start stored): the last
    session start, or the `action_session_start` just before a last `session_started`."""
    last: Any = conn.execute(_LAST_SESSION_START, (sender_id,)).fetchone()
    if last is None:
        return None
    last_id, kind = int(last[0]), last[1]
    if kind != "session_started":
        return last_id
    previous: Any = conn.execute(_ROW_BEFORE, (sender_id, last_id)).fetchone()
    if previous is not None and previous[1] == "action" and previous[2] == ACTION_SESSION_START:
        return int(previous[0])
    return last_id


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
