"""PUT and DELETE /model across workers (server/api/model_sync.py), two workers' syncs on one
shared file, each with a model source that records what it loads."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from server.api import model_sync
from server.api.model import apply_model_request
from server.api.model_sync import ModelSync
from server.api.worker_files import next_serial, write_json
from server.errors import ModelNotFound


class Source:
    """Loads by name, taking `delay` seconds; `loaded` is the model now served."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.loaded: str | None = "startup"
        self.poller = None
        self.failures = 0  # loads to fail before one succeeds
        self.attempts = 0

    async def load_local(self, path: Path) -> None:
        self.attempts += 1
        await asyncio.sleep(self.delay)
        if self.failures:
            self.failures -= 1
            raise ModelNotFound(f"{path}: not there yet")
        self.loaded = str(path)


class Holder:
    def __init__(self, source: Source) -> None:
        self.source = source

    async def unload(self) -> None:
        self.source.loaded = None


class Services:
    def __init__(self, delay: float = 0.0) -> None:
        self.source = Source(delay)
        self.holder = Holder(self.source)
        self.models_endpoint = None


def worker(path: Path, delay: float = 0.0) -> tuple[ModelSync, Services]:
    services = Services(delay)
    return ModelSync(path, services), services  # type: ignore[arg-type]


async def put(sync: ModelSync, services: Services, model: str) -> None:
    """What PUT /model does in a worker."""
    request = {"model_file": model}
    await sync.change(lambda: apply_model_request(services, request), request)  # type: ignore[arg-type]


def test_the_other_worker_follows_a_put_and_a_delete(tmp_path: Path) -> None:
    async def run() -> None:
        a, a_services = worker(tmp_path / "model.json")
        b, b_services = worker(tmp_path / "model.json")
        await put(a, a_services, "m1")
        await b.follow_once()
        assert b_services.source.loaded == a_services.source.loaded == "m1"
        await b.follow_once()  # nothing new: nothing loaded again
        b_services.source.loaded = "untouched"
        await b.follow_once()
        assert b_services.source.loaded == "untouched"
        await a.change(a_services.holder.unload, None)
        await b.follow_once()
        assert b_services.source.loaded is None

    asyncio.run(run())


def test_a_new_worker_catches_up_with_the_latest_request(tmp_path: Path) -> None:
    async def run() -> None:
        a, a_services = worker(tmp_path / "model.json")
        await put(a, a_services, "m1")
        await put(a, a_services, "m2")
        late, late_services = worker(tmp_path / "model.json")
        await late.follow_once(own_too=True)
        assert late_services.source.loaded == "m2"
        nothing, nothing_services = worker(tmp_path / "other.json")
        await nothing.follow_once(own_too=True)  # no request yet: the startup model stays
        assert nothing_services.source.loaded == "startup"

    asyncio.run(run())


def test_a_follower_never_applies_an_older_request_over_its_own_newer_one(
    tmp_path: Path,
) -> None:
    """Worker A starts following B's request (a slow load) when its own PUT arrives: A ends
    on its own model, and so does B."""

    async def run() -> None:
        a, a_services = worker(tmp_path / "model.json", delay=0.2)
        b, b_services = worker(tmp_path / "model.json")
        await put(b, b_services, "older")
        following = asyncio.create_task(a.follow_once())
        await asyncio.sleep(0.05)  # A is loading "older"
        a_services.source.delay = 0.0
        await put(a, a_services, "newer")
        await following
        assert a_services.source.loaded == "newer"
        await b.follow_once()
        assert b_services.source.loaded == "newer"

    asyncio.run(run())


async def two_puts(tmp_path: Path) -> tuple[str | None, str | None]:
    """A slow PUT to worker A, then a fast one to worker B; the models both end on."""
    a, a_services = worker(tmp_path / "model.json", delay=0.3)
    b, b_services = worker(tmp_path / "model.json")
    earlier = asyncio.create_task(put(a, a_services, "earlier"))
    await asyncio.sleep(0.05)
    await put(b, b_services, "later")
    await earlier
    await a.follow_once()
    await b.follow_once()
    return a_services.source.loaded, b_services.source.loaded


def test_of_two_puts_to_two_workers_the_later_one_wins_though_it_loads_first(
    tmp_path: Path,
) -> None:
    """Before, the request whose load ended last won: a PUT that came later but loaded faster
    was replaced everywhere by the earlier one."""
    assert asyncio.run(two_puts(tmp_path)) == ("later", "later")


def test_a_wall_clock_stepped_back_does_not_make_the_earlier_put_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NTP stepped the wall clock back between two PUTs to two workers: before, the later
    PUT got the smaller number (`time.time_ns()`), and the earlier one, loading slower,
    replaced it on every worker."""
    now = [1_800_000_000 * 10**9]

    def stepping_back() -> int:  # every reading a second before the last
        now[0] -= 10**9
        return now[0]

    monkeypatch.setattr(time, "time_ns", stepping_back)
    assert asyncio.run(two_puts(tmp_path)) == ("later", "later")


def test_the_request_counter_goes_on_from_the_file_when_its_own_is_unreadable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "model.json"
    assert [next_serial(path), next_serial(path)] == [1, 2]
    write_json(path, {"serial": 7, "origin": "x", "request": None})
    (tmp_path / "model.json.serial").write_text("garbage")
    assert next_serial(path) == 8


def test_an_unreadable_request_file_changes_nothing(tmp_path: Path) -> None:
    async def run() -> None:
        (tmp_path / "model.json").write_text("{not json")
        sync, services = worker(tmp_path / "model.json")
        await sync.follow_once(own_too=True)
        assert services.source.loaded == "startup"

    asyncio.run(run())


def test_a_follower_that_failed_to_load_tries_again_until_it_serves_the_same_model(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Before, a worker that could not load what another worker loaded kept its old model
    until the next PUT: the workers answered with different models. The clock is the test's,
    so a loaded machine cannot make an attempt due or not (it was 0.03 s sleeps)."""
    now = [1000.0]
    clock = SimpleNamespace(monotonic=lambda: now[0], time_ns=time.time_ns)
    monkeypatch.setattr(model_sync, "time", clock)

    async def run() -> None:
        a, a_services = worker(tmp_path / "model.json")
        b, b_services = worker(tmp_path / "model.json")
        b_services.source.failures = 3
        await put(a, a_services, "m1")
        await b.follow_once()
        assert b_services.source.loaded == "startup"  # failed: keeps serving its model
        attempts = []
        # Tries again after RETRY_SECONDS (1 s), then after twice as long each time.
        for seconds in (0.0, 0.9, 0.2, 1.9, 0.2, 3.9, 0.2, 100.0):
            now[0] += seconds
            await b.follow_once()
            attempts.append(b_services.source.attempts)
        assert attempts == [1, 1, 2, 2, 3, 3, 4, 4]  # then done: no more attempts
        assert b_services.source.loaded == "m1"

    asyncio.run(run())
