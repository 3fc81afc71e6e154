"""Remote storage whose object turns out larger than the size it stated: a download stops at
the limit instead of filling the disk. One local fake speaks enough of S3, GCS and Azure Blob
to state 10 bytes and then send far more (as if the object were replaced just then)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from server.errors import ModelError
from server.models.remote_storage import download_model

LIMIT = 64 * 1024
SENT = 16 * LIMIT


class LyingStorage(BaseHTTPRequestHandler):
    """States a 10-byte object, then sends SENT bytes."""

    protocol_version = "HTTP/1.1"

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
        self._headers(10)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/storage/v1/b/"):  # GCS object metadata
            key = self.path.split("/o/", 1)[1].split("?", 1)[0]
            body = json.dumps(
                {"kind": "storage#object", "name": key, "bucket": "models", "size": "10",
                 "generation": "1", "metageneration": "1"}
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
            self.send_header("Content-Range", f"bytes 0-{SENT - 1}/{SENT}")
        self._headers(SENT)
        try:
            for _ in range(SENT // 4096):
                self.wfile.write(b"x" * 4096)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def lying_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), LyingStorage)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("BUCKET_NAME", "models")
    yield url
    server.shutdown()
    server.server_close()


def s3(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)


def gcs(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("google.cloud.storage")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)


def azure(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("azure.storage.blob")
    monkeypatch.setenv("AZURE_CONTAINER", "models")
    monkeypatch.setenv("AZURE_ACCOUNT_NAME", "devstoreaccount1")
    monkeypatch.setenv("AZURE_ACCOUNT_KEY", "a2V5")
    monkeypatch.setenv("AZURE_ACCOUNT_URL", f"{url}/devstoreaccount1")


@pytest.mark.parametrize(("storage", "setup"), [("aws", s3), ("gcs", gcs), ("azure", azure)])
async def test_an_object_larger_than_it_said_stops_at_the_limit(
    lying_storage: str, monkeypatch: pytest.MonkeyPatch, storage: str, setup: Any
) -> None:
    setup(lying_storage, monkeypatch)

    with pytest.raises(ModelError, match=f"grew past {LIMIT} bytes"):
        await download_model(storage, "prod", max_bytes=LIMIT)
