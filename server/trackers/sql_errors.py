"""What a database error means, on every SQL dialect: the database cannot be reached, it
refuses the values themselves, or it failed on its own. The tracker store and the SQL
broker read driver errors here, and map them to `server.errors` where they meet them."""

from __future__ import annotations

import sqlite3
from enum import Enum

from sqlalchemy.exc import DBAPIError, InterfaceError
from sqlalchemy.exc import TimeoutError as PoolTimeout


class SqlErrorKind(Enum):
    UNAVAILABLE = "unavailable"  # retrying later may succeed: 503
    REFUSED_DATA = "refused data"  # the values themselves: never stored, whenever sent
    FAILED = "failed"  # the server's own problem (schema, privilege): 500, logged


UNAVAILABLE = SqlErrorKind.UNAVAILABLE
REFUSED_DATA = SqlErrorKind.REFUSED_DATA
FAILED = SqlErrorKind.FAILED

# MySQL/MariaDB error numbers (besides the client's own, 2000-2999, all about the
# connection) after which the same statement may succeed later: no connection (too many,
# access denied, unknown database, host blocked, server shutting down, killed), a lock
# wait or deadlock, a read-only server, a full disk or table, a statement timeout.
_MYSQL_UNAVAILABLE = frozenset(
    {1021, 1040, 1041, 1044, 1045, 1049, 1053, 1114, 1129, 1130, 1152, 1158, 1159, 1160}
    | {1161, 1184, 1205, 1213, 1226, 1290, 1317, 1836, 1927, 1969, 3024, 4031}
)
# Got a packet bigger than max_allowed_packet (its SQLSTATE, 08S01, says "connection").
_MYSQL_PACKET_TOO_LARGE = 1153
# PostgreSQL SQLSTATE classes and codes after which the same statement may succeed later:
# connection (08), invalid authorization (28), an unknown database (3D000), a serialization
# failure or deadlock (40), insufficient resources (53: too many connections, disk full),
# operator intervention (57: shutdown, statement timeout), system error (58), a lock not
# available (55P03), a read-only transaction (25006: a standby after a failover).
_POSTGRES_UNAVAILABLE_CLASSES = ("08", "28", "40", "53", "57", "58")
_POSTGRES_UNAVAILABLE_CODES = frozenset({"3D000", "55P03", "25006"})
# SQLSTATE classes of the values themselves: data exception (22), program limit exceeded
# (54: a value larger than the database takes).
_DATA_CLASSES = ("22", "54")
# SQLite primary result codes: a generic error (no such table or column), a corrupt file, a
# changed schema, a constraint, a datatype mismatch, a file that is not a database.
_SQLITE_FAILED = frozenset({1, 11, 17, 19, 20, 26})
_SQLITE_TOOBIG = 18


# A privilege the database user lacks: PostgreSQL's insufficient_privilege (also "must be
# owner of table"); MySQL/MariaDB's "<command> command denied" for a table or a column, and
# "you need (at least one of) the ... privilege".
_POSTGRES_DENIED = "42501"
_MYSQL_DENIED = frozenset({1142, 1143, 1227})
# SQLite's: a file (or its folder) the process may only read.
_SQLITE_READONLY = 8


def privilege_denied(exc: BaseException) -> bool:
    """Whether `exc` is the database refusing its user a privilege (SQLite: a file the
    process may not write): trying again as the same user fails again, until an
    administrator grants it."""
    error = getattr(exc, "orig", None) or exc
    for cause in (error, getattr(error, "__cause__", None)):
        if getattr(cause, "sqlstate", None) == _POSTGRES_DENIED:
            return True
        args = getattr(cause, "args", ())
        if args and args[0] in _MYSQL_DENIED and type(cause).__module__.startswith("pymysql"):
            return True
        code = getattr(cause, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == _SQLITE_READONLY:  # (extended codes too)
            return True
    return False


def sql_error_kind(exc: BaseException) -> SqlErrorKind | None:
    """What `exc` means, or None when it is not a database's error (then it is a bug)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, InterfaceError):
            return UNAVAILABLE
        for error in (exc.orig, getattr(exc.orig, "__cause__", None)):
            kind = _driver_error_kind(error) if error is not None else None
            if kind is not None:
                return kind
        return UNAVAILABLE if isinstance(exc.orig, OSError) else FAILED
    if isinstance(exc, OSError | TimeoutError | PoolTimeout):  # PoolTimeout: all in use
        return UNAVAILABLE
    return _driver_error_kind(exc)


def _driver_error_kind(error: BaseException) -> SqlErrorKind | None:
    if isinstance(error, sqlite3.Error):
        return _sqlite_kind(error)
    if isinstance(error, OSError | TimeoutError):
        return UNAVAILABLE
    state = getattr(error, "sqlstate", None)
    args = getattr(error, "args", ())
    errno = args[0] if args and isinstance(args[0], int) else None
    if errno is not None and type(error).__module__.startswith("pymysql"):
        return _mysql_kind(errno, state)
    if isinstance(state, str) and len(state) == 5:
        return _postgres_kind(state)
    return None


def _mysql_kind(errno: int, state: object) -> SqlErrorKind:
    if 2000 <= errno < 3000 or errno in _MYSQL_UNAVAILABLE:
        return UNAVAILABLE
    if errno == _MYSQL_PACKET_TOO_LARGE:
        return REFUSED_DATA
    if isinstance(state, str) and state.startswith(_DATA_CLASSES):
        return REFUSED_DATA
    return FAILED


def _postgres_kind(state: str) -> SqlErrorKind:
    if state.startswith(_POSTGRES_UNAVAILABLE_CLASSES) or state in _POSTGRES_UNAVAILABLE_CODES:
        return UNAVAILABLE
    if state.startswith(_DATA_CLASSES):
        return REFUSED_DATA
    return FAILED


def _sqlite_kind(error: sqlite3.Error) -> SqlErrorKind:
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:  # raised by our own SQLite code ("the store is closed") or the module
        return UNAVAILABLE if isinstance(error, sqlite3.OperationalError) else FAILED
    primary = code & 0xFF
    if primary == _SQLITE_TOOBIG:
        return REFUSED_DATA
    if primary in _SQLITE_FAILED:
        return FAILED
    return UNAVAILABLE  # busy, locked, read-only, I/O error, full, cannot open...
