"""/health/live, /health/ready and /metrics of the assembled server, in process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
from pathlib import Path

import aio_pika
import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench.tcp_proxy import TcpProxy as BenchTcpProxy
from server.api import metrics as metrics_module
from server.api.runner import server_app
from server.api.server import ServerOptions
from server.errors import BotServerError
from server.training.train import train
from tests.brokers.test_rabbitmq_broker import BlockingProxy, with_an_untested_aiormq
from tests.shared_data import MOODBOT
from tests.trackers.persistence_fixtures import RABBITMQ, unique_name


@pytest.fixture(scope="module")
def moodbot_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    return train(MOODBOT / "config.yml", MOODBOT / "domain.yml", [MOODBOT / "data"], out).path


def options(**overrides) -> ServerOptions:
    settings = {
        "model_path": None,
        "enable_api": True,
        "default_tracker_store": {"type": "in_memory"},
        **overrides,
    }
    return ServerOptions(**settings)


@pytest.fixture
async def serve():
    """Yields a function giving an HTTP client on a started app (lifespan run)."""
    stack: list = []

    async def start(opts: ServerOptions, metrics: bool = True) -> httpx.AsyncClient:
        app = server_app(opts, metrics=metrics)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://botserver"
        )
        stack.append((lifespan, client))
        client.app = app  # type: ignore[attr-defined]
        return client

    yield start
    for lifespan, client in reversed(stack):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def test_live_answers_while_ready_waits_for_a_model(serve, moodbot_archive: Path) -> None:
    client = await serve(options())
    assert (await client.get("/health/live")).json() == {"status": "ok"}

    before = await client.get("/health/ready")
    assert before.status_code == 503
    assert before.json()["checks"] == {"model": "not loaded", "tracker_store": "ok"}
    assert before.json()["reasons"] == ["no model is loaded"]

    loaded = await client.put("/model", json={"model_file": str(moodbot_archive)})
    assert loaded.status_code == 204
    after = await client.get("/health/ready")
    assert after.status_code == 200
    assert after.json() == {"status": "ready", "checks": {"model": "ok", "tracker_store": "ok"}}


async def test_ready_is_503_when_the_tracker_store_is_down(serve, moodbot_archive: Path) -> None:
    # Nothing listens on port 1: the store cannot answer.
    down = {"type": "redis", "url": "127.0.0.1", "port": 1}
    client = await serve(options(model_path=moodbot_archive, endpoints={"tracker_store": down}))
    response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["model"] == "ok"
    assert response.json()["checks"]["tracker_store"] in ("unavailable", "timeout")
    assert "tracker store" in response.json()["reasons"][0]


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a real service until `cut` (an outage, as a network
    failure makes it: open connections dropped, new ones refused)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


async def test_ready_is_503_while_the_redis_lock_store_is_down(
    serve, moodbot_archive: Path
) -> None:
    """Before, a pod whose lock store was unreachable stayed ready while every turn failed."""
    try:
        redis = Redis(socket_connect_timeout=1)
        await redis.ping()
        await redis.aclose()
    except (OSError, RedisError):
        pytest.skip("Redis is not reachable")
    proxy = TcpProxy(6379)
    port = await proxy.start()
    lock_store = {
        "type": "redis",
        "url": "127.0.0.1",
        "port": port,
        "key_prefix": unique_name("observe"),
    }
    client = await serve(options(model_path=moodbot_archive, endpoints={"lock_store": lock_store}))
    up = await client.get("/health/ready")
    assert up.status_code == 200
    assert up.json()["checks"] == {"model": "ok", "tracker_store": "ok", "lock_store": "ok"}
    await proxy.cut()
    down = await client.get("/health/ready")
    assert down.status_code == 503
    assert down.json()["checks"]["lock_store"] in ("unavailable", "timeout")
    assert down.json()["reasons"][0].startswith("the lock store ")


async def test_metrics_move_under_a_short_load(serve, moodbot_archive: Path) -> None:
    client = await serve(
        options(
            model_path=moodbot_archive,
            endpoints={"action_endpoint": {"url": "http://127.0.0.1:1/webhook"}},
        )
    )
    start = (await client.get("/metrics")).text
    assert metric(start, "botserver_turns_total") == 0
    assert metric(start, 'botserver_model_loads_total{result="success"}') == 1

    for i in range(20):
        reply = await client.post(
            "/webhooks/rest/webhook", json={"sender": f"user-{i % 4}", "message": "hello"}
        )
        assert reply.status_code == 200
    # A custom action whose server is down: counted as a call and an error.
    processor = client.app.state.processor  # type: ignore[attr-defined]
    with pytest.raises(BotServerError):
        await processor.action_server.run("action_hello", "user-0", {"events": []}, None)

    text = (await client.get("/metrics")).text
    assert text.startswith("# HELP")
    assert metric(text, "botserver_turns_total") == 20
    assert metric(text, "botserver_turn_seconds_count") == 20
    assert metric(text, "botserver_turn_seconds_sum") > 0
    assert metric(text, "botserver_actions_total") == 40  # utter_greet + action_listen
    assert metric(text, "botserver_nlu_seconds_count") == 20
    assert metric(text, "botserver_policy_seconds_count") == 40
    assert metric(text, 'botserver_tracker_store_seconds_count{operation="append"}') == 20
    assert metric(text, 'botserver_tracker_store_seconds_count{operation="load"}') >= 4
    assert metric(text, "botserver_action_server_calls_total") == 1
    assert metric(text, "botserver_action_server_errors_total") == 1


async def test_each_turn_step_is_observed_once(serve, moodbot_archive: Path) -> None:
    """A turn observes its parse, predictions, load and append itself, the APIs through the
    wrappers: each is counted once, whichever way it came."""
    client = await serve(options(model_path=moodbot_archive))
    for text in ("hello", "hello", "I am sad"):  # a parse remembered, one computed
        reply = await client.post(
            "/webhooks/rest/webhook", json={"sender": "observed", "message": text}
        )
        assert reply.status_code == 200
    text = (await client.get("/metrics")).text
    turns_policy = metric(text, "botserver_policy_seconds_count")
    assert metric(text, "botserver_nlu_seconds_count") == 3
    assert turns_policy == metric(text, "botserver_actions_total") == 7  # sad: 3 actions
    assert metric(text, "botserver_policy_seconds_sum") > 0
    appends = 'botserver_tracker_store_seconds_count{operation="append"}'
    loads = 'botserver_tracker_store_seconds_count{operation="load"}'
    assert metric(text, appends) == metric(text, loads) == 3  # one of each a turn

    assert (await client.post("/conversations/observed/predict")).status_code == 200
    assert (await client.post("/model/parse", json={"text": "hello"})).status_code == 200
    text = (await client.get("/metrics")).text
    assert metric(text, "botserver_policy_seconds_count") == turns_policy + 1
    assert metric(text, "botserver_nlu_seconds_count") == 4
    assert metric(text, loads) == 4  # the predict API loads once (before: twice)
    assert metric(text, appends) == 3  # (it stores nothing new)

    # An unknown conversation: the one load, under the conversation's lock, says so.
    assert (await client.post("/conversations/unknown/predict")).status_code == 404
    text = (await client.get("/metrics")).text
    assert metric(text, loads) == 5
    assert metric(text, appends) == 3  # nothing created


async def test_model_load_failures_are_counted(serve, tmp_path: Path) -> None:
    client = await serve(options())
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not an archive")
    response = await client.put("/model", json={"model_file": str(bad)})
    assert response.status_code >= 400
    text = (await client.get("/metrics")).text
    assert metric(text, 'botserver_model_loads_total{result="failure"}') == 1


async def test_metrics_can_be_turned_off(serve) -> None:
    client = await serve(options(), metrics=False)
    assert (await client.get("/metrics")).status_code == 404
    assert (await client.get("/health/live")).status_code == 200


async def test_probes_and_metrics_are_open_when_the_api_needs_a_token(serve) -> None:
    from server.auth import AuthConfig

    client = await serve(options(auth=AuthConfig(token="secret")))
    assert (await client.get("/health/live")).status_code == 200
    assert (await client.get("/health/ready")).status_code == 503
    assert (await client.get("/metrics")).status_code == 200
    assert (await client.get("/status")).status_code == 401


async def test_ready_keeps_the_stores_address_in_the_log(
    serve, moodbot_archive: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The probe is open to anyone: before, its body named the database's host, port and
    name; and with default logging the log said nothing of why the pod was not ready."""
    store = {
        "type": "sql",
        "dialect": "postgresql",
        "url": "127.0.0.1",
        "port": 1,
        "db": "observe_secret_db",
    }
    client = await serve(options(model_path=moodbot_archive, endpoints={"tracker_store": store}))
    caplog.set_level(logging.WARNING, logger="server.api.health")
    for _ in range(2):
        response = await client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["tracker_store"] == "unavailable"
        assert "observe_secret_db" not in response.text and "127.0.0.1" not in response.text
    [logged] = [r.getMessage() for r in caplog.records if r.name == "server.api.health"]
    assert logged.startswith("readiness: the tracker store is unavailable: ")
    assert "observe_secret_db" in logged  # once, with why, for the operator


async def serve_with_rabbitmq(
    serve, archive: Path, names: dict[str, str], port: int, retry_delay: float = 5.0
) -> httpx.AsyncClient:
    """The started server, its event broker RabbitMQ at 127.0.0.1:`port`."""
    broker = {
        "type": "pika",
        "url": RABBITMQ[0],
        "port": port,
        "username": "guest",
        "password": "guest",
        "queues": [names["queue"]],
        "exchange_name": names["exchange"],
        "retry_delay_in_seconds": retry_delay,
    }
    return await serve(options(model_path=archive, endpoints={"event_broker": broker}))


async def test_start_up_says_the_event_broker_is_connected_and_ready_shows_it(
    serve, moodbot_archive: Path, rabbitmq_names: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Before, nothing at start-up said whether RabbitMQ was reachable: the broker connected
    at the first event (its line could come during shutdown)."""
    caplog.set_level(logging.INFO)
    client = await serve_with_rabbitmq(serve, moodbot_archive, rabbitmq_names, RABBITMQ[1])

    lines = [r for r in caplog.records if r.getMessage().startswith("event broker:")]
    assert [(r.levelname, r.getMessage()) for r in lines] == [
        (
            "INFO",
            f"event broker: connected to amqp://{RABBITMQ[0]}:{RABBITMQ[1]}/, "
            f"queues {rabbitmq_names['queue']} (exchange '{rabbitmq_names['exchange']}')",
        )
    ]
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["checks"]["event_broker"] == "ok"


async def test_an_unreachable_event_broker_is_one_warning_and_does_not_make_it_unready(
    serve, moodbot_archive: Path, rabbitmq_names: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Events wait in a queue while RabbitMQ is down (a turn never fails for it): the server
    is ready, `checks` says the broker is unavailable, and the log says so once at start-up,
    without aiormq's own ERROR line beside ours."""
    caplog.set_level(logging.INFO)
    proxy = BenchTcpProxy(RABBITMQ)  # never started: connections are refused
    gc.disable()  # what the collector would find, left as it is
    try:
        client = await serve_with_rabbitmq(serve, moodbot_archive, rabbitmq_names, proxy.port)
        # Before, aio-pika's failed connection was left open for its finalizer, which the
        # collector may run off the loop: "coroutine 'Connection.close' was never awaited".
        left_open = [
            o for o in gc.get_objects() if isinstance(o, aio_pika.Connection) and not o.is_closed
        ]
    finally:
        gc.enable()
    assert left_open == []

    said = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name.startswith(("aiormq", "aio_pika")) or "event broker" in r.getMessage()
    ]
    assert len(said) == 1, said
    level, message = said[0]
    assert level == "WARNING"
    assert message.startswith(f"event broker: cannot reach amqp://127.0.0.1:{proxy.port}/ (")
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["checks"]["event_broker"] == "unavailable"


async def test_the_event_broker_connects_by_itself_once_rabbitmq_is_back(
    serve, moodbot_archive: Path, rabbitmq_names: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Unreachable at start-up, then reachable: the broker connects in the background and
    says so, with no event to deliver (before, it only tried when an event came)."""
    caplog.set_level(logging.INFO)
    proxy = BenchTcpProxy(RABBITMQ)
    client = await serve_with_rabbitmq(serve, moodbot_archive, rabbitmq_names, proxy.port, 0.05)
    assert (await client.get("/health/ready")).json()["checks"]["event_broker"] == "unavailable"
    await proxy.restore()
    try:
        for _ in range(200):
            checks = (await client.get("/health/ready")).json()["checks"]
            if checks["event_broker"] == "ok":
                break
            await asyncio.sleep(0.05)
        assert checks["event_broker"] == "ok"
        connected = [r for r in caplog.records if "event broker: connected to" in r.getMessage()]
        assert len(connected) == 1
    finally:
        await proxy.cut()


@pytest.mark.parametrize("aiormq", ["pinned", "untested (aio-pika's publish)"])
async def test_ready_says_the_event_broker_is_blocked_while_rabbitmq_blocks_publishing(
    aiormq: str,
    serve,
    moodbot_archive: Path,
    rabbitmq_names: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RabbitMQ short of memory or disk says connection.blocked: events are queued, not
    published. The server stays ready (turns are answered; the alarm is RabbitMQ's, so every
    replica would turn unready at once) and `checks` says `blocked`, then `ok` once RabbitMQ
    lifts it, with no event sent meanwhile. Before, `ok` throughout: events were held and the
    probe said nothing."""
    if aiormq != "pinned":
        with_an_untested_aiormq(monkeypatch)
    proxy = BlockingProxy(RABBITMQ)
    await proxy.restore()
    try:
        client = await serve_with_rabbitmq(serve, moodbot_archive, rabbitmq_names, proxy.port)

        async def broker_check(expected: str) -> httpx.Response:
            for _ in range(200):
                response = await client.get("/health/ready")
                if response.json()["checks"]["event_broker"] == expected:
                    break
                await asyncio.sleep(0.05)
            return response

        assert (await broker_check("ok")).json()["checks"]["event_broker"] == "ok"
        proxy.block()
        blocked = await broker_check("blocked")
        assert blocked.status_code == 200
        assert blocked.json()["status"] == "ready"
        assert blocked.json()["checks"]["event_broker"] == "blocked"
        proxy.unblock()
        assert (await broker_check("ok")).json()["checks"]["event_broker"] == "ok"
    finally:
        await proxy.cut()


async def test_a_serving_app_folds_its_observations_without_a_scrape(
    serve, moodbot_archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A histogram's observations wait in a list until folded into its numbers: a server that
    nobody scrapes folds them every FOLD_SECONDS, so the lists do not grow with the turns."""
    monkeypatch.setattr(metrics_module, "FOLD_SECONDS", 0.01)
    client = await serve(options(model_path=moodbot_archive))
    for text in ("hello", "I am sad"):
        reply = await client.post("/webhooks/rest/webhook", json={"sender": "f", "message": text})
        assert reply.status_code == 200
    server_metrics = client.app.state.metrics  # type: ignore[attr-defined]
    histograms = (server_metrics.turn_seconds, server_metrics.policy_seconds)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if not any(histogram.pending for histogram in histograms):
            break
    assert not any(histogram.pending for histogram in histograms)
    assert sum(server_metrics.turn_seconds.counts) == 2
    assert sum(server_metrics.policy_seconds.counts) == 5  # greet: 2 actions, sad: 3


async def test_each_conversation_route_reads_the_store_once(serve, moodbot_archive: Path) -> None:
    """One store read a request on every conversation route (before: /story and /execute
    asked the store whether the conversation exists, then loaded it; ?output_channel=latest
    loaded it outside the conversation's lock, then again under it)."""
    client = await serve(options(model_path=moodbot_archive))
    hello = {"sender": "once", "message": "hello"}
    assert (await client.post("/webhooks/rest/webhook", json=hello)).status_code == 200

    async def reads(method: str, path: str, body: object = None) -> tuple[int, float, float]:
        def counts(text: str) -> tuple[float, float]:
            load = 'botserver_tracker_store_seconds_count{operation="load"}'
            load_all = 'botserver_tracker_store_seconds_count{operation="load_all"}'
            append = 'botserver_tracker_store_seconds_count{operation="append"}'
            return metric(text, load) + metric(text, load_all), metric(text, append)

        loads, appends = counts((await client.get("/metrics")).text)
        status = (await client.request(method, path, json=body)).status_code
        loads_after, appends_after = counts((await client.get("/metrics")).text)
        return status, loads_after - loads, appends_after - appends

    said = {"event": "bot", "text": "Hi again"}
    at = "/conversations/once"
    assert await reads("GET", f"{at}/tracker") == (200, 1, 0)
    assert await reads("GET", f"{at}/tracker?include_events=ALL") == (200, 1, 0)
    assert await reads("GET", f"{at}/story") == (200, 1, 0)
    assert await reads("GET", f"{at}/story?all_sessions=true") == (200, 1, 0)
    assert await reads("POST", f"{at}/execute", {"name": "utter_greet"}) == (200, 1, 1)
    latest = "?output_channel=latest"
    assert await reads("POST", f"{at}/execute{latest}", {"name": "utter_greet"}) == (200, 1, 1)
    assert await reads("POST", f"{at}/trigger_intent{latest}", {"name": "greet"}) == (200, 1, 1)
    assert await reads("POST", f"{at}/trigger_intent", {"name": "greet"}) == (200, 1, 1)
    assert await reads("POST", f"{at}/messages", {"text": "hi", "sender": "user"}) == (200, 1, 1)
    assert await reads("POST", f"{at}/tracker/events", said) == (200, 1, 1)
    assert await reads("POST", f"{at}/predict") == (200, 1, 0)
    assert (await reads("PUT", f"{at}/tracker/events", [said]))[:2] == (200, 0)  # (no read)

    # Unknown conversations: a 404 that creates nothing where Rasa requires the conversation.
    assert await reads("GET", "/conversations/unknown/story") == (404, 1, 0)
    greet = {"name": "utter_greet"}
    assert await reads("POST", "/conversations/unknown/execute", greet) == (404, 1, 0)
    assert await reads("POST", "/conversations/unknown/execute", {}) == (404, 1, 0)
    assert await reads("GET", "/conversations/unknown/story?until=soon") == (404, 1, 0)
    assert await reads("GET", f"{at}/story?until=soon") == (400, 1, 0)
    assert await reads("POST", f"{at}/execute", {"name": "no_such_action"}) == (404, 1, 0)
    assert await reads("GET", "/conversations/unknown/tracker") == (200, 1, 0)
    assert await reads("GET", "/conversations/unknown/story") == (404, 1, 0)


async def test_metrics_show_rabbitmq_blocking_publishing_and_the_events_it_keeps_waiting(
    serve, moodbot_archive: Path, rabbitmq_names: dict[str, str]
) -> None:
    """RabbitMQ out of memory or disk blocks publishing (connection.blocked): /metrics says
    so, with the events waiting meanwhile, and counts them as published once it unblocks."""
    from tests.brokers.test_rabbitmq_broker import BlockingProxy

    proxy = BlockingProxy(RABBITMQ)
    await proxy.restore()
    try:
        client = await serve_with_rabbitmq(serve, moodbot_archive, rabbitmq_names, proxy.port)
        broker = client.app.state.event_broker  # type: ignore[attr-defined]
        said = [{"event": "bot", "text": str(i), "timestamp": i} for i in range(3)]

        async def scraped() -> str:
            return (await client.get("/metrics")).text

        async def post(sender: str) -> None:
            response = await client.post(f"/conversations/{sender}/tracker/events", json=said)
            assert response.status_code == 200

        await post("ana")  # a new conversation: its session's start first
        assert await broker.flush(10)
        text = await scraped()
        published = metric(text, "botserver_event_broker_published_total")
        assert published >= 3
        assert metric(text, "botserver_event_broker_queued_events") == 0
        assert metric(text, "botserver_event_broker_connected") == 1
        assert metric(text, "botserver_event_broker_blocked") == 0
        proxy.block()
        for _ in range(500):
            if metric(await scraped(), "botserver_event_broker_blocked") == 1:
                break
            await asyncio.sleep(0.01)
        await post("ana")
        text = await scraped()
        assert metric(text, "botserver_event_broker_blocked") == 1
        # /health/ready reads the same figure: the two never disagree.
        ready = (await client.get("/health/ready")).json()
        assert ready["checks"]["event_broker"] == "blocked"
        assert metric(text, "botserver_event_broker_queued_events") == 3
        assert metric(text, "botserver_event_broker_published_total") == published
        proxy.unblock()
        assert await broker.flush(10)
        text = await scraped()
        assert metric(text, "botserver_event_broker_blocked") == 0
        assert metric(text, "botserver_event_broker_queued_events") == 0
        assert metric(text, "botserver_event_broker_published_total") == published + 3
        assert metric(text, "botserver_event_broker_failed_attempts_total") == 0
    finally:
        await proxy.cut()
