"""Hostile requests for every channel and the API, drawn from a seeded generator: malformed
and oddly typed JSON, huge and deep bodies, wrong content types and charsets, invalid UTF-8,
odd methods, bad engine.io packets and broken connections. Each case is plain data (what to
send, and the shape its errors must have), so a failing one can be replayed by its label."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt

# Rasa's error body, on the API and on the webhooks that answer with it.
RASA_ERROR_KEYS = frozenset({"version", "status", "message", "reason", "details", "help", "code"})


@dataclass
class HttpCase:
    """One HTTP request; `shape`: what its error answers must look like ("rasa": Rasa's
    error JSON, "engineio": engine.io's plain text, "any": only no 5xx and no traceback)."""

    label: str
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    shape: str = "rasa"


# Values of every JSON type, and the awkward ones of each.
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**70,
    -(2**70),
    1.5e308,
    "",
    " ",
    "\u0000",
    "a\u0000b",
    "\u202e\u200b",
    "x" * 70_000,
    [],
    [None],
    {},
    {"a": {"b": [1, {"c": None}]}},
    [[[[[[[[[[[]]]]]]]]]]],
]

# JSON texts no strict reader takes, or takes as something unexpected: NaN and Infinity,
# lone surrogates, escapes of NUL, duplicate keys, trailing garbage, numbers out of range.
RAW_JSON_TEXTS: list[bytes] = [
    b"",
    b" ",
    b"{",
    b"}",
    b"[",
    b"null",
    b"true",
    b"0",
    b'"text"',
    b"[]",
    b"[{}]",
    b"{}",
    b'{"message": NaN, "sender": "nan"}',
    b'{"message": "hi", "metadata": {"x": Infinity}}',
    b'{"message": "hi", "metadata": {"x": -Infinity}}',
    b'{"message": "hi", "sender": 1e999}',
    b'{"message": "hi", "sender": -0}',
    b'{"message": "hi", "sender": 123456789012345678901234567890}',
    b'{"message": "\\ud800", "sender": "s1"}',
    b'{"message": "hi", "sender": "\\udfff"}',
    b'{"message": "hi", "metadata": {"\\ud800": 1}}',
    b'{"message": "\\u0000", "sender": "nul"}',
    b'{"message": "hi", "sender": "a\\u0000b"}',
    b'{"message": "hi", "sender": "dup", "sender": {"a": 1}}',
    b'{"message": "hi", "message": ["x"], "sender": "dup2"}',
    b'{"message": "hi"} trailing',
    b'{"message": "hi",}',
    b"{'message': 'hi'}",
    b'{"message": "\xff\xfe", "sender": "badutf8"}',
    b'{"message": "\xed\xa0\x80", "sender": "surrogatebytes"}',
    b'{"message": "\xc0\xaf", "sender": "overlong"}',
    b"\xef\xbb\xbf" + b'{"message": "bom", "sender": "bom"}',
    b'\x00{"message": "hi"}',
    b'{"message": "hi", "sender": "tab\there"}',
    b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\x00" * 10,
    b"PK\x03\x04" + b"\x00" * 26,
]

CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "application/json; charset=nonsense",
    "text/plain",
    "text/plain; charset=\u00ff",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "multipart/form-data",
    "application/xml",
    "*/*",
    "",
    ";;;",
]

ODD_METHODS = ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND", "FOO"]


def deep(depth: int, opener: str = "[", closer: str = "]") -> bytes:
    return (opener * depth + closer * depth).encode()


def mutated_fields(template: dict[str, Any], rng: random.Random) -> Iterator[dict[str, Any]]:
    """The template with each field in turn, and some absent keys, set to each odd value."""
    keys = [*template, "metadata", "input_channel", "unknown_key"]
    for key in keys:
        for value in ODD_VALUES:
            if rng.random() < 0.5:  # half of them: the run stays bounded
                yield {**template, key: value}
    # One level down: the keys of an object, or of a list's first object (a livechat body's
    # `visitor` and `messages`).
    for key, inner in template.items():
        in_list = isinstance(inner, list) and inner and isinstance(inner[0], dict)
        nested = inner[0] if in_list else inner
        if not isinstance(nested, dict):
            continue
        for inner_key in [*nested, "unknown_key"]:
            for value in ODD_VALUES:
                if rng.random() < 0.25:
                    changed = {**nested, inner_key: value}
                    yield {**template, key: [changed, *inner[1:]] if in_list else changed}


def webhook_cases(
    path: str, template: dict[str, Any], rng: random.Random, shape: str = "rasa"
) -> Iterator[HttpCase]:
    """Hostile bodies, content types and methods for a JSON webhook at `path`."""
    route, _, query = path.partition("?")
    name = route.rsplit("/", 2)[-2] + (f" ({query})" if query and "token=" not in query else "")

    def case(label: str, body: bytes, headers: dict[str, str], method: str = "POST") -> HttpCase:
        return HttpCase(f"{name} {label}", method, path, body, headers, shape)

    def fresh(label: str, /, **fields: Any) -> dict[str, Any]:
        """The template with `fields`, and message ids of its own where it has them (a
        Rocket.Chat message id seen before is a retry, ignored)."""
        body = {**template, **fields}
        if "message_id" in template and body["message_id"] == template["message_id"]:
            body["message_id"] = f"{template['message_id']}-{label}"
        messages = body.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[0], dict):
            first = messages[0]
            if first.get("_id") == template["messages"][0]["_id"]:  # a livechat body's
                body["messages"] = [{**first, "_id": f"{first['_id']}-{label}"}, *messages[1:]]
        return body

    for i, body in enumerate(mutated_fields(template, rng)):
        yield case(f"field {i}", _dumps(fresh(f"field {i}", **body)), _json())
    for i, raw in enumerate(RAW_JSON_TEXTS):
        yield case(f"raw {i}", raw, _json())
    for i, kind in enumerate(CONTENT_TYPES):
        yield case(f"type {i}", _dumps(fresh(f"type {i}")), {"content-type": kind})
    utf16 = json.dumps(fresh("utf-16")).encode("utf-16")
    yield case("utf-16", utf16, _json("utf-16"))
    latin = json.dumps(fresh("latin-1", message="caf\u00e9", text="caf\u00e9"), ensure_ascii=False)
    yield case("latin-1", latin.encode("latin-1"), _json())
    for depth in (100, 10_000, 300_000):
        yield case(f"deep list {depth}", deep(depth), _json())
        nested = b'{"message": "hi", "metadata": ' + deep(depth) + b"}"
        yield case(f"deep metadata {depth}", nested, _json())
    objects = b'{"a":' * 5000 + b"1" + b"}" * 5000
    yield case("deep objects", objects, _json())
    for size in (100_000, 2_000_000, 11 * 1024 * 1024):
        big = fresh(f"huge {size}", message="y" * size, text="y" * size)
        yield case(f"huge message {size}", _dumps(big), _json())
    for size in (1_000, 100_000, 1_000_000):
        long_sender = fresh(f"sender {size}", sender="s" * size, user_id="u" * size)
        yield case(f"long sender {size}", _dumps(long_sender), _json())
    many = fresh("wide", metadata={f"k{i}": i for i in range(100_000)})
    yield case("wide metadata", _dumps(many), _json())
    for method in ODD_METHODS:
        yield case(f"method {method}", _dumps(fresh(method)), _json(), method)
    yield case("gzip claimed", _dumps(fresh("gzip")), _json() | _gzip())


def api_cases(token: str, secret: str, rng: random.Random) -> Iterator[HttpCase]:
    """The API's conversation and parse routes with hostile bodies, ids and credentials."""
    auth = f"?token={token}"
    yield from webhook_cases(
        f"/conversations/fuzz-api/messages{auth}", {"text": "hi", "sender": "user"}, rng
    )
    yield from webhook_cases(f"/model/parse{auth}", {"text": "hi"}, rng)
    yield from webhook_cases(
        f"/conversations/fuzz-api/trigger_intent{auth}", {"name": "greet", "entities": {}}, rng
    )
    events = b'[{"event": "slot", "name": "x", "value": NaN}]'
    yield HttpCase("events NaN", "POST", f"/conversations/fuzz-api/tracker/events{auth}", events)
    for i, conversation in enumerate(
        ["%00", "%FF%FE", "%ED%A0%80", "a" * 10_000, "..%2F..", "%2F", "%20", "%0A", "\u00e9"]
    ):
        path = f"/conversations/{conversation}/tracker{auth}"
        yield HttpCase(f"api conversation id {i}", "GET", path)
        yield HttpCase(
            f"api conversation id post {i}",
            "POST",
            f"/conversations/{conversation}/messages{auth}",
            b'{"text": "hi", "sender": "user"}',
            _json(),
        )
    for i, query in enumerate(
        ["?token=", "?token=wrong", "?token=%00", "?token=%FF", f"?token={token}&token=x", "?token"]
    ):
        yield HttpCase(f"api token {i}", "GET", f"/conversations/fuzz-api/tracker{query}")
    for i, header in enumerate(_authorizations(secret, rng)):
        headers = {"authorization": header}
        yield HttpCase(f"api jwt {i}", "GET", "/conversations/fuzz-api/tracker", b"", headers)
        yield HttpCase(
            f"api jwt parse {i}", "POST", "/model/parse", b'{"text": "hi"}', headers | _json()
        )


def _authorizations(secret: str, rng: random.Random) -> list[str]:
    """Authorization headers: not a bearer, not a JWT, unsigned, wrongly signed, oddly typed
    claims, huge."""

    def signed(payload: Any, key: str = secret, algorithm: str = "HS256") -> str:
        return "Bearer " + jwt.encode(payload, key, algorithm=algorithm)

    def forged(header: dict[str, Any], payload: Any) -> str:
        parts = [json.dumps(header).encode(), json.dumps(payload).encode()]
        return "Bearer " + ".".join(base64.urlsafe_b64encode(p).decode().rstrip("=") for p in parts)

    user = {"user": {"username": "fuzz-api", "role": "admin"}}
    return [
        "",
        "Bearer",
        "bearer x",
        "Basic Zm9vOmJhcg==",
        "Bearer a.b.c",
        "Bearer ...",
        "Bearer " + "A" * 60_000,
        "Bearer " + "\u00ff\u00fe",
        forged({"alg": "none", "typ": "JWT"}, user) + ".",
        forged({"alg": "HS256"}, user) + ".c2lnbmF0dXJl",
        forged({"alg": "RS256"}, user) + ".c2lnbmF0dXJl",
        forged({"alg": ["HS256"]}, user) + ".x",
        forged({"alg": "HS256", "crit": ["x"]}, user) + ".x",
        signed(user, "another-secret-long-enough-for-hs256-keys!"),
        signed(user, secret, "HS512"),
        signed({"user": "admin"}),
        signed({"user": None}),
        signed({"user": {"username": {"a": 1}, "role": "admin"}}),
        signed({"user": {"username": "fuzz-api", "role": ["admin"]}}),
        signed({"user": {"username": 5, "role": 7}}),
        signed({"user": {"username": "\u0000", "role": "user"}}),
        signed({"user": {"username": "fuzz-api", "role": "user"}, "exp": 1}),
        signed({"user": {"username": "fuzz-api", "role": "user"}, "nbf": 2**40}),
        signed({"user": {"username": "fuzz-api", "role": "user"}, "exp": "soon"}),
        signed({"user": {"username": "fuzz-api", "role": "user"}, "aud": "x"}),
        signed({"user": {"username": "x" * rng.randint(10_000, 20_000), "role": "user"}}),
        signed({}),
    ]


def engineio_post_bodies() -> list[bytes]:
    """Long-polling POST bodies: engine.io packets a client may not send, socket.io packets
    that are malformed, bad base64 binaries, packet separators, huge frames."""
    return [
        b"",
        b"\x1e",
        b"\x1e\x1e\x1e",
        b"9",
        b"0",
        b"3",
        b"5",
        b"6",
        b"7",
        b"2probe",
        b"b",
        b"b!!!!",
        b"bAAA",
        b"b" + b"A" * 1001,
        b"4",
        b"40/nowhere,",
        b"40{",
        b'40{"token": NaN}',
        b"42",
        b"42[",
        b"42[]",
        b"42[1]",
        b'42[{"a":1}]',
        b'42["user_uttered"]',
        b'42["user_uttered", null]',
        b'42["user_uttered", {"message": 5}]',
        b'42["user_uttered", {"message": "hi", "session_id": {"a": 1}}]',
        b'42["user_uttered", {"message": "\\ud800"}]',
        b'42["user_uttered", {"message": NaN}]',
        b'42["session_request", {"session_id": ["x"]}]',
        b'42["session_request", {"session_id": "' + b"s" * 100_000 + b'"}]',
        b'421["user_uttered", {"message": "ack"}]',
        b"43",
        b"43[]",
        b"44{}",
        b'45-["user_uttered",{"_placeholder":true,"num":0}]',
        b'451-["user_uttered",{"_placeholder":true,"num":5}]',
        b"45999999999-[]",
        b"46",
        b"4\xff\xfe",
        b'42["user_uttered", {"message": "\xed\xa0\x80"}]',
        b"42" + deep(100_000),
        b"40\x1e42[\x1e4\x1e6\x1e" * 100,
        b"4" + b"x" * 1_100_000,
    ]


def engineio_poll_paths() -> list[str]:
    """Handshake and poll query strings engine.io must refuse or answer sanely."""
    return [
        "/socket.io/",
        "/socket.io/?EIO=3&transport=polling",
        "/socket.io/?EIO=5&transport=polling",
        "/socket.io/?EIO=x&transport=polling",
        "/socket.io/?EIO=4&transport=flash",
        "/socket.io/?EIO=4&transport=",
        "/socket.io/?EIO=4&transport=polling&sid=unknown",
        "/socket.io/?EIO=4&transport=polling&sid=",
        "/socket.io/?EIO=4&transport=polling&sid=%00",
        "/socket.io/?EIO=4&transport=polling&sid=%FF",
        "/socket.io/?EIO=4&transport=polling&b64=1&j=0",
        "/socket.io/?EIO=4&transport=polling&t=" + "x" * 50_000,
        "/socket.io/?EIO=4&transport=websocket",
        "/socket.io/x/y/z",
        "/socket.io",
    ]


def websocket_frames(rng: random.Random) -> list[str | bytes]:
    """Frames sent on a connected socket.io websocket."""
    frames: list[str | bytes] = [
        "",
        "9",
        "5",
        "2probe",
        "3probe",
        "6",
        "0",
        "40",
        "40/nowhere,",
        "42[",
        "42[1]",
        '42[{"a":1}]',
        '42["user_uttered", {"message": 5}]',
        '42["user_uttered", {"message": "\\ud800"}]',
        '42["user_uttered", {"message": NaN}]',
        '42["session_request", {"session_id": 7}]',
        '451-["user_uttered",{"_placeholder":true,"num":0}]',
        b"\x00\xff\xfe",
        b"",
        "\x1e".join(["42[]"] * 50),
        "4" + "z" * 1_100_000,
        bytes(rng.getrandbits(8) for _ in range(2048)),
    ]
    # Messages of the socket's session (`SESSION`, requested first) with odd fields.
    message: dict[str, Any] = {"message": "hi", "session_id": WEBSOCKET_SESSION}
    for key in ("message", "session_id", "metadata", "customData"):
        for value in ODD_VALUES:
            if rng.random() < 0.4:
                frames.append("42" + json.dumps(["user_uttered", {**message, key: value}]))
    session = json.dumps(WEBSOCKET_SESSION)
    for odd in ('{"x": NaN}', '{"x": [Infinity]}', '{"\\udc00": "\\ud800"}', "NaN"):
        frames.append(
            f'42["user_uttered", {{"message": "hi", "session_id": {session}, "customData": {odd}}}]'
        )
    frames.append(f'42["user_uttered", {{"message": "hi \\ud800", "session_id": {session}}}]')
    frames.append("42" + json.dumps(["user_uttered", {**message, "metadata": '{"a": [1'}]))
    rng.shuffle(frames)
    return frames


# The session a fuzzed websocket asks for before its frame.
WEBSOCKET_SESSION = "ws-fuzz-session"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _json(charset: str | None = None) -> dict[str, str]:
    kind = "application/json" + (f"; charset={charset}" if charset else "")
    return {"content-type": kind}


def _gzip() -> dict[str, str]:
    return {"content-encoding": "gzip"}
