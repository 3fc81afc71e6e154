"""A remote model replaced in its bucket while botserver downloads it: the read pinned to the
version that was sized is refused (412 Precondition Failed); the download starts over once
with the new version, and a second refusal in a row is a clear error naming the object.
GCS here, against a local fake of its JSON API; S3 against moto's server and Azure against
Azurite in their own test files."""

from __future__ import annotations

import json
import shutil
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from server.errors import InvalidConfig, ModelNotFound, ModelUnavailable
from server.models.remote_storage import download_model
from tests.fake_http import serve_handler, serve_json
from tests.models.conftest import STORAGES_AT, gcs_at

REPLACED = "was replaced while it was downloaded, 2 times in a row"


async def downloaded(storage: str) -> bytes:
    path = await download_model(storage, "prod")
    try:
        return path.read_bytes()
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)  # the caller's to remove


class FakeGcsObject:
    """One object, `prod.tar.gz`, in GCS's JSON API: its metadata, and its media read pinned
    to the generation sized (`generation`, `ifGenerationMatch`). The first `replaced` media
    reads find a newer generation there just then: GCS answers a 404 for a generation gone
    (a bucket without versioning), or a 412 for `ifGenerationMatch` (`gone_as`)."""

    def __init__(self, replaced: int, gone_as: int = 404) -> None:
        self.deleted = False
        self.generation = 1
        self.replaced = replaced
        self.gone_as = gone_as
        self.asked: list[str] = []

    def __call__(self, path: str, body: bytes) -> tuple[int, Any]:
        self.asked.append(path.partition("?")[0])
        if path.partition("?")[0] == "/storage/v1/b/models":  # the bucket
            return 200, {"kind": "storage#bucket", "name": "models"}
        if self.deleted:
            return 404, {"error": {"code": 404, "message": "No such object"}}
        if path.startswith("/storage/v1/b/models/o/prod.tar.gz"):
            data = self.data()
            return 200, {
                "kind": "storage#object", "name": "prod.tar.gz", "bucket": "models",
                "size": str(len(data)), "generation": str(self.generation),
                "metageneration": "1",
            }  # fmt: skip
        if path.startswith("/download/storage/v1/b/models/o/prod.tar.gz"):
            if self.replaced:
                self.replaced -= 1
                self.generation += 1
            if f"ifGenerationMatch={self.generation}" not in path:
                if self.gone_as == 404:
                    gone = "No such object: models/prod.tar.gz"
                    return 404, {"error": {"code": 404, "message": gone}}
                failed = "At least one of the pre-conditions you specified did not hold."
                return 412, {"error": {"code": 412, "message": failed}}
            return 200, self.data()
        return 404, {"error": {"code": 404, "message": "Not Found"}}

    def data(self) -> bytes:
        return f"version {self.generation}".encode()


@pytest.mark.parametrize("gone_as", [404, 412])
async def test_gcs_starts_over_once_with_the_generation_that_replaced_the_one_sized(
    monkeypatch: pytest.MonkeyPatch, gone_as: int
) -> None:
    # Before: GCS's 404 for the generation sized, gone, was "No model 'prod.tar.gz' in GCS
    # bucket 'models'" for an object that was there all along; its 412 a 500.
    monkeypatch.setenv("BUCKET_NAME", "models")
    storage = FakeGcsObject(replaced=1, gone_as=gone_as)
    with serve_json(storage) as url:
        gcs_at(url, monkeypatch)

        assert await downloaded("gcs") == b"version 2"


@pytest.mark.parametrize("gone_as", [404, 412])
async def test_gcs_object_replaced_twice_in_a_row_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, gone_as: int
) -> None:
    monkeypatch.setenv("BUCKET_NAME", "models")
    storage = FakeGcsObject(replaced=2, gone_as=gone_as)
    with serve_json(storage) as url:
        gcs_at(url, monkeypatch)

        with pytest.raises(ModelUnavailable) as caught:
            await download_model("gcs", "prod")

    assert str(caught.value).startswith("'prod.tar.gz' in GCS bucket 'models' " + REPLACED)
    media = [path for path in storage.asked if path.startswith("/download/")]
    assert len(media) == 2, storage.asked


class RefusingItsOwnVersion(BaseHTTPRequestHandler):
    """Sizes one object, version "e1" (generation 1), then refuses each read pinned to it
    with a 412, in S3's, GCS's and Azure's words: a storage (or a proxy before it) that does
    not honour its own version tag. Counts the reads."""

    protocol_version = "HTTP/1.1"
    reads = 0

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802  (S3 head_object, Azure get_blob_properties)
        self._send(200, b"x" * 10, {"ETag": '"e1"', "x-ms-blob-type": "BlockBlob"})

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/storage/v1/b/"):  # GCS object metadata
            stated = {"name": "prod.tar.gz", "bucket": "models", "size": "10", "generation": "1"}
            self._send(200, json.dumps(stated).encode(), {"Content-Type": "application/json"})
            return
        type(self).reads += 1
        if self.path.startswith("/download/"):  # GCS media
            refused = {"error": {"code": 412, "message": "Precondition Failed"}}
            self._send(412, json.dumps(refused).encode(), {"Content-Type": "application/json"})
        elif self.path.startswith("/devstoreaccount1/"):  # Azure
            self._send(412, b"", {"x-ms-error-code": "ConditionNotMet"})
        else:  # S3
            self._send(412, b"<Error><Code>PreconditionFailed</Code></Error>", {})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("storage", "setup"), STORAGES_AT.items())
async def test_a_storage_refusing_the_version_it_stated_is_told_apart_from_a_replacement(
    monkeypatch: pytest.MonkeyPatch, storage: str, setup: Any
) -> None:
    # The same version sized twice, refused twice: nothing was replaced, the storage does
    # not honour its version tag. Before: "was replaced while it was downloaded, 2 times in
    # a row ...: try again once the upload that replaces it is done", which never helps.
    class Handler(RefusingItsOwnVersion):
        reads = 0

    monkeypatch.setenv("BUCKET_NAME", "models")
    with serve_handler(Handler) as url:
        setup(url, monkeypatch)
        with pytest.raises(InvalidConfig) as caught:
            await download_model(storage, "prod")

    message = str(caught.value)
    assert "refused, 2 times in a row, to read the version it had just stated" in message
    assert "does not honour its own version tag" in message
    assert "upload" not in message
    assert Handler.reads == 2


async def test_gcs_object_deleted_while_downloaded_is_no_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its generation's 404 is taken for a replacement first; the download that starts over
    # finds no object: gone, not replaced.
    monkeypatch.setenv("BUCKET_NAME", "models")
    storage = FakeGcsObject(replaced=0)

    def deleting(path: str, body: bytes) -> tuple[int, Any]:
        if path.startswith("/download/"):  # deleted just before the read
            storage.deleted = True
        return storage(path, body)

    with serve_json(deleting) as url:
        gcs_at(url, monkeypatch)

        with pytest.raises(ModelNotFound) as caught:
            await download_model("gcs", "prod")

    assert str(caught.value) == "No model 'prod.tar.gz' in GCS bucket 'models'"
