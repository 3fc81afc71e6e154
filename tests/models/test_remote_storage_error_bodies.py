"""Remote storage (or a proxy before it) answering with an error whose body never ends: every
storage SDK reads an error's body whole, to find its code and message in it, so the download
must stop reading at a bound and fail at once, its memory bounded."""

from __future__ import annotations

import time
import tracemalloc
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from server.errors import ModelUnavailable, UnsafeArchive
from server.models.remote_storage import ATTEMPTS, download_model
from tests.conftest import checked_once
from tests.fake_http import serve_handler
from tests.loop_lag import paced
from tests.models.conftest import STORAGES_AT

PIECE = b"<Error>" + b"x" * 65_536 + b"</Error>"


class EndlessErrorStorage(BaseHTTPRequestHandler):
    """Sizes a 10-byte object (a HEAD: S3's and Azure's first request), then answers any GET
    (GCS's first request, S3's and Azure's read) `status` (503) with a body sent without end:
    in chunks, or stating 10 GiB (`stated`)."""

    protocol_version = "HTTP/1.1"
    stated = False
    status = 503

    def do_HEAD(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "10")
        self.send_header("ETag", '"e1"')
        self.send_header("Last-Modified", "Fri, 04 Dec 2026 10:00:00 GMT")
        self.send_header("x-ms-blob-type", "BlockBlob")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(self.status)
        self.send_header("Content-Type", "application/xml")
        if self.stated:
            self.send_header("Content-Length", str(10 * 1024**3))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = PIECE if self.stated else b"%x\r\n%s\r\n" % (len(PIECE), PIECE)
        try:
            while True:
                self.wfile.write(chunk)
        except OSError:  # the client hung up
            pass
        self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


class StatedErrorStorage(EndlessErrorStorage):
    stated = True


class EndlessMetadataStorage(EndlessErrorStorage):
    """Answers GCS's first request, for the object's metadata (JSON its SDK reads whole),
    200 with a body sent without end."""

    status = 200


async def _refused_pull(
    storage: str, handler: type[EndlessErrorStorage], monkeypatch: pytest.MonkeyPatch
) -> str:
    """The refusal of a pull from `handler`, checked to come at once within bounded memory.
    Before: the SDK read the body until the download's time ran out (ModelUnavailable after
    REMOTE_STORAGE_TIMEOUT), holding hundreds of megabytes meanwhile."""
    monkeypatch.setenv("BUCKET_NAME", "models")
    monkeypatch.setenv("REMOTE_STORAGE_TIMEOUT", "8")
    with serve_handler(handler) as url:
        STORAGES_AT[storage](url, monkeypatch)
        tracemalloc.start()
        started = time.monotonic()
        try:
            with pytest.raises(UnsafeArchive) as caught:
                await download_model(storage, "prod")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    took = time.monotonic() - started
    with checked_once():
        assert peak < 16 * 1024 * 1024
    assert took < paced(3, below=8), took  # 8 s: the download's time, read to its end
    return str(caught.value)


@pytest.mark.timing
@pytest.mark.parametrize("handler", [EndlessErrorStorage, StatedErrorStorage])
@pytest.mark.parametrize("storage", STORAGES_AT)
async def test_an_endless_error_body_fails_the_pull_at_once_within_bounded_memory(
    handler: type[EndlessErrorStorage], monkeypatch: pytest.MonkeyPatch, storage: str
) -> None:
    refusal = await _refused_pull(storage, handler, monkeypatch)
    said = "states 10737418240 bytes, more than" if handler.stated else "goes past 1048576"
    with checked_once():
        assert f"asked for 'prod.tar.gz', answered with an error (503) whose body {said}" in refusal


@pytest.mark.timing
async def test_gcs_metadata_without_end_fails_the_pull_at_once_within_bounded_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before: requests read the object's metadata, a success, whole: 1.5 GiB within 16 s.
    pytest.importorskip("google.cloud.storage")
    refusal = await _refused_pull("gcs", EndlessMetadataStorage, monkeypatch)
    with checked_once():
        assert (
            "GCS bucket 'models', asked for 'prod.tar.gz', answered (200) with a body that goes "
            "past 1048576 bytes, what botserver reads of one: stopped reading it" in refusal
        )


class CutErrorStorage(EndlessErrorStorage):
    """Answers any GET 503 with a body stating 500 bytes, then closes the connection after
    10 of them (a storage or proxy failing mid-answer); counts the GETs."""

    gets: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.gets.append(self.path)
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "500")
        self.end_headers()
        self.wfile.write(b"<Error><Co")
        self.close_connection = True


@pytest.mark.parametrize("storage", STORAGES_AT)
async def test_an_error_body_cut_short_is_a_storage_unavailable_for_now(
    monkeypatch: pytest.MonkeyPatch, storage: str
) -> None:
    # Read by the SDK, such a body was a connection broken, tried again, then "broke off"
    # (S3: a ModelError "Cannot download ...: ProtocolError", a 500 from PUT /model); read
    # within the bound before the SDK had it, Azure's was that 500 too.
    CutErrorStorage.gets = []
    monkeypatch.setenv("BUCKET_NAME", "models")
    with serve_handler(CutErrorStorage) as url:
        STORAGES_AT[storage](url, monkeypatch)
        with pytest.raises(ModelUnavailable) as caught:
            await download_model(storage, "prod")
    assert "broke off the download of 'prod.tar.gz' before its end" in str(caught.value)
    assert len(CutErrorStorage.gets) == ATTEMPTS  # tried again, as any answer broken off
