"""`last_load_error` in /status (the holder's `last_error`) says what is true now: the failure
of the latest request for a model, never one that a newer request has since replaced."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.errors import CorruptArchive, ModelUnavailable
from server.models import ModelHolder, ModelSource
from tests.fake_http import silent_server
from tests.models.conftest import greeting_loader, s3_at


@pytest.fixture
def silent_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """S3 that takes the connection and never answers: a download that fails after ~2 s."""
    monkeypatch.setenv("BUCKET_NAME", "models")
    monkeypatch.setenv("REMOTE_STORAGE_TIMEOUT", "1")
    with silent_server() as url:
        s3_at(url, monkeypatch)
        yield


@pytest.fixture
def source() -> ModelSource:
    return ModelSource(ModelHolder(greeting_loader))


async def started(source: ModelSource, name: str) -> asyncio.Task[Any]:
    """A remote download for `name`, started (its request numbered) before what follows."""
    download = asyncio.create_task(source.load_from_remote_storage("aws", name))
    await asyncio.sleep(0)
    return download


async def test_a_download_failing_after_a_newer_model_loaded_is_not_the_load_error(
    silent_s3: None, source: ModelSource, archive_factory: Any
) -> None:
    # Before: /status showed "old.tar.gz: ... did not answer" beside the newer model that the
    # later PUT had loaded, as if that PUT had failed.
    holder = source.holder
    download = await started(source, "old")

    await source.load_local(archive_factory("new"))
    with pytest.raises(ModelUnavailable):
        await download

    assert holder.current is not None and holder.current.answer() == "new"
    assert holder.last_error is None and holder.last_error_at is None


async def test_an_older_request_failing_last_does_not_hide_the_newer_failure(
    silent_s3: None, source: ModelSource, tmp_path: Path
) -> None:
    holder = source.holder
    download = await started(source, "old")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"<html>")

    with pytest.raises(CorruptArchive):
        await source.load_local(broken)
    with pytest.raises(ModelUnavailable):
        await download

    assert (holder.last_error or "").startswith("broken.tar.gz: ")


async def test_a_failure_then_a_newer_load_clears_the_error(
    silent_s3: None, source: ModelSource, archive_factory: Any
) -> None:
    holder = source.holder
    with pytest.raises(ModelUnavailable):
        await source.load_from_remote_storage("aws", "old")
    assert (holder.last_error or "").startswith("old.tar.gz: ")

    await source.load_local(archive_factory("new"))

    assert holder.last_error is None


async def test_a_delete_after_a_failure_leaves_no_load_error(
    silent_s3: None, source: ModelSource
) -> None:
    holder = source.holder
    with pytest.raises(ModelUnavailable):
        await source.load_from_remote_storage("aws", "old")

    await holder.unload()  # DELETE /model: the newer request, served

    assert holder.last_error is None
