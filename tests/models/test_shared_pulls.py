"""`botserver run --workers N` with a model server: one worker pulls for all, the others load
what it loaded, and a failed pull is one log line for the whole server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.models import ModelHolder
from server.models import model_server as model_server_module
from server.models.model_server import ModelServerConfig, ModelServerPoller
from server.models.shared_pulls import SharedPulls
from server.worker_claims import WORKERS_DIR_ENV
from tests.models.test_model_server_pull import ModelServer

WAIT = 0.3  # wait_time_between_pulls


def serving_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archive_factory: Any
) -> tuple[ModelServer, ModelServerConfig]:
    """A model server serving the model "one", and its endpoint as the workers of one run
    (sharing a workers directory) read it."""
    shared = tmp_path / "workers"
    shared.mkdir()
    monkeypatch.setenv(WORKERS_DIR_ENV, str(shared))
    monkeypatch.setattr(model_server_module, "FOLLOW_SECONDS", 0.05)
    served = ModelServer()
    served.behaviour.body = archive_factory("one").read_bytes()
    config = ModelServerConfig.from_endpoint({"url": served.url, "wait_time_between_pulls": WAIT})
    return served, config


@pytest.fixture
async def workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loader: Any, archive_factory: Any
) -> AsyncIterator[tuple[ModelServer, list[ModelServerPoller]]]:
    """Three workers' pollers sharing one workers directory, each past its start-up pull."""
    served, config = serving_workers(tmp_path, monkeypatch, archive_factory)
    async with httpx.AsyncClient() as client:
        pollers = [ModelServerPoller(ModelHolder(loader), config, client) for _ in range(3)]
        for poller in pollers:
            assert await poller.pull_once() is True
            poller.start()
        try:
            yield served, pollers
        finally:
            for poller in pollers:
                await poller.stop()
            served.stop()


async def pulls_during(served: ModelServer, seconds: float) -> tuple[int, float]:
    """How many pulls reached the model server in `seconds`, and the seconds it really was."""
    before, start = len(served.behaviour.requests), time.monotonic()
    await asyncio.sleep(seconds)
    return len(served.behaviour.requests) - before, time.monotonic() - start


async def all_answer(pollers: list[ModelServerPoller], answer: str) -> bool:
    for _ in range(200):
        models = [p.holder.current for p in pollers]
        if all(m is not None and m.answer() == answer for m in models):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_one_worker_pulls_for_all_and_the_others_load_its_model(
    workers: tuple[ModelServer, list[ModelServerPoller]], archive_factory: Any
) -> None:
    """Before, each worker pulled on its own: three workers, three pulls an interval."""
    served, pollers = workers
    pulls, seconds = await pulls_during(served, 6 * WAIT)
    assert 1 <= pulls <= seconds / WAIT + 1, (pulls, seconds)

    served.behaviour.body = archive_factory("two").read_bytes()
    served.behaviour.etag = '"v2"'
    assert await all_answer(pollers, "two")
    assert {p.holder.info.fingerprint for p in pollers if p.holder.info} == {'"v2"'}
    assert {p.holder.info.model_file for p in pollers if p.holder.info} == {"served-model.tar.gz"}

    # The worker that pulls stops (it died): another takes over, one pull an interval still.
    leader = next(p for p in pollers if p._shared is not None and p._shared._lock is not None)
    await leader.stop()
    others = [p for p in pollers if p is not leader]
    pulls, seconds = await pulls_during(served, 6 * WAIT)
    assert 1 <= pulls <= seconds / WAIT + 1, (pulls, seconds)
    served.behaviour.body = archive_factory("three").read_bytes()
    served.behaviour.etag = '"v3"'
    assert await all_answer(others, "three")


async def test_a_failed_pull_is_one_log_line_and_every_worker_shows_it(
    workers: tuple[ModelServer, list[ModelServerPoller]], caplog: pytest.LogCaptureFixture
) -> None:
    """Before, each worker's own pull failed and logged it: three lines a failure."""
    served, pollers = workers
    with caplog.at_level(logging.WARNING, logger="server.models.model_server"):
        served.behaviour.mode = "500"
        for _ in range(200):
            if all(p.error_status() is not None for p in pollers):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(3 * WAIT)
    failed = [r for r in caplog.records if "Model pull failed" in r.getMessage()]
    assert len(failed) == 1, [r.getMessage() for r in failed]
    shown = [p.error_status() for p in pollers]
    assert all(s is not None and "answered HTTP 500" in s["message"] for s in shown), shown

    served.behaviour.mode = "serve"
    for _ in range(200):
        if all(p.error_status() is None for p in pollers):
            break
        await asyncio.sleep(0.05)
    assert [p.error_status() for p in pollers] == [None, None, None]
    assert await all_answer(pollers, "one")


async def test_the_start_up_pulls_failing_alike_are_one_log_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    loader: Any,
    archive_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each worker pulls once before it serves; before, a model server failing them all
    was one warning line per worker, the same words each time."""
    served, config = serving_workers(tmp_path, monkeypatch, archive_factory)
    served.behaviour.mode = "500"
    try:
        async with httpx.AsyncClient() as client:
            pollers = [ModelServerPoller(ModelHolder(loader), config, client) for _ in range(3)]
            with caplog.at_level(logging.WARNING, logger="server.models.model_server"):
                for poller in pollers:
                    assert await poller.pull_once() is False
            served.behaviour.mode = "404"  # another failure: said again
            with caplog.at_level(logging.WARNING, logger="server.models.model_server"):
                for poller in pollers:
                    assert await poller.pull_once() is False
                # A PUT /model is pulled by the worker asked (the others follow only a PUT
                # that worked): its failure is said, in a start-up failure's words too.
                # Before, it counted as said already, and the log never had it.
                put = ModelServerPoller(ModelHolder(loader), config, client)
                assert await put.pull_once(anew=True) is False
    finally:
        served.stop()
    failed = [r.getMessage() for r in caplog.records if "Model pull failed" in r.getMessage()]
    assert len(failed) == 3, failed
    assert "HTTP 500" in failed[0] and "404" in failed[1] and "404" in failed[2]
    assert all(p.error_status() is not None for p in pollers)


async def test_a_worker_whose_start_up_pull_failed_gets_the_model_the_others_have(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loader: Any, archive_factory: Any
) -> None:
    """Workers pull at start-up together: one may fail (a timeout while N download at once)
    where the others loaded the model. Before, it stayed without a model for as long as the
    model server kept that model: the worker that pulls for all got 304s and published
    nothing, and the worker that failed no longer pulled on its own."""
    served, config = serving_workers(tmp_path, monkeypatch, archive_factory)
    try:
        async with httpx.AsyncClient() as client:
            pollers = [ModelServerPoller(ModelHolder(loader), config, client) for _ in range(3)]
            for number, poller in enumerate(pollers):
                served.behaviour.mode = "500" if number == 2 else "serve"
                await poller.pull_once()
            served.behaviour.mode = "serve"
            assert pollers[2].holder.current is None
            for poller in pollers:
                poller.start()
            try:
                assert await all_answer(pollers, "one")
            finally:
                for poller in pollers:
                    await poller.stop()
    finally:
        served.stop()


def test_an_archive_a_dead_puller_was_copying_is_removed_at_the_next_share(
    tmp_path: Path, archive_factory: Any
) -> None:
    """The worker that pulls for all killed while it copied an archive into the shared
    directory left the partial copy there (as large as the model) until the server stopped,
    one more each time."""
    shared = SharedPulls(tmp_path, "http://models.example/model")
    assert shared.lead()
    left = tmp_path / f"model-pull-{shared.key}-1.tar.gz.4242.partial"
    left.write_bytes(b"half a model")
    other = tmp_path / "model-pull-0123456789abcdef-1.tar.gz.4242.partial"  # another server's
    other.write_bytes(b"half a model")
    archive = archive_factory("one")
    shared.publish(None, (archive, '"v1"', "model.tar.gz"))
    assert not left.exists()
    assert other.exists()
    assert sorted(p.name for p in tmp_path.glob(f"model-pull-{shared.key}-*")) == [
        f"model-pull-{shared.key}-1.tar.gz"
    ]
