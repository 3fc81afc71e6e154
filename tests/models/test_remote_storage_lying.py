"""Remote storage whose object turns out larger than the size it stated: a download stops at
the limit instead of filling the disk. One local fake speaks enough of S3, GCS and Azure Blob
to state 10 bytes and then send far more (as if the object were replaced just then). An object
stored gzip-encoded is downloaded as stored, not decompressed into a bomb."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from server.errors import InvalidConfig, ModelError, ModelUnavailable, UnsafeArchive
from server.models.remote_storage import download_model
from tests.fake_http import serve_handler, serve_json
from tests.models.conftest import STORAGES_AT

LIMIT = 64 * 1024
SENT = 16 * LIMIT


class LyingStorage(BaseHTTPRequestHandler):
    """States a 10-byte object, then sends SENT bytes."""

    protocol_version = "HTTP/1.1"
    stated = 10
    sent = SENT

    def _headers(self, length: int) -> None:
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", '"e1"')
        self.send_header("Last-Modified", "Fri, 04 Dec 2026 10:00:00 GMT")
        self.send_header("x-ms-blob-type", "BlockBlob")
        self.send_header("x-goog-generation", "1")
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802  (S3 head_object, Azure get_blob_properties)
        self.send_response(200)
        self._headers(self.stated)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/storage/v1/b/"):  # GCS object metadata
            key = self.path.split("/o/", 1)[1].split("?", 1)[0]
            body = json.dumps(
                {"kind": "storage#object", "name": key, "bucket": "models",
                 "size": str(self.stated), "generation": "1", "metageneration": "1"}
            ).encode()  # fmt: skip
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        ranged = "x-ms-range" in self.headers  # Azure asks for the first chunk
        self.send_response(206 if ranged else 200)
        if ranged:
            self.send_header("Content-Range", f"bytes 0-{self.stated - 1}/{self.stated}")
        self._headers(max(self.stated, self.sent))
        try:
            for start in range(0, self.sent, 4096):
                self.wfile.write(b"x" * min(4096, self.sent - start))
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True  # what it sent is all there is

    def log_message(self, *args: Any) -> None:
        pass


class TruncatingStorage(LyingStorage):
    """States a 1,000-byte object, then sends 10 bytes and closes the connection."""

    stated = 1000
    sent = 10


@pytest.fixture
def lying_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with _serving(LyingStorage, monkeypatch) as url:
        yield url


@pytest.fixture
def truncating_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with _serving(TruncatingStorage, monkeypatch) as url:
        yield url


@contextmanager
def _serving(
    handler: type[BaseHTTPRequestHandler], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    monkeypatch.setenv("BUCKET_NAME", "models")
    with serve_handler(handler) as url:
        yield url


@pytest.mark.parametrize(("storage", "setup"), STORAGES_AT.items())
async def test_an_object_larger_than_it_said_stops_at_the_limit(
    lying_storage: str, monkeypatch: pytest.MonkeyPatch, storage: str, setup: Any
) -> None:
    setup(lying_storage, monkeypatch)

    with pytest.raises(ModelError, match=f"grew past {LIMIT} bytes"):
        await download_model(storage, "prod", max_bytes=LIMIT)


@pytest.mark.parametrize(("storage", "setup"), STORAGES_AT.items())
async def test_an_object_cut_short_is_unavailable_for_now(
    truncating_storage: str, monkeypatch: pytest.MonkeyPatch, storage: str, setup: Any
) -> None:
    # The connection breaks after 10 of the 1,000 bytes stated (a storage restarting, a
    # proxy's timeout). Before: a ModelError with urllib3's words, a 500 from PUT /model,
    # where a storage that cannot be reached is a 400 "could not be loaded".
    setup(truncating_storage, monkeypatch)
    monkeypatch.setenv("REMOTE_STORAGE_TIMEOUT", "2")

    with pytest.raises(ModelUnavailable) as caught:
        await download_model(storage, "prod")

    assert str(caught.value).endswith(
        "broke off the download of 'prod.tar.gz' before its end: "
        "IncompleteRead(10 bytes read, 990 more expected)"
    )


class RedirectingStorage(LyingStorage):
    """Sizes a 10-byte object, then answers its read with a 307 to another host (a proxy,
    an http address redirected to https, a host taken over) whose address is in `elsewhere`."""

    elsewhere = ""

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/storage/v1/b/"):  # GCS object metadata: as LyingStorage's
            super().do_GET()
            return
        self.send_response(307)
        self.send_header("Location", f"{self.elsewhere}/devstoreaccount1/models/x?sig=secret")
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.mark.parametrize(("storage", "setup"), STORAGES_AT.items())
async def test_a_storage_redirecting_the_read_elsewhere_is_not_followed(
    monkeypatch: pytest.MonkeyPatch, storage: str, setup: Any
) -> None:
    # Before: GCS's client followed it and loaded what the other host sent as the model;
    # Azure's followed it (a 500: "Required Content-Range response header is missing"); S3's
    # was a 500 "An error occurred (307) ... Temporary Redirect".
    asked: list[str] = []

    def elsewhere(path: str, body: bytes) -> tuple[int, bytes]:
        asked.append(path)
        return 200, b"elsewhere"

    with serve_json(elsewhere) as other:
        handler = type("Handler", (RedirectingStorage,), {"elsewhere": other})
        with _serving(handler, monkeypatch) as url:
            setup(url, monkeypatch)

            with pytest.raises(InvalidConfig) as caught:
                await download_model(storage, "prod")

    assert asked == []
    message = str(caught.value)
    assert (
        f"answered 'prod.tar.gz' with a redirect (307) to {other}/devstoreaccount1/models/x:"
        in (message)
    )
    assert "secret" not in message
    assert "botserver follows no storage's redirects" in message


class RedirectingEverything(LyingStorage):
    """Answers every request, the one that sizes the object too, with a redirect to another
    host, giving no region (an http address redirected to https, a proxy moved)."""

    status = 301
    asked = 0

    def _redirect(self) -> None:
        type(self).asked += 1
        self.send_response(self.status)
        self.send_header("Location", "https://elsewhere.example/models/prod.tar.gz?sig=secret")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET = _redirect  # noqa: N815


@pytest.mark.parametrize("status", [301, 307])
@pytest.mark.parametrize(("storage", "setup"), STORAGES_AT.items())
async def test_a_storage_redirecting_every_request_is_asked_once(
    monkeypatch: pytest.MonkeyPatch, storage: str, setup: Any, status: int
) -> None:
    # Before, for S3: botocore took the HEAD's redirect for one to another region, and asked
    # the bucket's region with a HEAD of the bucket, redirected too, and so on: hundreds of
    # requests, then a 500 "Cannot download ...: RecursionError: maximum recursion depth
    # exceeded".
    class Handler(RedirectingEverything):
        pass

    Handler.status, handler = status, Handler
    with _serving(handler, monkeypatch) as url:
        setup(url, monkeypatch)

        with pytest.raises(InvalidConfig) as caught:
            await download_model(storage, "prod")

    assert (
        f"answered 'prod.tar.gz' with a redirect ({status}) to "
        "https://elsewhere.example/models/prod.tar.gz: botserver follows no storage's "
        "redirects"
    ) in str(caught.value)
    assert handler.asked == 1


class GzipEncodedStorage(BaseHTTPRequestHandler):
    """One object stored with a gzip content encoding (`gsutil cp -Z`, or a blob's
    `Content-Encoding` set), sent as stored with `Content-Encoding: gzip`, which the GCS and
    Azure clients decompress unless asked for the raw bytes. Speaks S3, GCS and Azure Blob."""

    protocol_version = "HTTP/1.1"
    stored = b""

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _object_headers(self) -> dict[str, str]:
        return {
            "Content-Type": "application/octet-stream",
            "Content-Encoding": "gzip",
            "x-goog-stored-content-encoding": "gzip",
            "ETag": '"e1"',
            "Last-Modified": "Fri, 04 Dec 2026 10:00:00 GMT",
            "x-ms-blob-type": "BlockBlob",
        }

    def do_HEAD(self) -> None:  # noqa: N802  (S3 head_object, Azure get_blob_properties)
        self.send_response(200)
        for name, value in {
            **self._object_headers(),
            "Content-Length": str(len(self.stored)),
        }.items():
            self.send_header(name, value)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/storage/v1/b/"):  # GCS object metadata
            body = json.dumps(
                {"kind": "storage#object", "name": "prod.tar.gz", "bucket": "models",
                 "size": str(len(self.stored)), "generation": "1", "metageneration": "1",
                 "contentEncoding": "gzip"}
            ).encode()  # fmt: skip
            self._send(200, body, {"Content-Type": "application/json"})
            return
        headers = self._object_headers()
        if "x-ms-range" in self.headers:  # Azure asks for the first chunk
            headers["Content-Range"] = f"bytes 0-{len(self.stored) - 1}/{len(self.stored)}"
        self._send(206 if "x-ms-range" in self.headers else 200, self.stored, headers)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("storage", "setup"), STORAGES_AT.items())
@pytest.mark.parametrize("content", ["archive", "zeros"])
async def test_an_object_stored_gzip_encoded_is_downloaded_as_stored(
    monkeypatch: pytest.MonkeyPatch, archive_factory: Any, content: str, storage: str, setup: Any
) -> None:
    """A model archive is compressed already. Before, the client decompressed such an object:
    a `.tar.gz` stored gzip-encoded arrived as a plain tar (refused), and 20 KB of
    gzip-encoded zeros were written to disk as 20 MB (up to the 4 GiB limit)."""
    stored = archive_factory("remote").read_bytes()
    if content == "zeros":
        stored = gzip.compress(b"\0" * 20_000_000)
    handler = type("Handler", (GzipEncodedStorage,), {"stored": stored})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}).start()
    monkeypatch.setenv("BUCKET_NAME", "models")
    setup(f"http://127.0.0.1:{server.server_address[1]}", monkeypatch)
    try:
        path = await download_model(storage, "prod")
    finally:
        server.shutdown()
        server.server_close()
    try:
        assert path.read_bytes() == stored
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)  # the caller's to remove


class OverflowingRangeStorage(LyingStorage):
    """Azure Blob stating a 4 GiB blob, answering the range asked for with a body stating
    4 GiB (`Content-Length`), then sending `sent` bytes as fast as it can; or answering with
    a 503 whose body states as much, when `failing`."""

    stated = 4 * 1024**3
    sent = 48 * 1024 * 1024
    failing = False

    def do_GET(self) -> None:  # noqa: N802
        asked = self.headers.get("x-ms-range", "bytes=0-0")
        if self.failing:
            self.send_response(503)
        else:
            self.send_response(206)
            self.send_header("Content-Range", f"{asked.replace('=', ' ')}/{self.stated}")
        self._headers(self.stated)
        block = b"x" * (256 * 1024)
        try:
            for _ in range(self.sent // len(block)):
                self.wfile.write(block)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


@pytest.mark.parametrize("failing", [False, True], ids=["range", "error"])
async def test_an_azure_answer_larger_than_asked_is_refused_before_it_is_read(
    monkeypatch: pytest.MonkeyPatch, failing: bool
) -> None:
    """azure-storage-blob reads each answer whole into memory before giving any of it, up to
    its end whatever the range asked for (and an error's too), into a list it sizes at 8
    bytes a byte stated. Before, a storage stating 4 GiB had it ask for 32 GiB: a 500
    "Cannot download ...: MemoryError" (stating less, what it sent was read into memory)."""
    import tracemalloc

    handler = type("Handler", (OverflowingRangeStorage,), {"failing": failing})
    with _serving(handler, monkeypatch) as url:
        STORAGES_AT["azure"](url, monkeypatch)
        monkeypatch.setenv("REMOTE_STORAGE_TIMEOUT", "2")
        tracemalloc.start()
        try:
            with pytest.raises(UnsafeArchive) as caught:
                await download_model("azure", "prod")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    said = (
        "asked for 'prod.tar.gz', answered with an error (503) whose body states 4294967296 "
        "bytes, more than "
        if failing
        else "answered bytes 0-4194303 of 'prod.tar.gz' with a body of 4294967296 bytes, more than "
    )
    assert said in str(caught.value)
    assert peak < 8 * 1024 * 1024, f"{peak / 1024**2:.1f} MiB"


class SparseBlobStorage(LyingStorage):
    """Azure Blob stating a blob of `stated` bytes of type `kind` (on the blob's properties
    when `on_head`, else only on the answer to the first range), each range answered as asked,
    and a page blob's list of ranges empty: the SDK writes zeros for what the list leaves out."""

    stated = 64 * 1024 * 1024
    kind = "PageBlob"
    on_head = True

    def _typed_headers(self, length: int, kind: str) -> None:
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", '"e1"')
        self.send_header("Last-Modified", "Fri, 04 Dec 2026 10:00:00 GMT")
        self.send_header("x-ms-blob-type", kind)
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802
        self.send_response(200)
        self._typed_headers(self.stated, self.kind if self.on_head else "BlockBlob")

    def do_GET(self) -> None:  # noqa: N802
        if "comp=pagelist" in self.path:
            body = b'<?xml version="1.0" encoding="utf-8"?><PageList></PageList>'
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self._typed_headers(len(body), self.kind)
            self.wfile.write(body)
            return
        first, last = self.headers.get("x-ms-range", "bytes=0-0").removeprefix("bytes=").split("-")
        start, end = int(first), min(int(last), self.stated - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{self.stated}")
        self._typed_headers(end - start + 1, self.kind)
        self.wfile.write(b"\x1f" * (end - start + 1))


@pytest.mark.parametrize(
    ("kind", "on_head"),
    [("PageBlob", True), ("PageBlob", False), ("AppendBlob", True)],
    ids=["page", "page-on-the-range", "append"],
)
async def test_an_azure_blob_other_than_a_block_blob_is_refused(
    monkeypatch: pytest.MonkeyPatch, kind: str, on_head: bool
) -> None:
    """Before, a storage stating a 64 MiB page blob with no page ranges had the SDK write
    60 MiB of zeros it made up (4 GiB stated: 4 GiB written, at disk speed, nothing sent)."""
    handler = type("Handler", (SparseBlobStorage,), {"kind": kind, "on_head": on_head})
    with _serving(handler, monkeypatch) as url:
        STORAGES_AT["azure"](url, monkeypatch)
        with pytest.raises(UnsafeArchive) as caught:
            await download_model("azure", "prod")
    assert f"as a blob of type '{kind}' (x-ms-blob-type): botserver downloads block blobs only" in (
        str(caught.value)
    )


class OddLengthStorage(LyingStorage):
    """Azure Blob answering the first range with a Content-Length of '²' (a digit to
    str.isdigit, not to int)."""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(206)
        self.send_header("Content-Range", f"bytes 0-{self.stated - 1}/{self.stated}")
        self.send_header("Content-Length", "\xb2")
        self.send_header("ETag", '"e1"')
        self.send_header("x-ms-blob-type", "BlockBlob")
        self.end_headers()
        self.wfile.write(b"x" * self.stated)
        self.close_connection = True


async def test_an_azure_answer_stating_a_length_that_is_no_number_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, a 'Cannot download ...: ValueError: invalid literal for int()'."""
    with _serving(OddLengthStorage, monkeypatch) as url:
        STORAGES_AT["azure"](url, monkeypatch)
        with pytest.raises(UnsafeArchive, match="with a body of \xb2 bytes, more than the bytes"):
            await download_model("azure", "prod")


class ClosingBlobStorage(LyingStorage):
    """Azure Blob answering each range as asked, then closing the connection (an HTTP/1.0
    proxy would), and noting the most descriptors the process had open at a request."""

    stated = 40 * 1024 * 1024
    most_descriptors = 0

    def do_GET(self) -> None:  # noqa: N802
        type(self).most_descriptors = max(self.most_descriptors, len(os.listdir("/proc/self/fd")))
        first, last = self.headers.get("x-ms-range", "bytes=0-0").removeprefix("bytes=").split("-")
        start, end = int(first), min(int(last), self.stated - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{self.stated}")
        self.send_header("Connection", "close")
        self._headers(end - start + 1)
        self.wfile.write(b"x" * (end - start + 1))
        self.close_connection = True


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="no /proc/self/fd to count")
async def test_a_storage_closing_each_connection_leaves_no_descriptor_open_per_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each 4 MiB range on a connection of its own: before, every one stayed open until the
    download ended (10 for 40 MiB, a thousand for 4 GiB, past a default limit of 1,024)."""
    handler: Any = type("Handler", (ClosingBlobStorage,), {})
    with _serving(handler, monkeypatch) as url:
        STORAGES_AT["azure"](url, monkeypatch)
        before = len(os.listdir("/proc/self/fd"))
        path = await download_model("azure", "prod")
    try:
        assert path.stat().st_size == ClosingBlobStorage.stated
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    assert handler.most_descriptors - before < 6, (before, handler.most_descriptors)
