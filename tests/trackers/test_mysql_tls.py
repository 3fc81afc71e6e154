"""MySQL/MariaDB over TLS with Rasa's `query:` keys (`ssl_ca`, `ssl_cert`, `ssl_key`...), which
Rasa's PyMySQL takes: the store's login goes over TLS, checked against the CA given.

The server here is a stand-in that speaks the protocol up to the login (the shared MariaDB
has TLS off): its greeting offers TLS, it takes the client's TLS request, completes the TLS
handshake with its certificate and reads the login packet sent over it."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from server.errors import InvalidConfig, StoreError
from server.trackers.factory import create_tracker_store
from server.trackers.sql_engine import mysql_ssl_context
from tests.tls_certificates import self_signed
from tests.trackers.persistence_fixtures import mariadb_database

# CLIENT_LONG_PASSWORD, PROTOCOL_41, SSL, TRANSACTIONS, SECURE_CONNECTION, PLUGIN_AUTH
_CAPABILITIES = 0x1 | 0x200 | 0x800 | 0x2000 | 0x8000 | 0x80000


def _greeting() -> bytes:
    body = (
        b"\x0a5.7.99-stand-in\x00"
        + struct.pack("<I", 7)
        + b"abcdefgh\x00"
        + struct.pack("<H", _CAPABILITIES & 0xFFFF)
        + b"\x2d"  # utf8mb4
        + struct.pack("<H", 2)
        + struct.pack("<H", _CAPABILITIES >> 16)
        + b"\x15"
        + b"\x00" * 10
        + b"ijklmnopqrst\x00"
        + b"mysql_native_password\x00"
    )
    return struct.pack("<I", len(body))[:3] + b"\x00" + body


def _exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError("the client closed the connection")
        data += chunk
    return data


def _read_packet(conn: socket.socket) -> bytes:
    return _exactly(conn, int.from_bytes(_exactly(conn, 4)[:3], "little"))


@contextmanager
def tls_mysql_stand_in(cert: Path, key: Path) -> Iterator[tuple[int, dict[str, bytes]]]:
    """A port, and what the stand-in got: `login`, the packet read over TLS."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    got: dict[str, bytes] = {}

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            try:
                conn.sendall(_greeting())
                _read_packet(conn)  # the client's request to go over TLS
                with context.wrap_socket(conn, server_side=True) as secure:
                    got["login"] = _read_packet(secure)
            except (OSError, ssl.SSLError):
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], got
    finally:
        listener.close()
        thread.join(10)


@pytest.mark.parametrize("dialect", ["mysql", "mariadb"])
async def test_the_login_goes_over_tls_checked_against_rasas_ssl_ca(
    dialect: str, tmp_path: Path
) -> None:
    """Before, every use of the store failed with "'dict' object has no attribute
    'wrap_bio'": SQLAlchemy hands the keys to aiomysql as PyMySQL's dict, where aiomysql takes
    an SSL context only."""
    cert, key = self_signed(tmp_path)
    with tls_mysql_stand_in(cert, key) as (port, got):
        config = {
            "type": "sql",
            "dialect": dialect,
            "url": "127.0.0.1",
            "port": port,
            "username": "rasa_tls_user",
            "password": "secret",
            "db": "rasa",
            "query": {"ssl_ca": str(cert)},
        }
        store = create_tracker_store(config)
        try:
            with pytest.raises(StoreError):  # the stand-in goes no further than the login
                await store.load("alice")
        finally:
            await store.close()
    assert b"rasa_tls_user" in got.get("login", b"")


@pytest.mark.parametrize("key", ["ssl_ca", "ssl_cert"])
def test_a_tls_file_that_is_not_there_stops_the_start_naming_it(tmp_path: Path, key: str) -> None:
    missing = tmp_path / "missing.pem"
    config = {
        "type": "sql",
        "dialect": "mysql",
        "db": "rasa",
        "query": {key: str(missing)},
    }
    with pytest.raises(InvalidConfig) as refused:
        create_tracker_store(config)
    assert key in str(refused.value)
    assert str(missing) in str(refused.value)


def test_the_tls_context_accepts_what_pymysql_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyMySQL clears the strict X.509 flag that Python 3.13's default context sets (MySQL's
    own generated certificates fail it); so does the store's context."""
    strict = ssl.VERIFY_X509_STRICT
    made = ssl.create_default_context

    def as_python_3_13(**kwargs: object) -> ssl.SSLContext:
        context = made(**kwargs)  # type: ignore[arg-type]
        context.verify_flags |= strict
        return context

    monkeypatch.setattr(ssl, "create_default_context", as_python_3_13)
    context = mysql_ssl_context({"check_hostname": False})
    assert not context.verify_flags & strict


def _store_at(port: int, query: Mapping[str, object]) -> dict[str, object]:
    return {
        "type": "sql",
        "dialect": "mysql",
        "url": "127.0.0.1",
        "port": port,
        "username": "rasa_tls_user",
        "password": "secret",
        "db": "rasa",
        "query": query,
    }


async def _login_over_tls(cert: Path, key: Path, query: Mapping[str, object]) -> bytes:
    """The login packet the stand-in read over TLS (b"": none came over TLS)."""
    with tls_mysql_stand_in(cert, key) as (port, got):
        store = create_tracker_store(_store_at(port, query))
        try:
            with pytest.raises(StoreError):  # the stand-in goes no further than the login
                await store.load("alice")
        finally:
            await store.close()
    return got.get("login", b"")


async def test_pymysqls_verify_and_key_password_keys_are_taken(tmp_path: Path) -> None:
    """`ssl_verify_cert`, `ssl_verify_identity` and `ssl_key_password` (a client key
    encrypted with it), which PyMySQL takes. Before, every use of the store failed with
    "connect() got an unexpected keyword argument 'ssl_verify_cert'"."""
    cert, key = self_signed(tmp_path)
    (tmp_path / "client").mkdir()
    client_cert, client_key = self_signed(tmp_path / "client", password="s3cret")
    query = {
        "ssl_ca": str(cert),
        "ssl_verify_cert": True,  # YAML's true
        "ssl_verify_identity": "true",
        "ssl_cert": str(client_cert),
        "ssl_key": str(client_key),
        "ssl_key_password": "s3cret",
    }
    assert b"rasa_tls_user" in await _login_over_tls(cert, key, query)


async def test_ssl_verify_cert_false_encrypts_without_verifying(tmp_path: Path) -> None:
    # As PyMySQL: the key alone turns TLS on; the self-signed certificate is not checked.
    cert, key = self_signed(tmp_path)
    query = {"ssl_verify_cert": "false"}
    assert b"rasa_tls_user" in await _login_over_tls(cert, key, query)


async def test_ssl_verify_cert_without_a_ca_checks_against_the_systems(tmp_path: Path) -> None:
    # The stand-in's certificate is its own CA, which the system does not trust: no login.
    cert, key = self_signed(tmp_path)
    assert await _login_over_tls(cert, key, {"ssl_verify_cert": "true"}) == b""


def test_a_wrong_key_password_stops_the_start(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, password="s3cret")
    query = {"ssl_cert": str(cert), "ssl_key": str(key), "ssl_key_password": "wrong"}
    with pytest.raises(InvalidConfig) as refused:
        create_tracker_store(_store_at(3306, query))
    assert "MySQL TLS keys" in str(refused.value)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"ssl_verify_certs": "true"}, "'ssl_verify_certs'"),  # a typo
        ({"ssl_verify_identity": "maybe"}, "ssl_verify_identity"),
        ({"ssl_disabled": "2"}, "ssl_disabled"),
    ],
)
def test_a_query_key_the_driver_cannot_take_stops_the_start_naming_it(
    query: dict[str, object], named: str
) -> None:
    # Before, the store started and every use failed ("unexpected keyword argument").
    with pytest.raises(InvalidConfig) as refused:
        create_tracker_store(_store_at(3306, query))
    assert named in str(refused.value)


async def test_ssl_disabled_connects_in_the_clear() -> None:
    """The shared MariaDB has TLS off: PyMySQL's `ssl_disabled: true` talks to it as is.
    Before, every use failed ("unexpected keyword argument 'ssl_disabled'")."""
    async with mariadb_database() as config:
        store = create_tracker_store({**config, "query": {"ssl_disabled": True}})
        try:
            await store.append(
                "tls", [{"event": "action", "name": "action_listen", "timestamp": 1.0}]
            )
            loaded = await store.load("tls")
            assert [event["event"] for event in loaded or []] == ["action"]
        finally:
            await store.close()


@pytest.mark.parametrize(
    "asked",
    [
        "ssl_ca",
        "ssl_verify_cert: false",  # encrypted, not verified: still TLS
        "ssl_disabled: 'false' beside ssl_ca",  # read as written (PyMySQL: TLS off)
        "ssl_ca in the url",
    ],
)
async def test_a_server_without_tls_is_refused_when_tls_is_asked_for(
    tmp_path: Path, asked: str
) -> None:
    """The shared MariaDB has TLS off. With `ssl_ca` given, the login and the events went to
    it in the clear without a word (aiomysql falls back to plain text; PyMySQL 1.2 refuses:
    "SSL is required but the server doesn't support it"). Now every use fails saying so,
    however TLS is asked for."""
    import aiomysql

    cert, _ = self_signed(tmp_path)
    async with mariadb_database() as config:
        section: dict[str, object] = {**config, "query": {"ssl_ca": str(cert)}}
        if asked == "ssl_verify_cert: false":
            section["query"] = {"ssl_verify_cert": False}
        elif asked == "ssl_disabled: 'false' beside ssl_ca":
            section["query"] = {"ssl_ca": str(cert), "ssl_disabled": "false"}
        elif asked == "ssl_ca in the url":
            address = f"{config['url']}:{config['port']}/{config['db']}"
            section = {"type": "sql", "url": f"mysql://root@{address}?ssl_ca={cert}"}
        store = create_tracker_store(section)
        try:
            with pytest.raises(StoreError, match="TLS is asked for"):
                await store.append("tls", [{"event": "action", "name": "a", "timestamp": 1.0}])
        finally:
            await store.close()
        plain = await aiomysql.connect(
            host=config["url"], port=config["port"], user="root", db=config["db"]
        )
        try:
            async with plain.cursor() as cursor:
                await cursor.execute("SHOW TABLES")
                tables = [row[0] for row in await cursor.fetchall()]
            if "events" in tables:
                async with plain.cursor() as cursor:
                    await cursor.execute("SELECT COUNT(*) FROM events")
                    assert (await cursor.fetchone())[0] == 0
        finally:
            plain.close()
