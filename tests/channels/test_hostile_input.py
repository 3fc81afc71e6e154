"""A real `botserver run` with every channel (REST, callback, socket.io, Rocket.Chat) and the
API behind a token and a JWT secret takes a seeded stream of hostile requests
(`tests/channels/hostile_requests.py`) and stays healthy: no 5xx, each route's errors in
its own shape, no traceback in any answer, and afterwards a normal conversation on every
channel, its memory bounded, and no traceback in its log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from fastapi import FastAPI, Request

from tests.channels.fake_rocketchat import FakeRocketChat
from tests.channels.hostile_requests import (
    RASA_ERROR_KEYS,
    WEBSOCKET_SESSION,
    HttpCase,
    api_cases,
    engineio_poll_paths,
    engineio_post_bodies,
    webhook_cases,
    websocket_frames,
)
from tests.channels.test_socketio_channel import Client
from tests.cli.botserver_process import ServerProcess, start_botserver
from tests.serving import serving

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:The HMAC key is")]

# The seed of the run: a finding is replayed by running with it (the labels say which case).
SEED = 20261207
TOKEN = "hostile-input-token"
JWT_SECRET = "a-jwt-secret-long-enough-for-hs256-keys!"
BOT, PASSWORD, HOOK_TOKEN = "moodbot", "bot-password", "outgoing-hook-token"
# How much the server's resident memory may grow over the run (105-146 MiB measured): it
# reads bodies up to its 10 MB limit, and its hot conversations keep what they stored (the
# cache is bounded in events, not bytes: one message whose metadata has 100,000 keys keeps
# tens of MB). A second run of the same cases adds about half as much again.
RSS_GROWTH_BOUND = 250 * 1024 * 1024
# No line of these: a client's mistakes are warnings at most (engine.io logged the first of
# each kind of refused request as an ERROR).
LOG_FAULTS = re.compile(
    r"Traceback|Exception in ASGI|Task exception was never retrieved|Unhandled|"
    r"unhandled exception|Fatal error| ERROR | CRITICAL "
)


@dataclass
class Findings:
    """What the run found wrong, case by case, and how many cases it ran."""

    cases: int = 0
    problems: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)

    def check(self, case: HttpCase, status: int, headers: httpx.Headers, body: bytes) -> None:
        self.cases += 1
        self.statuses.setdefault(case.label.rsplit(" ", 1)[0], {}).setdefault(status, 0)
        self.statuses[case.label.rsplit(" ", 1)[0]][status] += 1
        where = f"{case.label} ({case.method} {case.path[:80]})"
        if b"Traceback" in body or b'File "' in body:
            self.problems.append(f"{where}: traceback in the answer: {body[:300]!r}")
        if status == 503:
            self.unavailable.append(f"{where}: {body[:200]!r}")
        elif status >= 500:
            self.problems.append(f"{where}: {status} {body[:300]!r}")
        if status >= 400 and case.shape == "rasa" and case.method != "HEAD":
            self._check_rasa_shape(where, status, headers, body)

    def _check_rasa_shape(
        self, where: str, status: int, headers: httpx.Headers, body: bytes
    ) -> None:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if not (isinstance(parsed, dict) and parsed.keys() == RASA_ERROR_KEYS):
            kind = headers.get("content-type")
            self.problems.append(
                f"{where}: {status} not Rasa's error body ({kind}): {body[:200]!r}"
            )
        elif parsed["code"] != status:
            self.problems.append(f"{where}: {status} with code {parsed['code']}")


@contextlib.asynccontextmanager
async def callback_receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """The callback channel's receiver: its URL and the bot messages posted to it."""
    posted: list[dict[str, Any]] = []
    app = FastAPI()

    @app.post("/bot")
    async def bot(request: Request) -> dict[str, str]:
        posted.append(await request.json())
        return {"status": "ok"}

    async with serving(app) as url:
        yield f"{url}/bot", posted


def write_settings(workdir: Path, callback_url: str, rocket_url: str) -> Path:
    credentials = {
        "rest": None,
        "callback": {"url": callback_url},
        "socketio": {
            "user_message_evt": "user_uttered",
            "bot_message_evt": "bot_uttered",
            "session_persistence": True,
            "metadata_key": "customData",
        },
        "rocketchat": {
            "user": BOT,
            "password": PASSWORD,
            "server_url": rocket_url,
            "webhook_token": HOOK_TOKEN,
        },
    }
    path = workdir / "credentials.yml"
    path.write_text(json.dumps(credentials), encoding="utf-8")  # JSON is YAML
    return path


def livechat_template(rocket: FakeRocketChat) -> dict[str, Any]:
    """A livechat webhook body of one visitor message, its token in the body."""
    visitor = {"_id": "V1", "username": "guest-1"}
    stored = {"_id": "M1", "msg": "hi", "rid": "LIVE1", "u": visitor}
    message = rocket.livechat_message(stored, visitor)
    body = rocket.livechat_payload(
        room_id="LIVE1", visitor_id="V1", visitor_name="guest-1", messages=[message]
    )
    return {**body, "token": HOOK_TOKEN}


async def started(server: ServerProcess, within: float = 90) -> None:
    """Polls `/status` until the server answers, without blocking the loop (the fakes the
    server calls run on it)."""
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(int(within / 0.1)):
            if server.process.poll() is not None:
                raise AssertionError(f"botserver exited early:\n{server.text()}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{server.url}/status?token={TOKEN}")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"botserver did not start:\n{server.text()}")


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def send_all(
    client: httpx.AsyncClient, cases: list[HttpCase], findings: Findings, parallel: int = 4
) -> None:
    """Sends the cases, `parallel` at a time, and checks each answer."""
    queue = list(reversed(cases))

    async def worker() -> None:
        while queue:
            case = queue.pop()
            headers = [(k.encode(), v.encode("latin-1")) for k, v in case.headers.items()]
            try:
                answer = await client.request(
                    case.method, case.path, content=case.body, headers=headers
                )
            except httpx.TimeoutException as e:
                # Which wait ran out says whose it was: connecting or sending (the server
                # not reading), the answer (the server's), or a connection of the pool;
                # the case sent again on a connection of its own, whether it replays.
                again = await replayed(client, case)
                findings.problems.append(
                    f"{case.label}: {type(e).__name__} within the client's timeout; {again}"
                )
                continue
            except httpx.TransportError as e:
                # The server may close a connection on a request it cannot read (an
                # answered 413 mid-upload); it must not do so on any request it can.
                findings.cases += 1
                if len(case.body) < 10 * 1024 * 1024:
                    findings.problems.append(f"{case.label}: connection failed: {e!r}")
                continue
            findings.check(case, answer.status_code, answer.headers, answer.content)

    await asyncio.gather(*(worker() for _ in range(parallel)))


async def replayed(client: httpx.AsyncClient, case: HttpCase) -> str:
    """What the case gets when sent again alone, on a new connection."""
    headers = [(k.encode(), v.encode("latin-1")) for k, v in case.headers.items()]
    async with httpx.AsyncClient(base_url=client.base_url, timeout=client.timeout) as alone:
        try:
            answer = await alone.request(case.method, case.path, content=case.body, headers=headers)
        except httpx.TransportError as e:
            return f"sent again alone: {e!r}"
    return f"sent again alone: {answer.status_code} {answer.content[:100]!r}"


# -- engine.io and socket.io -------------------------------------------------------------------


async def polling_session(client: httpx.AsyncClient) -> str:
    """A new engine.io long-polling session, connected to socket.io's default namespace."""
    opened = await client.get("/socket.io/?EIO=4&transport=polling")
    assert opened.status_code == 200, opened.text
    sid = json.loads(opened.text[1:])["sid"]
    connected = await client.post(f"/socket.io/?EIO=4&transport=polling&sid={sid}", content=b"40")
    assert connected.status_code == 200, connected.text
    return str(sid)


async def engineio_polling(client: httpx.AsyncClient, findings: Findings) -> None:
    for i, path in enumerate(engineio_poll_paths()):
        for method in ("GET", "POST", "PUT", "OPTIONS"):
            case = HttpCase(f"engine.io path {i} {method}", method, path, b"40", shape="engineio")
            if "transport=websocket" in path and method == "GET":
                continue  # a websocket handshake without the headers; sent below
            try:
                answer = await client.request(method, path, content=case.body, timeout=5)
            except httpx.ReadTimeout:
                # No path names a session that exists: each is answered at once (a new
                # session, or a refusal), none is a long-poll.
                findings.problems.append(f"{case.label}: no answer within 5 s")
                continue
            findings.check(case, answer.status_code, answer.headers, answer.content)
    for i, body in enumerate(engineio_post_bodies()):
        sid = await polling_session(client)
        path = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
        connected = await client.get(path)  # socket.io's answer to the connect, taken
        assert connected.content.startswith(b"40"), connected.content
        case = HttpCase(f"engine.io packet {i}", "POST", path, body, shape="engineio")
        answer = await client.post(path, content=body)
        findings.check(case, answer.status_code, answer.headers, answer.content)
        # A message with an answer (or refused: session closed) after it: the next poll has
        # what the session said to the packet at once, not after a wait. (A packet that
        # announced binary attachments takes the message as one: the poll waits.)
        probe = await client.post(path, content=PROBE)
        findings.check(case, probe.status_code, probe.headers, probe.content)
        with contextlib.suppress(httpx.ReadTimeout):
            polled = await client.get(path, timeout=3)
            findings.check(case, polled.status_code, polled.headers, polled.content)


# A socket.io message answered at once (`session_confirm`).
PROBE = b'42["session_request", {"session_id": "engine-io-probe"}]'


def ws_url(base: str, sid: str | None = None) -> str:
    query = f"&sid={sid}" if sid else ""
    return base.replace("http://", "ws://") + f"/socket.io/?EIO=4&transport=websocket{query}"


async def engineio_websocket(base: str, rng: random.Random, findings: Findings) -> None:
    """Connected websockets sent hostile frames, each then dropped without a close frame;
    and upgrades out of order."""
    for i, frame in enumerate(websocket_frames(rng)):
        findings.cases += 1
        try:
            async with websockets.connect(ws_url(base), max_size=None) as ws:
                await asyncio.wait_for(ws.recv(), 5)  # engine.io's open packet
                await ws.send("40")
                await asyncio.wait_for(ws.recv(), 5)
                request = {"session_id": WEBSOCKET_SESSION}
                await ws.send("42" + json.dumps(["session_request", request]))
                await asyncio.wait_for(ws.recv(), 5)  # session_confirm
                await ws.send(frame)
                with contextlib.suppress(asyncio.TimeoutError, websockets.ConnectionClosed):
                    said = await asyncio.wait_for(ws.recv(), 0.5)
                    if "Traceback" in str(said):
                        findings.problems.append(f"websocket frame {i}: {said!r:.300}")
                if i % 2:
                    ws.transport.abort()  # half-gone: no close frame
        except websockets.InvalidStatus as e:
            findings.problems.append(f"websocket frame {i}: handshake {e.response.status_code}")
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        for i, steps in enumerate(UPGRADES):
            findings.cases += 1
            sid = await polling_session(client)
            with contextlib.suppress(
                websockets.ConnectionClosed, websockets.InvalidStatus, asyncio.TimeoutError
            ):
                async with websockets.connect(ws_url(base, steps.get("sid", sid))) as ws:
                    for frame in steps["frames"]:
                        await ws.send(frame)
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(ws.recv(), 0.5)
            path = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
            for method in ("GET", "POST"):
                case = HttpCase(f"upgrade {i} then {method}", method, path, b"3", shape="engineio")
                with contextlib.suppress(httpx.ReadTimeout):
                    answer = await client.request(method, path, content=case.body, timeout=3)
                    findings.check(case, answer.status_code, answer.headers, answer.content)


# Websocket upgrades of a polling session, in orders engine.io does not expect.
UPGRADES: list[dict[str, Any]] = [
    {"frames": ["5"]},  # upgrade without the probe
    {"frames": ["2probe", "2probe", "5", "5"]},
    {"frames": ["5", "2probe"]},
    {"frames": ["3probe", "5"]},
    {"frames": ["2probe", "6"]},
    {"frames": ["2probe", "1"]},
    {"frames": ["2probe", "5", '42["user_uttered", {"message": "after"}]']},
    {"sid": "unknown", "frames": ["2probe", "5"]},
]


# -- raw connections ---------------------------------------------------------------------------


RAW_REQUESTS: list[tuple[str, bytes, bool]] = [
    # (label, bytes sent, half-close after them)
    ("partial head", b"POST /webhooks/rest/webhook HTTP/1.1\r\nHost: x\r\n", True),
    (
        "short body",
        b"POST /webhooks/rest/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"message":',
        True,
    ),
    (
        "bad chunk size",
        b"POST /webhooks/rest/webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\n",
        False,
    ),
    (
        "chunked and length",
        b"POST /webhooks/rest/webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\n0\r\n\r\n",
        False,
    ),
    (
        "chunked cut",
        b"POST /webhooks/callback/webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b'\r\n5\r\n{"mes',
        True,
    ),
    ("tls hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, False),
    ("http/0.9", b"GET /\r\n\r\n", False),
    ("nul method", b"GE\x00T / HTTP/1.1\r\nHost: x\r\n\r\n", False),
    ("bad version", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", False),
    ("bytes in header", b"GET /status HTTP/1.1\r\nHost: x\r\nX-A: \xff\xfe\r\n\r\n", False),
    ("bytes in path", b"GET /conversations/\xff/tracker HTTP/1.1\r\nHost: x\r\n\r\n", False),
    (
        "expect and leave",
        b"POST /webhooks/rest/webhook HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: 20\r\n\r\n",
        True,
    ),
    (
        "pipelined",
        b"POST /webhooks/rest/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n",
        True,
    ),
    (
        "websocket version 8",
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: x\r\n\r\n",
        True,
    ),
    (
        "websocket then bytes",
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n\x81\xff" + b"\x00" * 12,
        True,
    ),
    (
        "websocket upgrade on the webhook",
        b"GET /webhooks/rest/webhook HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        True,
    ),
]

STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")


async def raw_exchange(port: int, data: bytes, half_close: bool) -> tuple[bytes, bool]:
    """Sends `data` on a new connection (then half-closes it if asked), and reads what comes
    back until the server closes it; (the bytes, whether it closed within 10 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if half_close:
            writer.transport.write_eof()
        received = b""
        try:
            async with asyncio.timeout(10):
                while chunk := await reader.read(65536):
                    received += chunk
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            pass
        return received, True
    finally:
        writer.transport.abort()


async def raw_connections(port: int, findings: Findings) -> None:
    for label, data, half_close in RAW_REQUESTS:
        findings.cases += 1
        received, closed = await raw_exchange(port, data, half_close)
        for status in STATUS_LINE.findall(received):
            if int(status) >= 500:
                findings.problems.append(f"raw {label}: {status.decode()} {received[:300]!r}")
        if b"Traceback" in received:
            findings.problems.append(f"raw {label}: traceback {received[:300]!r}")
        if half_close and not closed and not received:
            findings.problems.append(f"raw {label}: half-closed connection left open, unanswered")
        if not half_close and not STATUS_LINE.match(received):
            # A whole request (refused or not) is answered, never left waiting.
            findings.problems.append(f"raw {label}: no answer: {received[:100]!r}")
    # Connections opened and dropped mid-request, many at once.
    for _ in range(50):
        findings.cases += 1
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /webhooks/rest/webhook HTTP/1.1\r\nContent-Length: 9999\r\n\r\n{")
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )


# -- after the run: every channel still holds a conversation ---------------------------------


async def conversations_still_work(
    base: str, rocket: FakeRocketChat, posted: list[dict[str, Any]]
) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        rest = await client.post(
            "/webhooks/rest/webhook", json={"sender": "after", "message": "hi"}
        )
        assert rest.status_code == 200 and rest.json(), rest.text
        callback = await client.post(
            "/webhooks/callback/webhook", json={"sender": "after-cb", "message": "hi"}
        )
        assert (callback.status_code, callback.text) == (200, "success")
        assert any(p.get("recipient_id") == "after-cb" for p in posted), posted[-3:]
        payload = rocket.outgoing_payload(
            token=HOOK_TOKEN, user_id="U1", user_name="alice", text="hi", room_id="ROOM1"
        )
        hook = await client.post("/webhooks/rocketchat/webhook", json=payload)
        assert hook.status_code == 200, hook.text
        await _until(lambda: any(p.get("roomId") == "ROOM1" for p in rocket.posted))
        # The loop is not held by anything the run left behind: many requests at once all
        # answered (each bounded only by the client's timeout).
        many = await asyncio.gather(*(client.get(f"/status?token={TOKEN}") for _ in range(20)))
        assert {r.status_code for r in many} == {200}
    sio = Client()
    await sio.sio.connect(base, transports=["websocket"])
    try:
        await sio.sio.emit("session_request", {"session_id": "after-sio"})
        await sio.next()
        await sio.sio.emit("user_uttered", {"message": "hi", "session_id": "after-sio"})
        ((event, data),) = await sio.next()
        assert event == "bot_uttered" and data.get("text"), data
    finally:
        await sio.sio.disconnect()


async def _until(condition: Callable[[], bool], within: float = 10) -> None:
    for _ in range(int(within / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not within the wait")


# -- the run -----------------------------------------------------------------------------------


@pytest.mark.timeout(280)
async def test_hostile_input_on_every_channel_leaves_the_server_healthy(
    moodbot_copy: Callable[[str], Path], tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    findings = Findings()
    model = moodbot_copy("hostile-models")
    rocket = FakeRocketChat(BOT, PASSWORD)
    async with serving(rocket.app) as rocket_url, callback_receiver() as (callback_url, posted):
        rocket.site_url = rocket_url
        credentials = write_settings(tmp_path, callback_url, rocket_url)
        args = ["-m", str(model.parent), "--enable-api", "--credentials", str(credentials)]
        args += ["--auth-token", TOKEN, "--jwt-secret", JWT_SECRET, "--log-file", "out.log"]
        server = start_botserver(args, tmp_path, tmp_path)
        try:
            await started(server)
            await conversations_still_work(server.url, rocket, posted)
            rss_before = resident_bytes(server.process.pid)
            rocket_template = rocket.outgoing_payload(
                token=HOOK_TOKEN, user_id="U2", user_name="bob", text="hi", room_id="ROOM2"
            )
            cases = [
                *webhook_cases("/webhooks/rest/webhook", {"sender": "f", "message": "hi"}, rng),
                *webhook_cases("/webhooks/rest/webhook?stream=true", {"message": "hi"}, rng),
                *webhook_cases("/webhooks/callback/webhook", {"sender": "c", "message": "hi"}, rng),
                *webhook_cases("/webhooks/rocketchat/webhook", rocket_template, rng),
                *webhook_cases("/webhooks/rocketchat/webhook", livechat_template(rocket), rng),
                *api_cases(TOKEN, JWT_SECRET, rng),
            ]
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                runs: list[Awaitable[None]] = [
                    send_all(client, cases, findings),
                    engineio_polling(client, findings),
                    engineio_websocket(server.url, rng, findings),
                    raw_connections(int(server.url.rsplit(":", 1)[1]), findings),
                ]
                await asyncio.gather(*runs)
            await conversations_still_work(server.url, rocket, posted)
            grown = resident_bytes(server.process.pid) - rss_before
        finally:
            server.stop()
    log = (tmp_path / "out.log").read_text(encoding="utf-8", errors="replace") + server.text()
    # (The log file and the process's output hold the same lines, save a crash's.)
    faults = list(dict.fromkeys(line for line in log.splitlines() if LOG_FAULTS.search(line)))
    print(f"{findings.cases} cases; RSS grew {grown / 2**20:.1f} MiB")
    for k, v in findings.statuses.items():
        print(k, v)
    print("503s:", *findings.unavailable[:20], sep="\n  ")
    assert not findings.problems, "\n".join(findings.problems[:60])
    assert not faults, "\n".join(faults[:40]) + "\n\n" + log[-6000:]
    assert grown < RSS_GROWTH_BOUND, f"resident memory grew {grown / 2**20:.0f} MiB"
