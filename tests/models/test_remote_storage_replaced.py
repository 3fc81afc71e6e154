"""A remote model replaced in its bucket while botserver downloads it: the read pinned to the
version that was sized is refused (412 Precondition Failed); the download starts over once
with the new version, and a second refusal in a row is a clear error naming the object.
GCS here, against a local fake of its JSON API; S3 against moto's server and Azure against
Azurite in their own test files."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from server.errors import ModelUnavailable
from server.models.remote_storage import download_model
from tests.fake_http import serve_json
from tests.models.conftest import gcs_at

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
        self.generation = 1
        self.replaced = replaced
        self.gone_as = gone_as
        self.asked: list[str] = []

    def __call__(self, path: str, body: bytes) -> tuple[int, Any]:
        self.asked.append(path.partition("?")[0])
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
